# ACE door lock: build, test, simulate, benchmark, deploy.
# `make test` and `make sim` create the virtual environment they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MICROPYPATH := .frozen:$(CURDIR)/firmware:$(CURDIR)/boards/unix

.PHONY: all venv test test-fast sim bench mpy clean deploy

all: test

$(STAMP): requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 host_tests

sim: $(STAMP)
	$(BIN)/lockctl sim --default

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

mpy: $(STAMP)
	$(BIN)/python tools/build_mpy.py --out build/mpy

deploy: $(STAMP)
	$(BIN)/lockctl deploy --port $(PORT) --bundle $(BUNDLE)

clean:
	rm -rf build .pytest_cache
