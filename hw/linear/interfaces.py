"""The interfaces between the parts of the linear decode datapath.

Every signature is written from the side that drives most of it (the command
control, or the pipeline stage upstream); the receiving component flips it.
The pipeline has no backpressure inside (a pass starts only when its
output-buffer half is free), so its interfaces are plain per-cycle values with
a ``valid`` bit in the element context, not streams.
"""

from __future__ import annotations

from amaranth.hdl import signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from attnforge.numfmt import INT8

from .config import LinearDecodeConfig, conv_column_copies, shape_of

__all__ = ["FetchSignature", "ConvControlSignature", "OutputHalfSignature", "ResultSignature", "result_layout"]


class FetchSignature(wiring.Signature):
    """What the fetch stage hands the state lanes and the convolution, seen from the fetch stage.

    A cycle ahead (the element being fetched): ``state_addr`` (its state word, in
    ``config.state_addr_roots`` registered copies, each for a run of the state memory's slices),
    ``head`` and ``data_column`` (its column of v, for the convolution's taps and history), the
    latter also as ``conv_column``: registered copies per history row and tap row
    (``2 K - 1``, history rows first), ``conv_column_copies`` per row (one per byte lane of
    the row's group multiplexer, with ``Pipelining.conv_group_select``), so no one register
    drives all their multiplexers.
    Registered (the element in the update stage): ``element`` (``config.element_layout``),
    ``v`` (its column's v of its draft token; 1 on the z column), ``phi_k`` and ``phi_q``
    (the token's phi(k) and phi(q) on the element's M rows).
    """

    def __init__(self, config: LinearDecodeConfig):
        lanes = data.ArrayLayout(config.phi_shape, config.macs)
        super().__init__({
            "state_addr": Out(data.ArrayLayout(range(config.state_depth), config.state_addr_roots)),
            "head": Out(config.head_width),
            "data_column": Out(range(config.d)),
            "conv_column": Out(data.ArrayLayout(
                data.ArrayLayout(range(config.d), conv_column_copies(config.d, config.pipe.conv_group_select)),
                2 * config.conv_taps - 1)),
            "element": Out(config.element_layout),
            "v": Out(shape_of(INT8)),
            "phi_k": Out(lanes),
            "phi_q": Out(lanes),
        })


class ConvControlSignature(wiring.Signature):
    """Commands to the convolution's registers, seen from the command control.

    ``taps_load``: ``w[taps_index][:] = row`` for ``head``. ``history_shift``: a committed v
    enters ``head``'s history; that v is ``history_row`` ``config.pipe.block_read_latency`` cycles later (the
    fetch stage's registered draft-block word). ``history_clear``: ``head``'s history becomes
    zeros (reset). At most one of the three per cycle. ``row`` and ``history_row`` are
    driven every cycle (no command-dependent multiplexer in front of the convolution).
    """

    def __init__(self, config: LinearDecodeConfig):
        super().__init__({
            "head": Out(config.head_width),
            "row": Out(data.ArrayLayout(shape_of(INT8), config.d)),
            "history_row": Out(data.ArrayLayout(shape_of(INT8), config.d)),
            "taps_load": Out(1),
            "taps_index": Out(config.format.block_width),
            "history_shift": Out(1),
            "history_clear": Out(1),
        })


class OutputHalfSignature(wiring.Signature):
    """The output-buffer half a pass writes, seen from the command control.

    ``half``: the half the next output pass writes. ``free``: that half is neither
    full nor claimed. ``claim``: an output pass starts on ``half`` (one cycle).
    """

    def __init__(self):
        super().__init__({
            "half": Out(1),
            "claim": Out(1),
            "free": In(1),
        })


def result_layout(config: LinearDecodeConfig, attn_width: int) -> data.StructLayout:
    """An element leaving the lanes (or the normalizer): its context, the attention
    value (numerator, or quotient after the normalizer) and the convolution sum."""
    return data.StructLayout({
        "element": config.element_layout,
        "attn": signed(attn_width),
        "conv": signed(config.format.conv_format.width),
    })


class ResultSignature(wiring.Signature):
    """One element per cycle towards the output, seen from its producer (``result_layout``'s
    fields as members): ``element`` (context, ``valid`` among it), ``attn`` (numerator or
    quotient, ``attn_width`` bits) and ``conv`` (the convolution sum)."""

    def __init__(self, config: LinearDecodeConfig, attn_width: int):
        super().__init__({name: Out(field.shape) for name, field in result_layout(config, attn_width)})
