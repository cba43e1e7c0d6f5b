"""Integer golden model of the MAC line (``hw/mac_line.py``).

The specification of what the RTL computes: for each vector, the M dot
products of the shared input ``x`` with the M weight rows, in a signed
accumulator of ``acc_format``. Computed in int64 with torch, independently of
the RTL's pipeline; inputs outside the operand format and sums that would not
fit the accumulator are refused, because the generator guarantees neither
happens for vectors up to its ``max_length``.
"""

from __future__ import annotations

import torch

from attnforge.numfmt import IntFormat

__all__ = ["mac_line_golden", "mac_line_float"]


def mac_line_golden(x: torch.Tensor, w: torch.Tensor, operand_format: IntFormat,
                    acc_format: IntFormat, max_length: int | None = None) -> torch.Tensor:
    """Dot products of one vector.

    Parameters
    ----------
    x : int tensor ``[K]``
        The shared input vector.
    w : int tensor ``[M, K]``
        One weight row per MAC unit.

    Returns
    -------
    int64 tensor ``[M]``: ``w @ x``.
    """
    if x.dim() != 1 or w.dim() != 2 or w.shape[1] != x.shape[0]:
        raise ValueError(f"mac_line_golden needs x [K] and w [M, K], got x {tuple(x.shape)} and w {tuple(w.shape)}")
    if x.dtype.is_floating_point or w.dtype.is_floating_point:
        raise TypeError(f"mac_line_golden takes integer tensors, not {x.dtype} and {w.dtype}")
    k = x.shape[0]
    if k == 0:
        raise ValueError("mac_line_golden needs a vector of at least one element (K >= 1)")
    if max_length is not None and k > max_length:
        raise ValueError(f"vector length K={k} exceeds the line's max_length={max_length}")
    operand_format.check_array("x", x)
    operand_format.check_array("w", w)
    # Sum product by product in the order the hardware accumulates: int64 cannot
    # overflow for the widths the generator accepts (acc_width <= 64 bits is
    # checked below on every partial sum's extremes).
    acc = (w.to(torch.int64) * x.to(torch.int64)).cumsum(dim=1)
    acc_format.check_array("partial sums of the dot products", acc)
    return acc[:, -1]


def mac_line_float(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The float computation the integer line implements (float64 matrix-vector product)."""
    return w.to(torch.float64) @ x.to(torch.float64)
