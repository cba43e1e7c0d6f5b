"""A pin-light wrapper so that any component can be placed and routed on a real package.

A MAC line with M=8 already has ~300 ports, more than an iCE40UP5K-SG48 (39
I/Os) or even an ECP5 package offers. The shell feeds every input port of the
wrapped component from one serial pin through a shift register, and folds every
output bit into one registered XOR so that synthesis cannot remove any logic.
The XOR is pipelined (registered XORs of XOR_CHUNK output bits, then their XOR),
so a wide output (512 bits of linear decode) does not add a deep XOR tree behind
the design's output and measure the shell's timing instead of the design's.
Resource reports subtract nothing: they state the shell's own cost
(``shell_ffs``) beside the totals.
"""


from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SynthShell", "XOR_CHUNK"]

#: Output bits per first-stage XOR register.
XOR_CHUNK = 16


class SynthShell(wiring.Component):
    """Wraps ``inner`` behind two data pins.

    Members
    -------
    sin : ``In(1)``
        Serial input; shifted into the chain that drives all of ``inner``'s inputs.
    sout : ``Out(1)``
        Registered XOR of all of ``inner``'s outputs.
    """

    sin: In(1)
    sout: Out(1)

    def __init__(self, inner):
        self._inner = inner
        super().__init__()

    @property
    def input_bits(self) -> int:
        return sum(Value.cast(value).shape().width for _, member, value in self._ports() if member.flow == In)

    @property
    def output_bits(self) -> int:
        return sum(Value.cast(value).shape().width for _, member, value in self._ports() if member.flow == Out)

    @property
    def shell_ffs(self) -> int:
        """Flip-flops the shell adds: the input chain, the first XOR stage (when the outputs need
        more than one chunk) and the output register."""
        chunks = -(-self.output_bits // XOR_CHUNK)
        return self.input_bits + (chunks if chunks > 1 else 0) + 1

    def _ports(self):
        return list(self._inner.signature.flatten(self._inner))

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self._inner
        ins = [Value.cast(v) for _, member, v in self._ports() if member.flow == In]
        outs = [Value.cast(v) for _, member, v in self._ports() if member.flow == Out]
        if not ins or not outs:
            raise ValueError(f"SynthShell needs a component with input and output ports, not {self._inner!r}")
        chain = Signal(sum(len(v) for v in ins))
        m.d.sync += chain.eq(Cat(self.sin, chain[:-1]))
        offset = 0
        for value in ins:
            m.d.comb += value.eq(chain[offset:offset + len(value)])
            offset += len(value)
        bits = Cat(*outs)
        chunks = [bits[lo:lo + XOR_CHUNK].xor() for lo in range(0, len(bits), XOR_CHUNK)]
        if len(chunks) > 1:
            partial = Signal(len(chunks), name="shell_xor")
            m.d.sync += partial.eq(Cat(*chunks))
            chunks = [partial.xor()]
        m.d.sync += self.sout.eq(chunks[0])
        return m
