"""Resource model of the ViTCoD accelerator on ECP5: what a configuration needs, in microseconds.

``attnforge explore vitcod`` judges dozens of configurations; synthesizing one
takes Yosys 5 to 55 minutes here. This model answers from the configuration:

* **DSP blocks (MULT18X18D), exact**: the design's variable x variable
  multipliers, each split by Yosys into ``ceil(a / 18) * ceil(b / 18)`` 18x18
  blocks (``vitcod_multipliers``): one per MAC of every line (16 x 8 bits), two
  per output byte lane (the 32 x 17-bit requantizer), per engine two for the
  exponent unit (21 x 16) and two for the row's reciprocal (16 x 26), and the
  Q/K decoder's multipliers when it is built.
* **Block RAMs (DP16KD), exact**: the design's memories (``vitcod_memories``:
  width, depth, read ports, straight from the configuration's derived widths),
  each read port a copy of its memory (a DP16KD gives one write and one read
  port), each copy the fewest blocks of any DP16KD shape (16384 x 1 ... 512 x 36).
* **LUTs and flip-flops, fitted**: nextpnr's packed TRELLIS_COMB and TRELLIS_FF
  counts (what must fit the device; Yosys's LUT4 count leaves out the carry
  chains' and LUT RAMs' cells) as a non-negative linear combination of a constant
  and at most three of the configuration's counts (``FEATURES``), the features
  chosen by leave-one-out error over the configurations recorded in
  ``fpga/data/vitcod_ecp5.json`` marked ``fit``; the others (``heldout``) never
  take part and only measure it (tests/test_explore.py).

Recorded data: ``attnforge synth vitcod ... --pack-only`` (Yosys + nextpnr's
packer) per configuration; the file names the commit, tool versions and
command. The counts include the two-pin synthesis shell (``fpga/shell.py``),
a few hundred cells. Configurations with ``tiles > 1`` are not modeled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from attnforge.errors import ConfigError
from attnforge.hw.vitcod import VitcodConfig
from attnforge.hw.vitcod.config import INDEX_WIDTH, MAX_DECODER_HEADS, MULTIPLIER_WIDTH
from attnforge.softmax_int import E_FORMAT

from .synth import DEVICES

__all__ = ["DEVICE_CAPACITY", "Mem", "Mul", "vitcod_memories", "vitcod_multipliers", "bram_blocks", "dsp_blocks",
           "vitcod_resources", "load_records", "fit_vitcod", "predict", "features", "FEATURES", "MAX_FEATURES",
           "DATA"]

#: What each ECP5 device offers (nextpnr's "available" counts): packed LUTs, FFs, DSP and block RAMs
#: (``fpga.synth``'s ``Device.capacity``, which its fit check uses too).
DEVICE_CAPACITY = {name: dict(dev.capacity) for name, dev in DEVICES.items() if dev.family == "ecp5"}

DATA = Path(__file__).resolve().parent / "data" / "vitcod_ecp5.json"

#: DP16KD shapes (depth, width); 512 x 36 only as a simple dual port (one write, one read), how every
#: memory here uses it.
DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: memory_libmap's costs (Yosys share/lattice/brams_16kd.txt, lutrams_trellis.txt).
BRAM_COST, LUTRAM_COST = 128, 4
#: MULT18X18D operand width.
DSP_WIDTH = 18


@dataclass(frozen=True)
class Mem:
    name: str
    width: int
    depth: int
    read_ports: int


@dataclass(frozen=True)
class Mul:
    name: str
    a_width: int
    b_width: int
    count: int


def _log2_ceil(n: int) -> int:
    return max(0, (n - 1).bit_length())


def _check(cfg: VitcodConfig) -> None:
    if not isinstance(cfg, VitcodConfig):
        raise TypeError(f"the resource model takes a VitcodConfig, not {cfg!r}")
    if cfg.tiles != 1:
        raise ConfigError(f"tiles={cfg.tiles}: the resource model covers one row pipeline (tiles = 1) only")


def vitcod_memories(cfg: VitcodConfig) -> list[Mem]:
    """The memories of ``VitcodAccelerator(cfg)`` (``hw/vitcod/accelerator.py``, ``engine.py``,
    ``layer_store.py``) with their read ports."""
    _check(cfg)
    engines = [cfg.dense_lines, cfg.sparse_lines]
    groups = [lines // cfg.score_split(lines) for lines in engines]
    B = cfg.banks
    mems = [Mem("q_buf", cfg.qkv_word_width, B * cfg.qkv_bank_words, 2),
            Mem("k_buf", cfg.qkv_word_width, B * cfg.qkv_bank_words, sum(groups)),
            Mem("v_buf", cfg.qkv_word_width, B * cfg.qkv_bank_words, sum(groups)),
            Mem("rp_buf", cfg.data_width, B * cfg.rp_bank_words, 4),
            Mem("ci_buf", cfg.data_width, B * cfg.ci_bank_words, sum(groups))]
    slot_bits = _log2_ceil(cfg.row_slots)
    for name, k in zip(("denser", "sparser"), groups):
        score_depth = 1 << (slot_bits + _log2_ceil(-(-cfg.max_tokens // k)))
        mems += [Mem(f"{name}.score_buf{g}", cfg.score_width, score_depth, 1) for g in range(k)]
        mems.append(Mem(f"{name}.exp_buf", E_FORMAT.width, 1 << (slot_bits + _log2_ceil(cfg.max_tokens)), 1))
    if cfg.decoder:
        mems += [Mem("layer_store.store", cfg.data_width, cfg.qk_store_words, 1),
                 Mem("layer_store.order", cfg.data_width, cfg.order_words, 1)]
    return mems


def bram_blocks(mem: Mem) -> int:
    """DP16KD blocks of one memory: a copy per read port, each the fewest blocks of any shape; or none
    when LUT RAM is cheaper by Yosys's costs (``memory_libmap``: a DP16KD costs 128, a 16 x 4
    TRELLIS_DPR16X4 4; a tie goes to block RAM), as for the decoder's few-word key-order buffer."""
    per_copy = min(math.ceil(mem.width / w) * math.ceil(mem.depth / d) for d, w in DP16KD_SHAPES)
    lutram_cost = LUTRAM_COST * math.ceil(mem.depth / 16) * math.ceil(mem.width / 4)
    if lutram_cost < BRAM_COST * per_copy:
        return 0
    return per_copy * mem.read_ports


