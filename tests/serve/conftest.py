"""A trained LeNet-5 for the explain tests: the bundled one, else a small one trained here (seconds)."""

from dataclasses import replace

import pytest

import cnnzoo
from cnnzoo.errors import CnnzooError


def trained_lenet(base) -> str:
    """The bundled `lenet5:mnist` if this installation has it, else a LeNet-5 trained on 6,000 MNIST
    digits for 2 epochs (about 96% test accuracy) under `base` (shared by the explain and serve tests)."""
    try:
        cnnzoo.load("lenet5:mnist")
        return "lenet5:mnist"
    except CnnzooError:
        pass
    from cnnzoo.engine import default_config, train

    path = base / "lenet5-small"
    if not (path / "last.safetensors").exists():
        cfg = replace(default_config("lenet5", "mnist"), train_subset=6000, epochs=2, batch_size=64, lr=0.05)
        train(cfg, run_dir=path, quiet=True)
    return str(path)


@pytest.fixture(scope="session")
def lenet_source(tmp_path_factory) -> str:
    return trained_lenet(tmp_path_factory.getbasetemp())
