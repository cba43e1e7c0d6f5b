"""The host driver of the board (issue 19 item 3): jobs of the accelerators over the UART protocol.

* ``serial_port`` — ``SerialTransport``: pyserial under ``BoardClient`` (``hw/board/protocol.py``);
* ``run`` — ``board_run``: a ``BoardJob`` (``tb/board_jobs.py``) on a real board (``port``) or on the
  board top in simulation (``sim=True``: cocotb + cocotbext-uart, ``tb/board_tb.py``), outputs
  compared with the golden model, registers and counters read, a JSON report.

The layer sits beside ``flows`` (pyproject's [tool.importlinter]): it uses sim, tb, hw, like a flow.
docs/board.md describes the protocol and the commands.
"""

from .run import board_run, vitcod_board_job, linear_board_job

__all__ = ["board_run", "vitcod_board_job", "linear_board_job"]
