"""Programs of the model-level accelerator: checking, assembling to host beats, disassembling, cycles.

``check_program`` refuses what the hardware cannot run (a region past the buffer, a shape the
units do not take, a constant that does not fit its port, a destination overlapping a source of
the same instruction), naming the instruction, the input, the value and the accepted range.
``assemble`` turns instruction objects into the host stream's beats (``isa``'s layouts);
``disassemble`` reads them back (``assemble(disassemble(beats)) == beats``).

Cycle model (``instruction_cycles``; ``tests/rtl/test_vitmodel.py`` checks it against the RTL),
host beats offered every cycle and no backpressure, from an instruction's header transfer to the
cycle in which the next header can transfer:

* every instruction: the header cycle and one decode cycle (``DECODE_CYCLES`` = 2);
* LOAD: + one cycle per tensor beat (the host's beats go straight to the buffer);
* STORE: + ``READ_LATENCY`` (1, the buffer's read) + one cycle per beat;
* LAYERNORM: + ``D / P`` gamma/beta beats + 1 + ``LayerNormUnitConfig.cycles(rows, D)``;
* GELU, ADD: + 1 + ``beats + latency`` (6 and 3);
* MATMUL: + 1 + ``matmul_cycles(...).total`` (activations from the buffer, weights from the host); a raw
  MATMUL + one cycle per output beat (the writer puts each beat's low and high halves into the buffer in
  two cycles, and the matmul waits for the second).
* ATTENTION: + the key order's ``ceil(N / (P / 2))`` beats + ``ATTENTION_FEED_LATENCY`` (2: the key-order
  table and the buffer read in front of the unit's stream) + the ViTCoD unit's own cycles from its
  command to its last output beat (``hw/vitcod/cycles.run_cycles`` of the head alone, with the
  instruction's ``balance``); the writer takes that beat in the cycle it leaves.

The instruction ends with its last output written (the next header waits for it: no overlap
between instructions in this version).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from attnforge.errors import ConfigError, check_int
from attnforge.formats.csr import CSR
from attnforge.int_ops import INT16, INT32
from attnforge.numfmt import INT8, Requantizer
from attnforge.softmax_int import Z_FORMAT

from ..vit.eltwise import check_requantizer_fits
from ..vitcod.balance import BALANCE_MODES
from ..vitcod.cycles import HeadShape, run_cycles
from ..vit.matmul import matmul_cycles
from .config import VitModelConfig
from .isa import (BETA_WIDTH, ELEMENT_WIDTH, GAMMA_WIDTH, HEADER_FIELDS, WEIGHT_FIELDS, Add, Attention, Gelu,
                  LayerNorm, Load, Matmul, Op, Region, Store, pack, pack_indices, pack_lanes, unpack, unpack_indices,
                  unpack_lanes)

__all__ = ["check_program", "assemble", "disassemble", "instruction_cycles", "program_cycles", "InstructionCycles",
           "DECODE_CYCLES", "READ_LATENCY", "ATTENTION_FEED_LATENCY"]

DECODE_CYCLES = 2
READ_LATENCY = 1
ATTENTION_FEED_LATENCY = 2
INSTRUCTIONS = (Load, Store, LayerNorm, Gelu, Add, Matmul, Attention)
#: the ViTCoD head's requantizers: multiplier width of its exponent and output requantizers
HEAD_MULTIPLIER_WIDTH = 16


def _where(k: int, ins) -> str:
    return f"instruction {k} ({ins.op.name})"


def _check_region(cfg: VitModelConfig, what: str, reg: Region, *, row_vectors: bool) -> None:
    if not isinstance(reg, Region):
        raise TypeError(f"{what} must be an isa.Region, not {reg!r}")
    check_int(f"{what} rows", reg.rows, 1, cfg.max_tokens)
    check_int(f"{what} cols", reg.cols, 1, cfg.max_cols)
    if row_vectors and reg.cols % cfg.lanes:
        raise ConfigError(f"{what} cols={reg.cols} must be a multiple of the lanes P={cfg.lanes} "
                          f"(its rows move as vectors of P channels)")
    if reg.end(cfg.lanes) > cfg.buffer_tiles:
        raise ConfigError(f"{what} at tile {reg.base} takes {reg.tiles(cfg.lanes)} tiles, past the buffer's "
                          f"{cfg.buffer_tiles}: the last tile must be below {cfg.buffer_tiles}")


def _check_disjoint(where: str, dst: Region, src: Region, name: str, lanes: int) -> None:
    if dst.base < src.end(lanes) and src.base < dst.end(lanes):
        raise ConfigError(f"{where}: the destination (tiles {dst.base}..{dst.end(lanes) - 1}) overlaps the "
                          f"{name} (tiles {src.base}..{src.end(lanes) - 1}); use disjoint regions")


def _same_shape(where: str, a: Region, b: Region, name: str) -> None:
    if (a.rows, a.cols) != (b.rows, b.cols):
        raise ConfigError(f"{where}: {name} is {b.rows} x {b.cols}, the source {a.rows} x {a.cols}; they must match")


def _check_matmul(cfg: VitModelConfig, where: str, ins: Matmul) -> None:
    if ins.src.rows != ins.dst.rows:
        raise ConfigError(f"{where}: source rows {ins.src.rows} != destination rows {ins.dst.rows}")
    shape = (ins.dst.cols, ins.src.cols)
    if isinstance(ins.weight, CSR):
        if tuple(ins.weight.shape) != shape or ins.weight.values is None:
            raise ConfigError(f"{where}: CSR weight of shape {ins.weight.shape} (values "
                              f"{'none' if ins.weight.values is None else 'given'}); needs values and shape {shape}")
        if ins.weight.nnz:
            INT8.check_array(f"{where} weight", np.asarray(ins.weight.values, np.int64))
    else:
        w = np.asarray(ins.weight)
        if w.shape != shape or w.dtype.kind not in "iu":
            raise ConfigError(f"{where}: dense weight {w.dtype} {w.shape}; needs integers of shape {shape} [out, in]")
        INT8.check_array(f"{where} weight", w.astype(np.int64))
    bias = np.asarray(ins.bias)
    if bias.shape != (ins.dst.cols,):
        raise ConfigError(f"{where}: bias of shape {bias.shape}; needs ({ins.dst.cols},)")
    INT32.check_array(f"{where} bias", bias.astype(np.int64))
    if ins.raw:
        _check_raw(cfg, where, ins)
        return
    if ins.dst_hi is not None:
        raise ConfigError(f"{where}: dst_hi (the high halves) belongs to a raw MATMUL (requant None); this one "
                          f"requantizes")
    if len(ins.requant) != ins.dst.cols:
        raise ConfigError(f"{where}: {len(ins.requant)} requantizers for {ins.dst.cols} output channels")
    out = ins.requant[0].out if isinstance(ins.requant[0], Requantizer) else None
    if out not in (INT8, INT16):
        raise ConfigError(f"{where}: output requantizers must write int8 or int16, not {out}")
    for o, rq in enumerate(ins.requant):
        check_requantizer_fits(f"{where} requantizer of channel {o}", rq, cfg.multiplier_width, out)


def _check_raw(cfg: VitModelConfig, where: str, ins: Matmul) -> None:
    """A raw MATMUL: the high halves' region, and sums that cannot leave int32 (the RTL saturates them;
    the golden model's logits do not)."""
    if not isinstance(ins.dst_hi, Region):
        raise ConfigError(f"{where}: a raw MATMUL (requant None) needs dst_hi, the region of its sums' high "
                          f"halves, not {ins.dst_hi!r}")
    _check_region(cfg, f"{where} dst_hi", ins.dst_hi, row_vectors=False)
    _same_shape(where, ins.dst, ins.dst_hi, "dst_hi")
    _check_disjoint(where, ins.dst_hi, ins.src, "source", cfg.lanes)
    _check_disjoint(where, ins.dst_hi, ins.dst, "low halves' region", cfg.lanes)
    if isinstance(ins.weight, CSR):
        magnitude = np.zeros(ins.dst.cols, np.int64)
        np.add.at(magnitude, np.repeat(np.arange(ins.dst.cols), np.diff(ins.weight.row_ptr)),
                  np.abs(np.asarray(ins.weight.values, np.int64)))
    else:
        magnitude = np.abs(np.asarray(ins.weight, np.int64)).sum(axis=1)
    bound = np.abs(np.asarray(ins.bias, np.int64)) + magnitude * -INT8.min
    if bound.max() > INT32.max:
        o = int(bound.argmax())
        raise ConfigError(f"{where}: output channel {o}'s sums can reach {int(bound[o])} (|bias| + sum |w| x 128), "
                          f"past int32 ({INT32.max}), where the raw output saturates: scale its weights or bias")


