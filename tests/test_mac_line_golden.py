"""The MAC line's integer golden model against the float computation it implements."""

import pytest
import torch

from attnforge.algo.mac_line import mac_line_float, mac_line_golden
from attnforge.numfmt import INT8, IntFormat, accumulator_width


@pytest.mark.parametrize("m, k", [(1, 1), (8, 64), (16, 4096), (3, 17)])
def test_golden_equals_float(m, k):
    g = torch.Generator().manual_seed(m * 1000 + k)
    x = torch.randint(-128, 128, (k,), generator=g)
    w = torch.randint(-128, 128, (m, k), generator=g)
    acc = IntFormat(accumulator_width(INT8, INT8, k))
    got = mac_line_golden(x, w, INT8, acc, max_length=k)
    # float64 represents every sum here exactly (|sum| < 2**53): tolerance 0.
    assert torch.equal(got.to(torch.float64), mac_line_float(x, w))


def test_golden_worst_case_fits_exactly():
    k = 16
    x = torch.full((k,), -128)
    w = torch.full((2, k), -128)
    acc = IntFormat(accumulator_width(INT8, INT8, k))
    assert mac_line_golden(x, w, INT8, acc).tolist() == [16384 * k] * 2
    narrow = IntFormat(acc.width - 1)
    with pytest.raises(ValueError, match="partial sums"):
        mac_line_golden(x, w, INT8, narrow)


def test_golden_refuses_bad_input():
    acc = IntFormat(32)
    with pytest.raises(ValueError, match="x has values"):
        mac_line_golden(torch.tensor([128]), torch.tensor([[1]]), INT8, acc)
    with pytest.raises(ValueError, match="x \\[K\\] and w \\[M, K\\]"):
        mac_line_golden(torch.tensor([1, 2]), torch.tensor([[1]]), INT8, acc)
    with pytest.raises(TypeError, match="integer tensors"):
        mac_line_golden(torch.tensor([1.0]), torch.tensor([[1.0]]), INT8, acc)
    with pytest.raises(ValueError, match="max_length"):
        mac_line_golden(torch.ones(5, dtype=torch.int64), torch.ones(1, 5, dtype=torch.int64), INT8, acc, 4)
