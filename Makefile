# Two entry points for a fresh clone: `make demo` and `make test`.
# TORCH pins the CPU build on this project's machines; on a CUDA machine use e.g.
#   make demo TORCH="torch"
PY ?= python3
TORCH ?= torch==2.13.0
# Where pip looks for torch: empty = the configured index (PyPI's Linux wheel of 2.13.0 is
# the CUDA build, several GB); TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build.
TORCH_INDEX ?=
VENV ?= .venv
BIN := $(VENV)/bin
RESULTS ?= runs/demo.sqlite
# The test run's idle OpenMP threads sleep instead of spinning: CI machines are shared, and
# spinning beside busy processes made a 2-thread run ~25x slower (11.6 min instead of 29 s).
# valbench itself chooses by the machine's load (README, "OpenMP threads and speed").
test test-all: export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-all

$(BIN)/valbench: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/valbench

demo: setup
	$(BIN)/valbench run --valuers dvgs,random --datasets adult --corruptions labels,features --seeds 5 --results $(RESULTS)
	$(BIN)/valbench table 1 --results $(RESULTS)
	$(BIN)/valbench table 2 --results $(RESULTS)
	$(BIN)/valbench table 3 --results $(RESULTS)

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ""