def _check_attention(cfg: VitModelConfig, where: str, ins: Attention) -> None:
    att = cfg.attention
    if att is None:
        raise ConfigError(f"{where}: this configuration has no attention unit (att_head_dim=0); build one with "
                          f"att_head_dim = the heads' d")
    for name in ("qkv", "dst"):
        _check_region(cfg, f"{where} {name}", getattr(ins, name), row_vectors=True)
    _check_disjoint(where, ins.dst, ins.qkv, "qkv source", cfg.lanes)
    n = ins.qkv.rows
    check_int(f"{where} heads", ins.heads, 1, 255)
    check_int(f"{where} head", ins.head, 0, ins.heads - 1)
    d = ins.head_dim
    if d < 1 or 3 * ins.heads * d != ins.qkv.cols or ins.dst.cols != ins.heads * d:
        raise ConfigError(f"{where}: qkv has {ins.qkv.cols} columns and the output {ins.dst.cols} for {ins.heads} "
                          f"heads; they must be 3 H d and H d")
    if d != att.head_dim:
        raise ConfigError(f"{where}: head dim d={d}; the attention unit is built for att_head_dim={att.head_dim}")
    if ins.dst.rows != n:
        raise ConfigError(f"{where}: the output has {ins.dst.rows} rows, qkv {n}; they must match")
    order = np.asarray(ins.order)
    if order.shape != (n,) or order.dtype.kind not in "iu" or sorted(order.tolist()) != list(range(n)):
        raise ConfigError(f"{where}: the key order must be a permutation of 0..{n - 1} (polarized position -> "
                          f"token), not {order.dtype} {order.shape}")
    check_int(f"{where} global keys G", ins.n_global, 0, n)
    csr = ins.csr
    if not isinstance(csr, CSR):
        raise ConfigError(f"{where}: the sparse part must be a formats.csr.CSR, not {type(csr).__name__}")
    rp, ci = np.asarray(csr.row_ptr, np.int64), np.asarray(csr.col_idx, np.int64)
    if (tuple(csr.shape) != (n, n) or rp.shape != (n + 1,) or rp[0] != 0
            or np.any(np.diff(rp) < 0) or rp[-1] != ci.size):
        raise ConfigError(f"{where}: the sparse part must be a CSR of shape ({n}, {n}) with row pointers from 0 "
                          f"rising to its {ci.size} columns")
    check_int(f"{where} CSR entries nnz", ci.size, 0, att.max_nnz)
    if ci.size and (ci.min() < ins.n_global or ci.max() >= n):
        raise ConfigError(f"{where}: CSR columns must be polarized positions in [G={ins.n_global}, {n}), "
                          f"not [{ci.min()}, {ci.max()}]")
    if ins.balance not in BALANCE_MODES:
        raise ConfigError(f"{where}: balance {ins.balance!r} is not one of {', '.join(BALANCE_MODES)}")
    for name, rq, out in (("exponent requantizer", ins.exp_rq, Z_FORMAT), ("output requantizer", ins.out_rq, INT8)):
        if not isinstance(rq, Requantizer) or rq.out != out:
            raise ConfigError(f"{where}: the {name} must be a numfmt.Requantizer to {out}, not {rq!r}")
        check_int(f"{where} {name} multiplier", rq.multiplier, 0, (1 << HEAD_MULTIPLIER_WIDTH) - 1)


