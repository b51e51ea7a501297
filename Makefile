# The two commands a newcomer types (README): `make train` and `make test`.
# Both create .venv with the CPU build of PyTorch first (see README for a GPU build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup system-deps train test lint bench

$(BIN)/cnnzoo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/cnnzoo

# Fonts for the glyph datasets and Fashion-MNIST (Debian/Ubuntu; skipped elsewhere with a note).
system-deps:
	bash scripts/install-system-deps.sh

train: setup
	$(BIN)/cnnzoo train lenet5 --data mnist

test: setup system-deps
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/bench_train.py
