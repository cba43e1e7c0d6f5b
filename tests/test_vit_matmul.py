"""The ViT matmul's configuration checks and cycle model (hw/vit/matmul.py), in plain Python.

The RTL runs in tests/rtl/test_vit_matmul.py, which also shows the cycle model exact against it.
"""

import pytest

from attnforge.errors import ConfigError
from attnforge.hw.vit import MATMUL_LATENCY, VitMatmul, VitMatmulConfig, matmul_cycles
from attnforge.numfmt import IntFormat


@pytest.mark.parametrize("field,value,needle", [
    ("lines", 0, "lines must be in [1, 64], not 0"),
    ("macs", 257, "macs must be in [1, 256], not 257"),
    ("max_rows", 0, "max_rows must be in [1, 65536], not 0"),
    ("max_in", 70000, "max_in must be in [1, 65536], not 70000"),
    ("out_width", 12, "out_width must be one of 8, 16, 32, not 12"),
    ("multiplier_width", 33, "multiplier_width must be in [1, 32], not 33"),
])
def test_config_refuses_out_of_range(field, value, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        VitMatmulConfig(**{field: value})


def test_config_refuses_too_many_lanes_or_row_groups():
    with pytest.raises(ConfigError, match=r"lanes \(lines \* macs\) must be in \[1, 1024\], not 2048"):
        VitMatmulConfig(lines=8, macs=256)
    with pytest.raises(ConfigError, match="max_rows=600 needs 75 row groups of 8 lanes; at most 64"):
        VitMatmulConfig(max_rows=600)
    with pytest.raises(TypeError, match="lines must be an integer, not 2.0"):
        VitMatmulConfig(lines=2.0)


def test_config_widths_follow_the_formats():
    cfg = VitMatmulConfig(lines=2, macs=4, max_rows=65, max_in=256, out_width=16)
    assert (cfg.lanes, cfg.groups) == (8, 9)
    assert cfg.acc_width == 24                   # 256 products of int8 x int8: |sum| <= 2**22
    assert cfg.sum_width == 33                   # plus an int32 bias
    assert cfg.requantizer(3, 4).out == IntFormat(16)
    assert VitMatmulConfig(out_width=32).requantizer(3, 4) is None     # raw accumulator


def test_component_refuses_a_foreign_config():
    with pytest.raises(TypeError, match="VitMatmul needs a VitMatmulConfig"):
        VitMatmul(dict(lines=1))


def test_cycle_model_counts_beats_groups_and_empty_columns():
    cfg = VitMatmulConfig(lines=1, macs=8, max_rows=65, max_in=64)
    c = matmul_cycles(cfg, [3, 0, 5], rows=65, in_features=64)
    # 9 row groups; 64 load beats each; 3 + 1 (the empty column's zero beat) + 5 weight beats
    assert (c.load, c.compute, c.latency) == (9 * 64, 9 * 9, MATMUL_LATENCY)
    assert c.total == 9 * 64 + 81 + MATMUL_LATENCY
    assert c.macs == 65 * 8 and c.ideal == 65
    assert c.ratio == pytest.approx(c.total / 65)
    one_group = matmul_cycles(VitMatmulConfig(lines=5, macs=13, max_rows=65, max_in=64), [64] * 4, 65, 64)
    assert (one_group.load, one_group.compute) == (64, 256) and one_group.utilization == pytest.approx(256 / 326)


def test_cycle_model_refuses_bad_shapes():
    cfg = VitMatmulConfig(max_rows=8, max_in=16)
    with pytest.raises(ConfigError, match=r"matmul rows must be in \[1, 8\], not 9"):
        matmul_cycles(cfg, [1], rows=9, in_features=4)
    with pytest.raises(ConfigError, match=r"nnz of a column must be in \[0, 4\], not 5"):
        matmul_cycles(cfg, [5], rows=8, in_features=4)
    with pytest.raises(ConfigError, match="at least one output column"):
        matmul_cycles(cfg, [], rows=8, in_features=4)