def check_program(program, config: VitModelConfig) -> None:
    """``ConfigError`` (``TypeError`` for a wrong kind) unless ``config``'s hardware can run ``program``."""
    if not isinstance(config, VitModelConfig):
        raise TypeError(f"check_program needs a VitModelConfig, not {config!r}")
    P = config.lanes
    for k, ins in enumerate(program):
        if not isinstance(ins, INSTRUCTIONS):
            raise TypeError(f"instruction {k} must be one of {', '.join(c.__name__ for c in INSTRUCTIONS)}, "
                            f"not {ins!r}")
        where = _where(k, ins)
        if isinstance(ins, Attention):
            _check_attention(config, where, ins)
        elif isinstance(ins, Load):
            _check_region(config, f"{where} destination", ins.dst, row_vectors=True)
            data = np.asarray(ins.data)
            if data.shape != (ins.dst.rows, ins.dst.cols) or data.dtype.kind not in "iu":
                raise ConfigError(f"{where}: data {data.dtype} {data.shape}; needs integers of shape "
                                  f"({ins.dst.rows}, {ins.dst.cols})")
            INT16.check_array(f"{where} data", data.astype(np.int64))
        elif isinstance(ins, Store):
            _check_region(config, f"{where} source", ins.src, row_vectors=True)
        elif isinstance(ins, Add):
            for name in ("a", "b", "dst"):
                _check_region(config, f"{where} {name}", getattr(ins, name), row_vectors=True)
            _same_shape(where, ins.a, ins.b, "b"), _same_shape(where, ins.a, ins.dst, "the destination")
            _check_disjoint(where, ins.dst, ins.a, "residual a", P), _check_disjoint(where, ins.dst, ins.b, "branch b", P)
            check_requantizer_fits(f"{where} rq_a", ins.rq_a, config.multiplier_width, config.add.wide_format)
            check_requantizer_fits(f"{where} rq_b", ins.rq_b, config.multiplier_width, config.add.wide_format)
        else:
            row_vectors = not isinstance(ins, Matmul)
            _check_region(config, f"{where} source", ins.src, row_vectors=row_vectors)
            _check_region(config, f"{where} destination", ins.dst, row_vectors=row_vectors)
            _check_disjoint(where, ins.dst, ins.src, "source", P)
            if isinstance(ins, LayerNorm):
                _same_shape(where, ins.src, ins.dst, "the destination")
                check_int(f"{where} channels D", ins.src.cols, P, config.ln_channels)
                config.layernorm.check_constants(ins.gamma, ins.beta, ins.rq, ins.eps)
            elif isinstance(ins, Gelu):
                _same_shape(where, ins.src, ins.dst, "the destination")
                config.gelu.check_constants(ins.t, ins.c, ins.rq)
            else:
                _check_matmul(config, where, ins)


