# attnforge: the common jobs. `make test` and `make demo` set everything up first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
AF     := $(VENV)/bin/attnforge
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Parallel test workers (pytest-xdist); each RTL configuration builds in its own folder.
JOBS   ?= auto
DESIGN ?= mac-line
DEVICE ?= ecp5-85k
SIM    ?= verilator

# The slowest tests are listed after every run, so a regression in test time shows.
PYTEST_ARGS ?= -n $(JOBS) --dist worksteal --durations=20

# make demo: the ViTCoD flow (attnforge flow vitcod) with this preset, into this folder.
PRESET ?= small
FLOW_OUT ?= build/flow/vitcod

.PHONY: setup test test-full fuzz demo demo-linear demo-mac-line verilog sim synth bench clean help

help:
	@echo "make demo     the main job: digits ViT -> masks -> accelerator RTL (every head bit exact) -> cycles,"
	@echo "              speedup -> Yosys -> $(FLOW_OUT)/report.md (attnforge flow vitcod --preset $(PRESET)); PRESET=full"
	@echo "make demo-linear  the linear job: byte LM with the datapath's attention -> a head on the decode RTL -> build/flow/linear/report.md"
	@echo "make demo-mac-line  the walking skeleton: generate, lint, simulate and synthesize the MAC line"
	@echo "make test     all tests CI runs (RTL on both simulators, golden models, synthesis); < 10 min"
	@echo "make test-full  make test plus long sweeps and extra RTL configurations (by hand, before a release)"
	@echo "make fuzz     the hypothesis fuzzers (tests/test_fuzz_*.py) with thousands of fresh examples each"
	@echo "make verilog  DESIGN=mac-line           -> build/verilog/"
	@echo "make sim      DESIGN=mac-line SIM=icarus WAVES=1"
	@echo "make synth    DESIGN=mac-line DEVICE=ice40-up5k"
	@echo "make bench    JSON figures under bench/results/"

setup:
	@bash scripts/setup.sh

# lint-imports (scripts/lint_imports.py): the layer contract of pyproject.toml ([tool.importlinter]), before any test runs.
test: setup
	$(PY) scripts/lint_imports.py
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-full: setup
	$(PY) scripts/lint_imports.py
	$(VENV)/bin/pytest $(PYTEST_ARGS) --full

# The fuzzers of make test with the "long" hypothesis profile (conftest.py): thousands of new examples per test.
fuzz: setup
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest -n $(JOBS) tests/test_fuzz_loaders.py tests/test_fuzz_golden.py

demo: setup
	$(AF) flow vitcod --preset $(PRESET) --out $(FLOW_OUT)

demo-linear: setup
	$(AF) flow linear --preset $(PRESET)

demo-mac-line: setup
	$(AF) demo

verilog: setup
	$(AF) verilog $(DESIGN)

sim: setup
	$(AF) sim $(DESIGN) --simulator $(SIM) $(if $(WAVES),--waves)

synth: setup
	$(AF) synth $(DESIGN) --device $(DEVICE)

bench: setup
	$(AF) bench

clean:
	rm -rf build sim_build .pytest_cache
