"""The model these tests look at: the bundled LeNet-5 trained on MNIST (99.45%, `cnnzoo models --pretrained`)."""

import pytest


@pytest.fixture(scope="session")
def lenet_source() -> str:
    return "lenet5:mnist"
