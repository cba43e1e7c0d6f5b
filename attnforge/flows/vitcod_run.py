"""``attnforge vitcod run``: images through the model-level accelerator's RTL, every tensor bit for bit.

For a float ViTCoD checkpoint and its masks (and optionally a robust ticket, a checkpoint whose pruned
weights are exactly 0): the integer-only ViT is calibrated as ``vitcod int-eval`` does
(``intvit.compile_int_vit``), an accelerator configuration is sized for it (``model_config``: P = 8
lanes, the attention unit for the heads' d), and each image is compiled into one program
(``model_program``: patch embedding, every block with its heads as ATTENTION instructions, the final
LayerNorm, the classifier) and run on the RTL by the model-level testbench (``tb/vitmodel_tb.py``), which
checks every STOREd tensor against the integer ViT's trace and the reference executor, and every
instruction's cycles against the cycle model. The classifier is a raw int32 MATMUL whose logits leave as
two int16 halves; the predicted class is the argmax of the RTL's logits.

The dense baseline is the same hardware running the model without attention masks (every key global)
and without the ticket (the checkpoint's dense weights), by the cycle model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from attnforge.errors import MissingArtifactError, check_int

__all__ = ["OP_GROUPS", "model_config", "run_images"]

#: cycles_by_op: the instruction kinds of the cycle model, grouped as issue 17's JSON names them
OP_GROUPS = {"ATTENTION": "attention", "MATMUL_DENSE": "dense_matmul", "MATMUL_CSR": "sparse_matmul",
             "LAYERNORM": "layernorm", "GELU": "gelu", "ADD": "add", "LOAD": "load", "STORE": "store"}


def model_config(qm, *, lines: int = 1, macs: int = 8):
    """A ``VitModelConfig`` sized for the integer ViT ``qm``: its tokens, widest tensor, LayerNorm width,
    the heads' d and CSR entries, and the buffer tiles its whole-image program uses."""
    from attnforge.algo.vitcod.model_program import model_program
    from attnforge.hw.vitmodel import VitModelConfig

    cfg = qm.config
    n, dim, heads = (cfg["img_size"] // cfg["patch_size"]) ** 2 + 1, cfg["embed_dim"], cfg["num_heads"]
    patch_in = qm.patch.weight.shape[1]
    hidden = max(b.fc1.weight.shape[0] for b in qm.blocks)
    nnz = max([int(h.csr.row_ptr[-1]) for b in qm.blocks for h in b.heads] + [1])
    wide = VitModelConfig(lines=lines, macs=macs, max_tokens=n, max_cols=max(3 * dim, hidden, patch_in),
                          ln_channels=dim, buffer_tiles=1 << 16, att_head_dim=dim // heads, att_max_nnz=nnz,
                          att_macs=min(8, lines * macs))    # the unit's stream (8 P bits) holds a line's M int8
    xq = np.zeros((cfg["in_chans"], cfg["img_size"], cfg["img_size"]), np.int8)
    program = model_program(qm, xq, wide)
    used = max(reg.end(wide.lanes) for ins in program for reg in _regions(ins))
    return dataclasses.replace(wide, buffer_tiles=used)


def _regions(ins):
    for name in ("src", "dst", "dst_hi", "a", "b", "qkv"):
        reg = getattr(ins, name, None)
        if reg is not None and hasattr(reg, "end"):
            yield reg


def _cycles_summary(program, config) -> dict:
    """Cycles by op group and their ideal; ``matmul_weight_issue_cycles``: the MATMULs' cycles in which a
    weight beat is issued to the MACs (each weight beat is held for the ``ceil(rows / P)`` row groups):
    what is left of the matmuls' cycles is their activation load, decode and pipeline latency."""
    from attnforge.hw.vitmodel import Matmul, program_cycles

    by_op = {name: 0 for name in OP_GROUPS.values()}
    ideal_by_op = {name: 0.0 for name in OP_GROUPS.values()}
    cycles = program_cycles(program, config)
    for c in cycles:
        by_op[OP_GROUPS[c.op]] += c.total
        ideal_by_op[OP_GROUPS[c.op]] += c.ideal
    issue = sum(-(-ins.src.rows // config.lanes) * sum(max(k, 1) for k in ins.nnz_per_column())
                for ins in program if isinstance(ins, Matmul))
    return {"cycles": sum(c.total for c in cycles), "cycles_by_op": by_op,
            "ideal_cycles": sum(ideal_by_op.values()), "ideal_by_op": ideal_by_op,
            "matmul_weight_issue_cycles": issue}


#: The op groups whose work the masks and the ticket shrink (the rest do the same work in both runs).
SHRINKING = {"attention": ("attention",), "linear layers": ("dense_matmul", "sparse_matmul")}


def amdahl_bound(run: dict, dense: dict) -> dict:
    """The speedup over the dense run if every op group of the dense run shrank by its work ratio and nothing
    else changed (Amdahl): each group's dense cycles times (its ideal cycles in ``run`` / in ``dense``; the
    ideal counts the kept attention entries or weights on the same units), the other groups' unchanged.
    ``run`` and ``dense`` are ``_cycles_summary`` results."""
    shrunk = float(dense["cycles"])
    ratios = {}
    for group, ops in SHRINKING.items():
        d_cycles = sum(dense["cycles_by_op"][o] for o in ops)
        d_ideal = sum(dense["ideal_by_op"][o] for o in ops)
        ratio = sum(run["ideal_by_op"][o] for o in ops) / d_ideal if d_ideal else 1.0
        ratios[group] = ratio
        shrunk -= d_cycles * (1.0 - ratio)
    return {"bound": dense["cycles"] / shrunk, "work_ratio": ratios}


def run_images(checkpoint, masks_path, *, ticket=None, images: int = 4, seed: int = 0, simulator=None,
               build_root="build/vitcod_run", calib_count: int = 256, data: str = "digits", progress=None,
               stepped: bool = False, macs: int = 8, rtl: bool = True) -> dict:
    """The report of ``attnforge vitcod run`` (module docstring); ``progress(i, n, entry)`` after each image
    (``entry``: that image's record of the report's ``per_image``). The images run in the testbench's player
    (``tb/vitmodel_player.py``: the host beats from a memory, at the simulator's speed); ``stepped``: in the
    testbench's cycle-by-cycle full-rate test instead (the same checks, some 50 times slower). ``macs``: the
    lanes P of the linear layers and the other units (the accelerator's one MAC line). ``rtl`` False: no
    simulation — each image's program runs on the ISA's reference executor (every STOREd tensor against the
    integer model's trace) and the cycles are the cycle model's (``bit_exact`` None)."""
    import torch

    from attnforge.algo.vitcod.intvit import (_check_masks, calibration_images, compile_int_vit, dense_masks,
                                              int_forward, quantize_image, trace_image)
    from attnforge.algo.vitcod.model_program import model_program, model_tensors, reference_machine
    from attnforge.algo.vitcod.prepare import prepare
    from attnforge.formats.masks import load_masks
    from attnforge.hw.designs import get_design
    from attnforge.sim.runner import simulate
    from attnforge.hw.vitmodel import assemble
    from attnforge.tb.vitmodel_case import MlpCase, save_program_case
    from attnforge.tb.vitmodel_player import player

    check_int("--images", images, 1)
    check_int("--seed", seed, 0)
    check_int("--macs", macs, 1, 64)
    for flag, path in (("--checkpoint", checkpoint), ("--masks", masks_path), ("--ticket", ticket)):
        if path is not None and not Path(path).is_file():
            raise MissingArtifactError(f"{flag} {path} does not exist")
    masks = load_masks(masks_path)
    model, train_set, val_set = prepare(ticket or checkpoint, data=data, seed=seed)
    _check_masks(model, masks, f"--masks {masks_path}")
    model.set_masks(torch.from_numpy(masks.keep))
    calib = calibration_images(train_set, calib_count, seed)
    qm = compile_int_vit(model, masks, calib)
    config = model_config(qm, macs=macs)
    sparse = ticket is not None
    # the dense baseline: the checkpoint's dense weights, every key global, the same hardware (cycle model)
    dense_model = prepare(checkpoint, data=data, seed=seed)[0]
    qm_dense = compile_int_vit(dense_model, dense_masks(dense_model), calib)
    names = model_tensors(qm)
    design = get_design("vit-model")
    if rtl:
        Path(build_root).mkdir(parents=True, exist_ok=True)
    out_images, correct, bit_exact, agree, ref_exact = [], 0, True, True, True
    n = min(images, len(val_set))
    wrapper = None
    for i in range(n):
        image, label = val_set[i]
        xq = quantize_image(qm, image[None])[0]
        tr = trace_image(qm, image)
        program = model_program(qm, xq, config, sparse=sparse)
        expected = {name: _expected(qm, tr, name, config.lanes) for name in names}
        summary = _cycles_summary(program, config)
        golden = int(np.argmax(int_forward(qm, xq[None])[0]))
        if not rtl:
            stored = reference_machine(config).run(program)
            ok = len(stored) == len(names) and all(np.array_equal(t, expected[k]) for k, t in zip(names, stored))
            ref_exact &= ok
            pred = int(np.argmax(_logits(qm, stored[-2:])))
            agree &= pred == golden
            correct += pred == int(label)
            out_images.append({"image": i, "label": int(label), "predicted": pred, "golden_predicted": golden,
                               "bit_exact": None, "reference_equal_trace": ok, **summary})
            if progress:
                progress(i + 1, n, out_images[-1])
            continue
        case = save_program_case(Path(build_root).resolve() / f"image{i}.npz", MlpCase(program, expected, {}), names,
                                 config)
        params = {"program_file": str(case)}
        if not stepped:
            # every image's program has the same shape: the first one sizes the player (one build for all)
            wrapper = wrapper or player(config, 1 << max(12, (len(assemble(program, config)) - 1).bit_length()))
            params["player"] = wrapper.depth
        result = simulate(design, config, seed=seed, tb_params=params, simulator=simulator, build_root=build_root,
                          wrapper=wrapper, testcase="mlp_half_full_rate_cycles_match_the_model" if stepped
                          else "program_played_from_memory")
        ok = bool(result.passed and result.tests == 1 and result.report
                  and result.report["measured"] == result.report["model"])
        bit_exact &= ok
        # the class from the RTL's own logits (the testbench reports the last two STOREd tensors, their
        # halves); the integer golden model's class independently (none when the run failed: then there are
        # no RTL logits to classify)
        pred = int(np.argmax(_logits(qm, result.report["last_tensors"]))) if ok else None
        agree &= pred == golden
        entry = {"image": i, "label": int(label), "predicted": pred, "golden_predicted": golden, "bit_exact": ok,
                 "rtl_cycles": result.report["total"] if result.report else None, **summary, "log": str(result.log)}
        correct += pred == int(label)
        out_images.append(entry)
        if progress:
            progress(i + 1, n, entry)
    dense_program = model_program(qm_dense, quantize_image(qm_dense, val_set[0][0][None])[0], config)
    dense = _cycles_summary(dense_program, config)
    cycles = out_images[0]["cycles"]          # the program's shape, so its cycles, are the same for every image
    ideal = out_images[0]["ideal_cycles"]
    bound = amdahl_bound(out_images[0], dense)
    return {"checkpoint": str(checkpoint), "masks": str(masks_path), "ticket": None if ticket is None else str(ticket),
            "seed": seed, "simulator": simulator if rtl else None,
            "testbench": None if not rtl else "stepped" if stepped else "player",
            "config": dataclasses.asdict(config), "bit_exact": bit_exact if rtl else None,
            **({} if rtl else {"reference_equal_trace": ref_exact}),
            "images": n, "correct": correct, "cycles_per_image": cycles,
            "cycles_by_op": out_images[0]["cycles_by_op"], "ideal_cycles": ideal, "utilization": ideal / cycles,
            "ideal_by_op": out_images[0]["ideal_by_op"],
            "utilization_by_op": {k: out_images[0]["ideal_by_op"][k] / c
                                  for k, c in out_images[0]["cycles_by_op"].items() if c},
            "matmul_weight_issue_fraction": out_images[0]["matmul_weight_issue_cycles"]
            / max(1, out_images[0]["cycles_by_op"]["dense_matmul"] + out_images[0]["cycles_by_op"]["sparse_matmul"]),
            "dense_baseline_cycles": dense["cycles"], "dense_baseline_cycles_by_op": dense["cycles_by_op"],
            "speedup": dense["cycles"] / cycles, "amdahl_bound": bound["bound"], "work_ratio": bound["work_ratio"],
            "speedup_over_bound": dense["cycles"] / cycles / bound["bound"],
            "classes_equal_golden": agree, "per_image": out_images,
            "classifier": "on the accelerator: a raw int32 MATMUL, its logits STOREd as two int16 halves (checked "
                          "bit for bit), the class their argmax"}


def _logits(qm, halves) -> np.ndarray:
    """The int32 logits ``[classes]`` from the STOREd low and high halves (padded to P channels)."""
    from attnforge.hw.vitmodel.isa import raw_halves_to_int32

    lo, hi = (np.asarray(h, np.int64) for h in halves)
    return raw_halves_to_int32(lo, hi)[0, :qm.head.weight.shape[0]]


def _expected(qm, tr: dict, name: str, lanes: int) -> np.ndarray:
    """A STOREd tensor's expected value from ``trace_image``'s (model_program's layout; the logits' halves
    padded with zeros to a multiple of the ``lanes``, as ``classifier_instructions`` pads the classifier)."""
    from attnforge.algo.vitcod.model_program import LOGITS_TENSORS, pad_classes
    from attnforge.hw.vitmodel.isa import int32_to_raw_halves

    if name in LOGITS_TENSORS:
        return int32_to_raw_halves(pad_classes(tr["logits"][0], lanes))[LOGITS_TENSORS.index(name)][None]
    if name.endswith(".qkv"):
        p = name[: -len("qkv")]
        q, k, v = (tr[p + x][0] for x in "qkv")
        return np.stack([q, k, v]).transpose(2, 0, 1, 3).reshape(q.shape[1], -1)
    t = tr[name][0]
    if name == "patch":      # row 0, the class token's: the integer model's embedding of an all-zero patch
        zero = qm.patch.run(np.zeros((1, qm.patch.weight.shape[1]), np.int64))[1]
        return np.concatenate([zero, t])
    if name.endswith(".attn"):
        return t.transpose(1, 0, 2).reshape(t.shape[1], -1)
    if name == "norm":
        return t[None]
    return t
