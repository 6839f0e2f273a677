# ACE door lock: build, test, simulate, benchmark, deploy.
# `make test` and `make sim` install the system packages the build needs
# (when they can), create the virtual environment and build the simulator's
# MicroPython (build/mp/) from pinned source; each step is cached.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSSTAMP := build/.sysdeps
MP := build/mp/micropython
export MICROPYPATH := .frozen:$(CURDIR)/boards/unix

.PHONY: all venv sysdeps mp test test-fast sim bench mpy clean deploy

all: test

$(SYSSTAMP): tools/sysdeps.sh
	bash tools/sysdeps.sh
	@mkdir -p build && touch $(SYSSTAMP)

sysdeps: $(SYSSTAMP)

# After sysdeps: a requirement builds from source with the tools it installs.
$(STAMP): requirements.txt pyproject.toml $(SYSSTAMP)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Always asked; tools/build_mp.py rebuilds only when an input changed.
mp: $(SYSSTAMP)
	$(PY) tools/build_mp.py

test: $(STAMP) mp
	$(BIN)/python -m pytest -q -n 2 host_tests

sim: $(STAMP) mp
	$(BIN)/lockctl sim --default

bench: $(STAMP) mp
	$(BIN)/python bench/run_all.py

mpy: $(STAMP) mp
	$(BIN)/python tools/build_mpy.py --out build/mpy

# make deploy PORT=/dev/ttyUSB0 BUNDLE=mylock [BOARD=esp32|esp32c3|unix]
BOARD ?= esp32
deploy: $(STAMP) mp
	$(BIN)/lockctl deploy --board $(BOARD) --port $(PORT) --bundle $(BUNDLE)

clean:
	rm -rf build .pytest_cache
