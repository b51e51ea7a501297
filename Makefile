# The two commands a newcomer types (README): `make train` and `make test`.
# Both create .venv with the CPU build of PyTorch first (see README for a GPU build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup system-deps train test lint bench test-peers

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

# timm's and torchvision's own model tests on cnnzoo's models, timm loading export folders, torch.hub.
# timm and torchvision pull a CUDA build of torch, so they live in a side environment of their own, built
# once (pip takes torch and torchvision from local wheels where the machine has them, timm from PyPI)
# with this package installed into it; `make test` and CI never need it. Without the two, the tests skip.
PEERS := .venv-peers
PEER_TESTS := tests/test_timm_compat.py tests/test_torchvision_models.py tests/test_torchvision_compat.py tests/test_hub.py

$(PEERS)/bin/timm-ready: pyproject.toml
	$(PYTHON) -m venv $(PEERS)
	echo '*' > $(PEERS)/.gitignore  # the environment is no part of the repository
	$(PEERS)/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1" timm pytest
	$(PEERS)/bin/pip install -q -e .
	touch $@

test-peers: $(PEERS)/bin/timm-ready
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PEERS)/bin/python -m pytest -q -rP -p no:cacheprovider $(PEER_TESTS)
