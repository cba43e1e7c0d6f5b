"""Interfaces between the ViTCoD accelerator's components.

Each signature is written from the side that starts the work (the row
scheduler starts engine jobs, the softmax stage starts exponent jobs); the
other side takes it with ``In(...)``, and ``wiring.connect`` joins them.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from attnforge.hw.common import log2_ceil

from .config import INDEX_WIDTH, MULTIPLIER_WIDTH, SHIFT_WIDTH, VitcodConfig

__all__ = ["EngineJobSignature", "ExpJobSignature", "HeadBanksSignature", "HEAD_COMMAND_FIELDS", "head_layout"]


#: The fields of a loaded head that come from its command (``head_layout`` adds ``off``).
HEAD_COMMAND_FIELDS = ("nq", "nk", "g", "nnz", "exp_mult", "exp_shift", "out_mult", "out_shift")


def head_layout(config: VitcodConfig) -> data.StructLayout:
    """What the scheduler needs of a loaded head: its sizes and requantizers (the command's first
    fields) and ``off``, the tile of its query row 0 (``tiles > 1``: the heads' rows are dealt to
    the tiles in one rotation across heads, row i of a head to tile ``(i + off) mod tiles``, ``off``
    the rows of the heads before it mod ``tiles``; 0 with one tile)."""
    return data.StructLayout({**{name: config.cmd_layout.members[name] for name in HEAD_COMMAND_FIELDS},
                              "off": unsigned(max(1, (config.tiles - 1).bit_length()))})


class EngineJobSignature(wiring.Signature):
    """Score and pv jobs of one engine, from the row scheduler's side.

    Members
    -------
    score_start, pv_start : ``Out(1)``
        Start a job (only when ``issue_free``, and for a pv job or a score job without keys
        when that kind of job is not active).
    score, pv : ``Out(StructLayout)``
        The next score job's and the next pv job's parameters, offered in every cycle (not only
        with the start: the engine samples them whenever it is free, so no job start drives
        the enables of its job registers):

        * ``bank``: buffer bank of the job's head;
        * ``row`` (score): query row;
        * ``n``: keys of the row in this engine; ``nonzero``: ``n != 0``; ``single`` (pv): ``n == 1``;
        * ``prefix``: keys ``0 .. prefix - 1`` are the global columns themselves (Denser Engine:
          G; Sparser Engine: 0); key ``j >= prefix`` is the column at CSR entry ``base + j``;
        * ``base``: (mod 2**16) the CSR entry of key 0 (the row's first CSR entry, less ``prefix``);
        * ``slot``: row slot of the score and exponent buffers (row order mod ``row_slots``);
        * ``recip`` (pv): the row's reciprocal of its exponent sum.
    issue_free : ``In(1)``
        The engine can take a new job in this cycle.
    score_active : ``In(1)``
        A score job's beats are in flight, or its done cycle: a score job with keys may start
        anyway (right after the previous one's last issue; its beats follow those), one without
        keys only when this is low.
    pv_active : ``In(1)``
        A pv job's beats are in flight, or its done cycle: a pv job with keys may start anyway
        (right after the previous one's last issue, while fewer than ``pv_queue`` rows' shares are
        held), one without keys only when this is low.
    pv_take : ``Out(1)``
        The output stage takes the oldest share (``out``); the engine moves on to the next one.
    score_done, pv_done : ``In(1)``
        One-cycle pulses: every score of a job is in the score buffer / a row's share is complete
        (shares complete in the order their jobs started).
    done_slot : ``In(log2(row_slots))``
        The row slot of the score job that is done (with ``score_done``).
    max : ``In(signed(score_width))``
        The score job's row maximum (valid with ``score_done``).
    out : ``In(ArrayLayout(signed(pv_width), head_dim))``
        The engine's oldest share of an output row not yet taken (valid from its ``pv_done`` until
        ``pv_take``); the engine holds up to ``pv_queue`` of them.
    """

    def __init__(self, config: VitcodConfig):
        common = {"bank": config.bank_bits, "n": INDEX_WIDTH, "nonzero": 1, "prefix": INDEX_WIDTH,
                  "base": INDEX_WIDTH, "slot": log2_ceil(config.row_slots)}
        super().__init__({
            "score_start": Out(1), "pv_start": Out(1),
            "score": Out(data.StructLayout({**common, "row": INDEX_WIDTH})),
            "pv": Out(data.StructLayout({**common, "recip": config.recip_width, "single": 1})),
            "issue_free": In(1), "score_active": In(1), "pv_active": In(1), "pv_take": Out(1),
            "score_done": In(1), "pv_done": In(1), "done_slot": In(log2_ceil(config.row_slots)),
            "max": In(signed(config.score_width)),
            "out": In(data.ArrayLayout(signed(config.pv_width), config.head_dim)),
        })


class ExpJobSignature(wiring.Signature):
    """An exponent job (one row of one engine), from the softmax stage's side.

    Members
    -------
    start : ``Out(1)``
        Start (only when ``free``); the parameters are sampled in the same cycle.
    tag : ``Out(1)``
        Which of the unit's two sums the job adds to (the jobs alternate: a job may start while the
        previous one's entries drain, and its sum is read after that).
    slot : ``Out(log2(row_slots))``
        Row slot: which scores to read, where E goes.
    n : ``Out(INDEX_WIDTH)``
        Scores of the row in this engine.
    max : ``Out(signed(score_width))``
        The row maximum over both engines.
    multiplier, shift : ``Out(MULTIPLIER_WIDTH)``, ``Out(SHIFT_WIDTH)``
        The head's exponent requantizer.
    free : ``In(1)``
        The unit can start a job in this cycle (idle, or issuing the previous job's last entry).
    done : ``In(1)``
        One-cycle pulse, in job order: a job's sum (``sum[tag]``) is final.
    sum : ``In(ArrayLayout(sum_width, 2))``
        The sums of the E values of the jobs of each tag (reset when a job of that tag starts).
    """

    def __init__(self, config: VitcodConfig):
        super().__init__({
            "start": Out(1), "tag": Out(1), "slot": Out(log2_ceil(config.row_slots)), "n": Out(INDEX_WIDTH),
            "max": Out(signed(config.score_width)),
            "multiplier": Out(unsigned(MULTIPLIER_WIDTH)), "shift": Out(unsigned(SHIFT_WIDTH)),
            "free": In(1), "done": In(1),
            "sum": In(data.ArrayLayout(config.sum_width, 2)),
        })


class HeadBanksSignature(wiring.Signature):
    """The two buffer banks between the loader and the row scheduler, from the loader's side.

    Members
    -------
    full : ``Out(banks)``
        Bit b: bank b holds a loaded head, waiting or being computed.
    heads : ``Out(ArrayLayout(head_layout(config), banks))``
        The head of each full bank.
    release : ``In(1)``
        One-cycle pulse: the head of bank ``release_bank`` is done (its last row has gone to the
        output stage); the bank may load again. Heads are released in load order.
    release_bank : ``In(bank_bits)``
    """

    def __init__(self, config: VitcodConfig):
        super().__init__({
            "full": Out(config.banks), "heads": Out(data.ArrayLayout(head_layout(config), config.banks)),
            "release": In(1), "release_bank": In(config.bank_bits),
        })
