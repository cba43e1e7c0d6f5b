"""Deliberately broken designs, to show that a testbench's scoreboard can fail."""

from amaranth.hdl import Const, Fragment, Module, Mux, Signal, Value
from amaranth.hdl._ast import Assign    # the statement class (not re-exported by amaranth.hdl in 0.5)
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from attnforge.hw.common import mux_tree
from attnforge.hw.common.axi import AxisCommandInput
from attnforge.hw.vitcod.scheduler import RowScheduler

__all__ = ["FlipOutputBit", "GlitchWhileStalled", "ExtraBeat", "DropValidWhileStalled", "WrapIntoOlderHead",
           "SparserReadsDenserHalfRow", "EnableWithdrawsOffer"]


class FlipOutputBit(wiring.Component):
    """``inner`` with every port passed through, except that one bit (``bit``, the lowest by
    default) of one output (``o.payload`` by default) is flipped. Same signature, same Verilog
    ports."""

    def __init__(self, inner, path=("o", "payload"), bit: int = 0):
        self._inner = inner
        self._path = tuple(path)
        self._bit = bit
        super().__init__(dict(inner.signature.members))

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self._inner
        outer = {path: Value.cast(value) for path, _, value in self.signature.flatten(self)}
        flipped = False
        for path, member, value in self._inner.signature.flatten(self._inner):
            value = Value.cast(value)
            if member.flow == In:
                if not isinstance(value, Const):      # (the ready of an always_ready stream: a constant)
                    m.d.comb += value.eq(outer[path])
            elif isinstance(outer[path], Const):      # (an always_ready stream's ready: a constant)
                continue
            elif path == self._path:
                if not 0 <= self._bit < len(value):
                    raise ValueError(f"output {'.'.join(map(str, path))} has {len(value)} bits, no bit {self._bit}")
                m.d.comb += outer[path].eq(value ^ (1 << self._bit))
                flipped = True
            else:
                m.d.comb += outer[path].eq(value)
        if not flipped:
            raise ValueError(f"{self._inner!r} has no output port {'.'.join(map(str, self._path))}")
        return m


class ExtraBeat(wiring.Component):
    """``inner`` with one output beat too many: after its output stream (``o`` by default) has
    made a transfer and then been quiet (``valid`` low) for ``quiet`` cycles, the last payload
    comes out once more. Every beat the golden model expects is right: only a check that nothing
    comes out after the last expected beat can see it. The extra beat keeps the stream protocol:
    offered, it stays (payload and ``valid``) until taken, and ``inner`` is held (``ready`` low)
    meanwhile, so a monitor of the handshake sees nothing wrong."""

    def __init__(self, inner, stream="o", quiet: int = 4):
        self._inner, self._stream, self._quiet = inner, stream, quiet
        super().__init__(dict(inner.signature.members))

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self._inner
        name = self._stream
        outer = {path: Value.cast(value) for path, _, value in self.signature.flatten(self)}
        valid, ready, payload = (outer[(name, part)] for part in ("valid", "ready", "payload"))
        inner_valid = Value.cast(getattr(self._inner, name).valid)
        inner_payload = Value.cast(getattr(self._inner, name).payload)
        last = Signal.like(inner_payload)
        seen, extra = Signal(), Signal()
        idle = Signal(range(self._quiet + 2))
        with m.If(inner_valid & ready & ~extra):
            m.d.sync += [last.eq(inner_payload), seen.eq(1), idle.eq(0)]
        with m.Elif(seen & ~inner_valid & ~extra & (idle <= self._quiet)):
            m.d.sync += idle.eq(idle + 1)
        with m.If(idle == self._quiet):
            m.d.sync += extra.eq(1)
        with m.If(extra & ready):
            m.d.sync += [extra.eq(0), seen.eq(0), idle.eq(0)]
        for path, member, value in self._inner.signature.flatten(self._inner):
            value = Value.cast(value)
            if path == (name, "ready"):
                m.d.comb += value.eq(ready & ~extra)
            elif member.flow == In:
                m.d.comb += value.eq(outer[path])
            elif path == (name, "valid"):
                m.d.comb += valid.eq(value | extra)
            elif path == (name, "payload"):
                m.d.comb += payload.eq(Mux(extra, last, value))
            else:
                m.d.comb += outer[path].eq(value)
        return m


class GlitchWhileStalled(wiring.Component):
    """``inner`` with the lowest bit of one output (``payload``, ``rdata`` by default) toggling in
    alternate cycles while its channel is stalled (``valid`` high, ``ready`` low). At a transfer
    the payload is right: only a protocol monitor (payload stable while stalled) can see it."""

    def __init__(self, inner, payload=("rdata",), valid=("rvalid",), ready=("rready",)):
        self._inner = inner
        self._paths = tuple(payload), tuple(valid), tuple(ready)
        super().__init__(dict(inner.signature.members))

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self._inner
        payload_path, valid_path, ready_path = self._paths
        outer = {path: Value.cast(value) for path, _, value in self.signature.flatten(self)}
        toggle = Signal()
        m.d.sync += toggle.eq(~toggle)
        glitch = outer[valid_path] & ~outer[ready_path] & toggle
        for path, member, value in self._inner.signature.flatten(self._inner):
            value = Value.cast(value)
            if member.flow == In:
                m.d.comb += value.eq(outer[path])
            elif path == payload_path:
                m.d.comb += outer[path].eq(value ^ glitch)
            else:
                m.d.comb += outer[path].eq(value)
        return m


