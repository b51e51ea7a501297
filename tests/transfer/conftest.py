"""Fixtures shared by the transfer tests: a small MNIST source run and the digits target."""

import pytest

from cnnzoo.data import load_dataset
from cnnzoo.engine import TrainConfig, train


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A LeNet-5 trained for one epoch on 1,500 MNIST images (its preprocessing: MNIST's mean/std).
    test_advise.py overrides it with a better-trained one."""
    run = tmp_path_factory.mktemp("source") / "lenet5-mnist"
    cfg = TrainConfig(model="lenet5", data="mnist", epochs=1, batch_size=64, lr=0.1, train_subset=1500)
    train(cfg, run_dir=run, quiet=True)
    return run


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")
