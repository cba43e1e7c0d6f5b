"""The board: a UART, the framed host protocol and its bridge to the AXI-wrapped accelerators, the board top.

* ``protocol`` — frames, CRC-8, ``BoardClient`` (the host side, over any transport);
* ``bridge`` — ``UartBridge``: frames to AXI4-Lite and AXI4-Stream;
* ``top`` — ``BoardTop``: UART pins, the bridge, the wrapped accelerator, LEDs;
* ``pll`` — PLL parameters and instances for iCE40 (SB_PLL40) and ECP5 (EHXPLLL).

docs/board.md describes them.
"""