class DropValidWhileStalled(wiring.Component):
    """``inner`` with one output stream's ``valid`` (``o.valid`` by default) dropped in the cycle
    after a stall (``valid`` high, ``ready`` low) while ``ready`` is still low, so a long stall
    shows valid 1, 0, 1, 0...: a broken handshake. No beat is lost or changed (the inner block
    still holds it), so only a stream-rule check sees it: the formal proof of "valid held until
    ready" (``tb/formal.py``) fails on it."""

    def __init__(self, inner, valid=("o", "valid"), ready=("o", "ready")):
        self._inner = inner
        self._paths = tuple(valid), tuple(ready)
        super().__init__(dict(inner.signature.members))

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self._inner
        valid_path, ready_path = self._paths
        outer = {path: Value.cast(value) for path, _, value in self.signature.flatten(self)}
        was_stalled = Signal()
        m.d.sync += was_stalled.eq(outer[valid_path] & ~outer[ready_path])
        for path, member, value in self._inner.signature.flatten(self._inner):
            value = Value.cast(value)
            if member.flow == In:
                m.d.comb += value.eq(outer[path])
            elif path == valid_path:
                m.d.comb += outer[path].eq(value & ~(was_stalled & ~outer[ready_path]))
            else:
                m.d.comb += outer[path].eq(value)
        return m


class WrapIntoOlderHead(RowScheduler):
    """A ViTCoD ``RowScheduler`` whose stages move on at the end of a head without the "not the
    newest" term of ``wrap``: a stage that has finished the newest head then walks into the next
    bank whenever that one is adopted, although that bank holds an *older* head (one still in the
    softmax, pv or output), and does its rows again. Each stage's ``NAME_wrap`` assignment is
    replaced in the elaborated design; everything else is the real scheduler."""

    WALKS = ("score0", "score1", "pv0", "pv1", "softmax", "output")

    def elaborate(self, platform):
        frag = Fragment.get(super().elaborate(platform), platform)
        by_name = _assigned_signals(frag)
        B = self.config.banks
        adopted = [by_name[f"adopted{b}"] for b in range(B)]
        nq_local = [by_name[f"nq_local{b}"] for b in range(B)]
        replaced = 0
        for walk in self.WALKS:
            wrap, bank, row = (by_name[f"{walk}_{part}"] for part in ("wrap", "bank", "row"))
            following = by_name[f"{walk}_following"]
            replaced += _replace_comb(frag, wrap, (row == mux_tree(nq_local, bank)) & mux_tree(adopted, following))
        if replaced != len(self.WALKS):
            raise RuntimeError(f"WrapIntoOlderHead replaced {replaced} wrap assignments, expected {len(self.WALKS)}")
        return frag


def _assigned_signals(frag: Fragment) -> dict:
    """Every signal a statement of ``frag`` assigns, by name."""
    return {sig.name: sig for statements in frag.statements.values() for stmt in statements
            for sig in stmt._lhs_signals()}


def _replace_comb(frag: Fragment, signal, value) -> int:
    """Replace each combinational assignment of the whole ``signal`` by ``signal.eq(value)``; how many."""
    statements, replaced = frag.statements["comb"], 0
    for k, stmt in enumerate(statements):
        if isinstance(stmt, Assign) and stmt.lhs is signal:
            statements[k] = signal.eq(value)
            replaced += 1
    return replaced


class SparserReadsDenserHalfRow(RowScheduler):
    """A ViTCoD ``RowScheduler`` (one tile) whose Sparser Engine's pointer walk reads one pointer too
    early: ``ptr[2i + k]`` instead of ``ptr[2i + 1 + k]``, so its jobs get the Denser Engine's half-row
    (its keys and CSR base) instead of their own. Every control signal is the real scheduler's (the
    control proof does not look at pointer values): only the job data properties can see it. Each
    ``pointer_entry1_k`` assignment is replaced in the elaborated design."""

    def elaborate(self, platform):
        frag = Fragment.get(super().elaborate(platform), platform)
        by_name = _assigned_signals(frag)
        row = by_name["pointer1_row"]
        replaced = sum(_replace_comb(frag, by_name[f"pointer_entry1_{k}"], row * 2 + k) for k in range(2))
        if replaced != 2:
            raise RuntimeError(f"SparserReadsDenserHalfRow replaced {replaced} pointer entry assignments, expected 2")
        return frag


class EnableWithdrawsOffer(AxisCommandInput):
    """An ``AxisCommandInput`` as it was before ``enable`` kept an offer: ``cmd.valid``, ``data.valid``
    and ``tready`` gated by ``enable`` alone (its ``open`` assignment replaced by ``enable``), so a
    host clearing ENABLE while a beat waits on ``cmd`` or ``data`` withdraws it: a broken handshake
    that no beat count sees (the beat is offered again once ENABLE is back)."""

    def elaborate(self, platform):
        frag = Fragment.get(super().elaborate(platform), platform)
        replaced = _replace_comb(frag, _assigned_signals(frag)["open"], self.enable)
        if replaced != 1:
            raise RuntimeError(f"EnableWithdrawsOffer replaced {replaced} open assignments, expected 1")
        return frag
