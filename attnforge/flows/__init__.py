"""Jobs that cross stages: the ViTCoD flow from a model to ``report.md`` (``vitcod_flow``, with
its cached stages in ``stages`` and its report in ``vitcod_report``), a mask file through the
accelerator's RTL and its cycle model (``vitcod``), tokens through the linear decode datapath (``linear``), Verilog
generation plus lint (``build``), the walking-skeleton demo (``demo``), and the
algorithm jobs behind ``attnforge vitcod|linear|tickets`` (``vitcod_algo``,
``linear_algo``, ``tickets``).

Layer: below the CLI and the benchmarks, above ``sim``/``fpga``/``tb``/``algo``/``hw``
and the formats (the import-linter contract in pyproject.toml). Each function
takes plain values, returns a dict or a path, and prints nothing but progress.
"""