def _weight_beats(ins: Matmul) -> list[int]:
    beats = []
    for o, entries in enumerate(ins.channels()):
        rq = None if ins.raw else ins.requant[o]          # raw: the requantizer fields are ignored (0)
        for n, (value, index) in enumerate(entries):
            last = n == len(entries) - 1
            beats.append(pack(WEIGHT_FIELDS, dict(value=value, index=index, last=int(last),
                                                  bias=int(ins.bias[o]) if last else 0,
                                                  multiplier=rq.multiplier if last and rq else 0,
                                                  shift=rq.shift if last and rq else 0)))
    return beats


def assemble(program, config: VitModelConfig) -> list[int]:
    """The host stream's beats (unsigned ints of ``config.beat_width`` bits) of a checked ``program``."""
    check_program(program, config)
    P = config.lanes
    beats = []
    for ins in program:
        beats.append(pack(HEADER_FIELDS, ins.header()))
        if isinstance(ins, Load):
            data = np.asarray(ins.data, np.int64)
            for r in range(ins.dst.rows):
                for g in range(ins.dst.cols // P):
                    beats.append(pack_lanes(data[r, g * P:(g + 1) * P], ELEMENT_WIDTH))
        elif isinstance(ins, LayerNorm):
            for g in range(ins.src.cols // P):
                gamma = pack_lanes(np.asarray(ins.gamma)[g * P:(g + 1) * P], GAMMA_WIDTH)
                beta = pack_lanes(np.asarray(ins.beta)[g * P:(g + 1) * P], BETA_WIDTH)
                beats.append(gamma | beta << (P * GAMMA_WIDTH))
        elif isinstance(ins, Matmul):
            beats.extend(_weight_beats(ins))
        elif isinstance(ins, Attention):
            per = P // 2
            beats += pack_indices(ins.order, per, "key order entry")
            beats += pack_indices(ins.half_row_pointers(config.attention), per, "row pointer")
            beats += pack_indices(ins.csr.col_idx, per, "column index")
    return beats


def _take(beats, pos: int, n: int, what: str):
    if pos + n > len(beats):
        raise ConfigError(f"the stream ends inside {what}: {n} payload beats needed, {len(beats) - pos} left")
    return beats[pos:pos + n]


def _disassemble_matmul(h: dict, beats, pos: int, config: VitModelConfig):
    rows, n_in, n_out = h["rows"], h["cols"], h["out_cols"]
    out_fmt = INT8 if h["out8"] else INT16
    values, cols, row_ptr, bias, rqs = [], [], [0], [], []
    while len(rqs) < n_out:
        w = unpack(WEIGHT_FIELDS, _take(beats, pos, 1, "a MATMUL's weights")[0])
        pos += 1
        values.append(w["value"]), cols.append(w["index"])
        if w["last"]:
            if len(values) - row_ptr[-1] == 1 and values[-1] == 0 and not h["dense"]:
                values.pop(), cols.pop()            # the one zero beat of a channel that keeps nothing
            row_ptr.append(len(values))
            bias.append(w["bias"])
            rqs.append(Requantizer(w["multiplier"], w["shift"], out_fmt, config.multiplier_width))
    if h["dense"]:
        weight = np.asarray(values, np.int8).reshape(n_out, n_in)
    else:
        weight = CSR(np.asarray(row_ptr, np.int32), np.asarray(cols, np.int32), (n_out, n_in),
                     np.asarray(values, np.int8))
    if h["raw"]:
        ins = Matmul(Region(h["a"], rows, n_in), Region(h["d"], rows, n_out), weight, np.asarray(bias, np.int64),
                     None, Region(h["b"], rows, n_out))
    else:
        ins = Matmul(Region(h["a"], rows, n_in), Region(h["d"], rows, n_out), weight, np.asarray(bias, np.int64),
                     tuple(rqs))
    return ins, pos


def disassemble(beats, config: VitModelConfig) -> list:
    """The instructions of a host stream (the inverse of ``assemble``; a CSR channel that keeps no weight
    comes back empty, as it went in)."""
    P, mw = config.lanes, config.multiplier_width
    program, pos = [], 0
    while pos < len(beats):
        h = unpack(HEADER_FIELDS, beats[pos])
        pos += 1
        if h["opcode"] not in {int(op) for op in Op}:
            raise ConfigError(f"beat {pos - 1}: opcode {h['opcode']} is not an instruction of this hardware")
        op = Op(h["opcode"])
        rows, cols = h["rows"], h["cols"]
        rq0 = Requantizer(h["m0"], h["s0"], INT8, mw)
        if op == Op.LOAD:
            data = [unpack_lanes(b, ELEMENT_WIDTH, P) for b in _take(beats, pos, rows * cols // P, "a LOAD")]
            pos += rows * cols // P
            program.append(Load(Region(h["d"], rows, cols), np.asarray(data, np.int64).reshape(rows, cols)))
        elif op == Op.STORE:
            program.append(Store(Region(h["a"], rows, cols)))
        elif op == Op.LAYERNORM:
            par = _take(beats, pos, cols // P, "a LAYERNORM's gamma/beta")
            pos += cols // P
            gamma = [v for b in par for v in unpack_lanes(b, GAMMA_WIDTH, P)]
            beta = [v for b in par for v in unpack_lanes(b >> (P * GAMMA_WIDTH), BETA_WIDTH, P)]
            program.append(LayerNorm(Region(h["a"], rows, cols), Region(h["d"], rows, cols), np.asarray(gamma),
                                     np.asarray(beta), rq0, h["k0"]))
        elif op == Op.GELU:
            program.append(Gelu(Region(h["a"], rows, cols), Region(h["d"], rows, cols), h["k1"], h["k0"], rq0))
        elif op == Op.ADD:
            wide = config.add.wide_format
            program.append(Add(Region(h["a"], rows, cols), Region(h["b"], rows, cols), Region(h["d"], rows, cols),
                               Requantizer(h["m0"], h["s0"], wide, mw), Requantizer(h["m1"], h["s1"], wide, mw)))
        elif op == Op.ATTENTION:
            n, nnz = rows, h["nnz"]
            parts = []
            for count, what in ((n, "an ATTENTION's key order"), (2 * n + 1, "an ATTENTION's row pointers"),
                                (nnz, "an ATTENTION's column indices")):
                k = -(-count // (P // 2))
                parts.append(np.asarray(unpack_indices(_take(beats, pos, k, what), count, P // 2), np.int64))
                pos += k
            order, hp, cols_ = parts
            csr = CSR(hp[0::2].astype(np.int32), cols_.astype(np.int32), (n, n))
            heads, d = h["heads"], h["cols"]
            ins = Attention(Region(h["a"], n, 3 * heads * d), Region(h["d"], n, heads * d), h["head"], heads,
                            order, h["g"], csr, Requantizer(h["m0"], h["s0"], Z_FORMAT, HEAD_MULTIPLIER_WIDTH),
                            Requantizer(h["m1"], h["s1"], INT8, HEAD_MULTIPLIER_WIDTH))
            if config.attention is not None:    # the split the pointers carry: one of the host's modes
                modes = [b for b in BALANCE_MODES if np.array_equal(
                    dataclasses.replace(ins, balance=b).half_row_pointers(config.attention), hp)]
                if not modes:
                    raise ConfigError(f"beat {pos}: an ATTENTION's row pointers split the rows in none of the "
                                      f"host's ways ({', '.join(BALANCE_MODES)})")
                ins = dataclasses.replace(ins, balance=modes[0])
            program.append(ins)
        else:
            ins, pos = _disassemble_matmul(h, beats, pos, config)
            program.append(ins)
    return program


@dataclass(frozen=True)
class InstructionCycles:
    """One instruction's cycles: ``total`` from its header transfer to the next header's first possible
    transfer; ``unit`` the unit's own cycle model (first input to last output); ``ideal`` its MACs / P
    (matmuls) or beats (the rest)."""

    op: str
    total: int
    unit: int
    ideal: float


def instruction_cycles(ins, config: VitModelConfig) -> InstructionCycles:
    P = config.lanes
    if isinstance(ins, (Load, Store)):
        reg = ins.dst if isinstance(ins, Load) else ins.src
        beats = reg.rows * reg.cols // P
        extra = 0 if isinstance(ins, Load) else READ_LATENCY
        return InstructionCycles(ins.op.name, DECODE_CYCLES + extra + beats, beats, beats)
    if isinstance(ins, LayerNorm):
        unit = config.layernorm.cycles(ins.src.rows, ins.src.cols)
        params = ins.src.cols // P
        return InstructionCycles("LAYERNORM", DECODE_CYCLES + params + READ_LATENCY + unit, unit,
                                 ins.src.rows * ins.src.cols / P)
    if isinstance(ins, (Gelu, Add)):
        reg = ins.src if isinstance(ins, Gelu) else ins.a
        beats = reg.rows * reg.cols // P
        unit = (config.gelu if isinstance(ins, Gelu) else config.add).cycles(beats)
        return InstructionCycles(ins.op.name, DECODE_CYCLES + READ_LATENCY + unit, unit, beats)
    if isinstance(ins, Matmul):
        mc = matmul_cycles(config.matmul, ins.nnz_per_column(), ins.src.rows, ins.src.cols)
        halves = ins.dst.cols * -(-ins.src.rows // P) if ins.raw else 0     # the high halves' extra write cycles
        return InstructionCycles("MATMUL_DENSE" if ins.dense else "MATMUL_CSR",
                                 DECODE_CYCLES + READ_LATENCY + mc.total + halves, mc.total + halves, mc.ideal)
    if isinstance(ins, Attention):
        n, att = ins.qkv.rows, config.attention
        if att is None:
            raise ConfigError("ATTENTION needs a configuration with an attention unit (att_head_dim > 0)")
        run = run_cycles(att, [HeadShape.from_csr(ins.n_global, ins.csr.row_ptr, n, balance=ins.balance)])
        unit = run["total_cycles"]
        order = -(-n // (P // 2))
        return InstructionCycles("ATTENTION", DECODE_CYCLES + order + ATTENTION_FEED_LATENCY + unit, unit,
                                 run["heads"][0]["ideal_cycles"])
    raise TypeError(f"not an instruction: {ins!r}")


def program_cycles(program, config: VitModelConfig) -> list[InstructionCycles]:
    """Each instruction's cycles; their ``total``s add up to the program's (first header transfer to the
    cycle in which the sequencer could take another header)."""
    check_program(program, config)
    return [instruction_cycles(ins, config) for ins in program]
