"""A simulation-only player around the model-level accelerator: whole programs at the simulator's speed.

The cocotb testbench (``tb/vitmodel_tb.py``) steps the design cycle by cycle from Python, about 6,000
cycles a second on Verilator: a 4-layer digits ViT image (about 1.3 million cycles) takes minutes.
The player keeps the per-cycle work in the simulator: a Verilog module (text generated here, used only
as a simulation top, never synthesized) holds the program's host beats in a memory read from a hex file
(``$readmemh``), offers them on ``i`` every cycle (full rate, like the testbench's full-rate test),
takes every output beat (``o.ready`` held high) into a second memory, and records the cycle of every
host-beat transfer and of every step of the ``retired`` count. cocotb only resets it, pulses ``load``,
waits for ``done`` and pulses ``dump``; the testbench then reads the hex files the player wrote and
checks them as the cycle-by-cycle test does (every STOREd tensor bit for bit, every instruction's cycles
against the cycle model).

Cycle numbering: a transfer at the clock edge that ends cycle ``c`` is recorded as ``c``, and a step of
``retired`` made at that edge as ``c + 1`` (when it is first visible): the same numbering as
``tb.streams.StreamBench``, so the per-instruction cycles (header transfer to the next header transfer,
the last one to its retirement) are the cycle-by-cycle test's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attnforge.errors import ConfigError
from attnforge.hw.vitmodel import VitModelConfig
from attnforge.hw.vitmodel.accelerator import VitModelAccelerator

from .streams import unpack

__all__ = ["PLAYER_TOP", "Player", "player", "write_program_hex", "read_hex", "output_rows"]

#: The player module's name (the simulation top when the player runs).
PLAYER_TOP = "vit_model_player"

#: Most beats a player holds unless told otherwise (a 4-layer digits image needs about 150,000).
DEFAULT_DEPTH = 1 << 20


@dataclass(frozen=True)
class Player:
    """A simulation top around the generated ``core`` module: its name, Verilog text and a build tag."""
    top: str
    verilog: str
    tag: str
    depth: int


def player(config: VitModelConfig, depth: int = DEFAULT_DEPTH, core: str = "vit_model") -> Player:
    """The player for ``config``'s accelerator, holding up to ``depth`` host beats and output beats."""
    if depth < 1 or depth & (depth - 1):
        raise ConfigError(f"player depth {depth} must be a power of two >= 1")
    acc = VitModelAccelerator(config)
    w = config.beat_width
    ow = acc.o.payload.shape().size
    ab = depth.bit_length() - 1                # address bits
    text = f"""// Simulation-only player of {core} (attnforge tb/vitmodel_player.py); not for synthesis.
module {PLAYER_TOP}(clk, rst, load, dump, beats, instructions, done, error, taken, given, retired);
  input  wire        clk;
  input  wire        rst;
  input  wire        load;
  input  wire        dump;
  input  wire [31:0] beats;
  input  wire [31:0] instructions;
  output wire        done;
  output wire        error;
  output reg  [31:0] taken;
  output reg  [31:0] given;
  output wire [31:0] retired;
  reg [{w - 1}:0] prog [0:{depth - 1}];
  reg [{ow - 1}:0] outm [0:{depth - 1}];
  reg [31:0] tcyc [0:{depth - 1}];
  reg [31:0] rcyc [0:{depth - 1}];
  reg [31:0] cyc;
  reg [31:0] last_retired;
  wire i_valid = taken < beats;
  wire i_ready;
  wire o_valid;
  wire [{ow - 1}:0] o_payload;
  {core} core (
    .clk(clk), .rst(rst),
    .i__payload(prog[taken[{ab - 1}:0]]), .i__valid(i_valid), .i__ready(i_ready),
    .o__payload(o_payload), .o__valid(o_valid), .o__ready(1'b1),
    .busy(), .error(error), .retired(retired)
  );
  assign done = error | (retired == instructions);
  always @(posedge clk) begin
    if (load) $readmemh("program.hex", prog, 0, beats - 1);
    if (rst) begin
      cyc <= 32'd0; taken <= 32'd0; given <= 32'd0; last_retired <= 32'd0; rcyc[0] <= 32'd0;
    end else begin
      cyc <= cyc + 32'd1;
      if (i_valid & i_ready) begin
        tcyc[taken[{ab - 1}:0]] <= cyc;
        taken <= taken + 32'd1;
      end
      if (o_valid) begin
        if (given < {depth}) outm[given[{ab - 1}:0]] <= o_payload;
        given <= given + 32'd1;
      end
      if (retired != last_retired) begin
        if (retired < {depth}) rcyc[retired[{ab - 1}:0]] <= cyc;
        last_retired <= retired;
      end
    end
    if (dump) begin
      if (given > 0) $writememh("out.hex", outm, 0, given - 1);
      if (taken > 0) $writememh("tcyc.hex", tcyc, 0, taken - 1);
      $writememh("rcyc.hex", rcyc, 0, retired);
    end
  end
endmodule
"""
    return Player(PLAYER_TOP, text, f"player{depth}", depth)


def write_program_hex(path, beats, width: int) -> Path:
    """The host beats as ``$readmemh`` input: one beat per line, ``width`` bits in hex."""
    digits = (width + 3) // 4
    Path(path).write_text("".join(f"{b:0{digits}x}\n" for b in beats))
    return Path(path)


def read_hex(path) -> list[int]:
    """``$writememh``'s words in order (comments and address lines skipped; x/z digits refused)."""
    words = []
    for line in Path(path).read_text().splitlines():
        line = line.split("//")[0].strip()
        if not line or line.startswith("@"):
            continue
        for tok in line.split():
            if any(c in "xXzZ" for c in tok):
                raise AssertionError(f"{path}: undefined bits in {tok!r} (a word the player never wrote)")
            words.append(int(tok, 16))
    return words


def output_rows(path, config: VitModelConfig) -> list:
    """The output beats of ``out.hex`` as the testbench's sink decodes them (P lanes each)."""
    layout = VitModelAccelerator(config).o.payload.shape()
    return [unpack(layout, w) for w in read_hex(path)]