def vitcod_multipliers(cfg: VitcodConfig) -> list[Mul]:
    """The variable x variable multipliers of ``VitcodAccelerator(cfg)`` (constant ones Yosys folds)."""
    _check(cfg)
    muls = [Mul("line MACs (16-bit P or q x int8)", 16, 8, cfg.lines * cfg.macs),
            Mul("output requantizer, per byte lane", cfg.row_width, MULTIPLIER_WIDTH + 1, cfg.data_width // 8),
            Mul("exponent unit (row max - score) x multiplier, per engine", cfg.score_width + 1, MULTIPLIER_WIDTH, 2),
            Mul("exponent x row reciprocal, per engine", E_FORMAT.width, cfg.recip_width, 2)]
    if cfg.decoder:
        muls += _decoder_multipliers(cfg)
    return muls


def _decoder_multipliers(cfg: VitcodConfig) -> list[Mul]:
    """The Q/K decoder (``hw/vitcod/decoder.py``): per byte lane a weight x value product and the lane's
    requantizer (its sum of ``decoder_heads`` products times the unsigned 16-bit multiplier)."""
    lanes = cfg.data_width // 8
    return [Mul("decoder weight x compressed value, per byte lane", 8, 8, lanes),
            Mul("decoder requantizer, per byte lane", cfg.decoder_sum_width, MULTIPLIER_WIDTH + 1, lanes),
            Mul("loader: a head's Q/K beats x Hc (command check), Q and K", INDEX_WIDTH + 1,
                MAX_DECODER_HEADS.bit_length(), 2)]


def _dsp_pieces(width: int) -> int:
    """18-bit slices of an operand that go to DSP blocks: Yosys's ``mul2dsp`` cuts ``ceil(w / 18)``
    slices, but one narrower than ``DSP_*_MINWIDTH`` = 2 bits (w = 18 k + 1) stays in logic."""
    return width // DSP_WIDTH if width > DSP_WIDTH and width % DSP_WIDTH == 1 else math.ceil(width / DSP_WIDTH)


def dsp_blocks(mul: Mul) -> int:
    return mul.count * _dsp_pieces(mul.a_width) * _dsp_pieces(mul.b_width)


#: Candidate features of the LUT/FF fit (each a count the configuration fixes): the MACs, the lines, the
#: stream width, the Q/K buffer word, the decoder (its stream width), d, d x lines, the P.V accumulator
#: bits (MACs x their width) and the output row (d x its width).
FEATURES = ("macs", "lines", "data_width", "qkv_word_width", "decoder_width", "head_dim", "head_dim_x_lines",
            "pv_bits", "row_bits")
#: Most candidate features one fit takes (besides a constant).
MAX_FEATURES = 3


def _feature_values(cfg: VitcodConfig) -> dict:
    return {"macs": cfg.total_macs, "lines": cfg.lines, "data_width": cfg.data_width,
            "qkv_word_width": cfg.qkv_word_width, "decoder_width": cfg.data_width if cfg.decoder else 0,
            "head_dim": cfg.head_dim, "head_dim_x_lines": cfg.head_dim * cfg.lines,
            "pv_bits": cfg.total_macs * cfg.pv_width, "row_bits": cfg.head_dim * cfg.row_width}


def features(cfg: VitcodConfig, names=FEATURES) -> np.ndarray:
    """A constant 1, then the named features of ``cfg``."""
    values = _feature_values(cfg)
    return np.array([1.0] + [float(values[n]) for n in names])


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    return nnls(x, y)[0]


def _loo_error(x: np.ndarray, y: np.ndarray) -> float:
    """Largest relative error of each record predicted by the fit of all the others."""
    worst = 0.0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        worst = max(worst, abs(float(x[i] @ _nnls(x[keep], y[keep])) - y[i]) / y[i])
    return worst


def fit_vitcod(records: list[dict], split: str = "fit") -> dict:
    """Packed LUTs and FFs as non-negative combinations of a constant and at most ``MAX_FEATURES`` of
    ``FEATURES``, over the records of ``split``. The features are chosen by leave-one-out error on those
    records alone (the held-out records never take part), the coefficients by non-negative least squares.
    Returns ``{"lut": (names, coef, loo_error), "ff": ...}``."""
    from itertools import combinations

    rows = [r for r in records if r["split"] == split]
    configs = [VitcodConfig(**r["config"]) for r in rows]
    out = {}
    for key, cell in (("lut", "TRELLIS_COMB"), ("ff", "TRELLIS_FF")):
        y = np.array([r["packed"][cell] for r in rows], dtype=float)
        best = None       # (leave-one-out error, names); the first of equal errors wins
        for k in range(1, MAX_FEATURES + 1):
            for names in combinations(FEATURES, k):
                if k + 2 > len(rows):          # leave one out and still have more records than unknowns
                    continue
                err = _loo_error(np.stack([features(c, names) for c in configs]), y)
                if best is None or err < best[0] - 1e-12:
                    best = (err, names)
        if best is None:
            raise ConfigError(f"fit_vitcod: {len(rows)} records of split {split!r}; at least 3 are needed")
        err, names = best
        out[key] = (names, _nnls(np.stack([features(c, names) for c in configs]), y), err)
    return out


def load_records(path=DATA) -> list[dict]:
    """The recorded syntheses (``scripts/record_vitcod_resources.py``)."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != "attnforge.vitcod-resources/1":
        raise ConfigError(f"{path}: not an attnforge.vitcod-resources/1 file")
    return data["records"]


def predict(fit: dict, key: str, cfg: VitcodConfig) -> float:
    names, coef, _ = fit[key]
    return float(features(cfg, names) @ coef)


@lru_cache(maxsize=1)
def _fitted() -> dict:
    return fit_vitcod(load_records())


def vitcod_resources(cfg: VitcodConfig, device: str = "ecp5-85k") -> dict:
    """``{"lut", "ff", "dsp", "bram"}`` of ``cfg`` on ``device`` (an ECP5 of ``DEVICE_CAPACITY``)."""
    if device not in DEVICE_CAPACITY:
        raise ConfigError(f"device {device!r}: the resource model covers {', '.join(DEVICE_CAPACITY)}")
    fit = _fitted()
    return {"lut": int(round(predict(fit, "lut", cfg))), "ff": int(round(predict(fit, "ff", cfg))),
            "dsp": sum(dsp_blocks(m) for m in vitcod_multipliers(cfg)),
            "bram": sum(bram_blocks(m) for m in vitcod_memories(cfg))}
