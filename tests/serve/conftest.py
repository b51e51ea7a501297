"""The model these tests look at: the bundled LeNet-5 trained on MNIST (99.45%, `cnnzoo models --pretrained`)."""

import pytest

import cnnzoo


@pytest.fixture(scope="session")
def lenet_source() -> str:
    return "lenet5:mnist"


@pytest.fixture(scope="module")
def predictor(lenet_source):
    return cnnzoo.load(lenet_source)
