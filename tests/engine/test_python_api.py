"""`cnnzoo.train(...)`: the trainer as one Python call, through the package's lazy facade."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import cnnzoo
from cnnzoo.data import load_dataset
from cnnzoo.engine import evaluate_model
from cnnzoo.engine.setup import make_loaders
from cnnzoo.errors import CnnzooError

TINY = dict(epochs=2, train_subset=500, batch_size=50, quiet=True)


def test_train_returns_the_model_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder would be runs/ here
    result = cnnzoo.train(
        "lenet5", data="mnist", epochs=2, train_subset=2000, batch_size=64, lr=0.1, quiet=True
    )
    assert list(tmp_path.iterdir()) == [] and result.run_dir is None
    assert [r["epoch"] for r in result.history] == [1, 2] and result.epochs_run == 2
    assert result.final_acc == result.history[-1]["test_acc"] > 80  # 2,000 images, 2 epochs: far above chance
    assert result.best_acc == max(r["test_acc"] for r in result.history)
    model = result.model
    assert not model.training and model.model_name == "lenet5"
    # the model handed back is the one the figures are of (the recipe's weight average, fp32 evaluation)
    splits = load_dataset("mnist")
    info = splits.info
    _, test = make_loaders(
        splits,
        batch_size=50,
        image_size=28,
        channels=1,
        mean=info.mean,
        std=info.std,
        augment="none",
        device=torch.device("cpu"),
        seed=0,
    )
    assert evaluate_model(model, test)["accuracy"] == pytest.approx(result.final_acc, abs=0.02)


def test_every_config_field_is_a_keyword_and_out_makes_a_run(tmp_path):
    result = cnnzoo.train(
        "lenet5", "mnist", out=tmp_path / "run", optimizer="adamw", lr=2e-3, ema=0, tensorboard=False, **TINY
    )
    assert result.run_dir == tmp_path / "run" and (tmp_path / "run" / "summary.csv").exists()
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (recorded["optimizer"], recorded["lr"], recorded["ema"], recorded["epochs"]) == (
        "adamw",
        2e-3,
        0.0,
        2,
    )
    with pytest.raises(CnnzooError, match="already holds a run"):
        cnnzoo.train("lenet5", out=tmp_path / "run", **TINY)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epoch": 3}, r"cnnzoo.train: unknown option 'epoch' \(did you mean epochs"),
        ({"epochs": "3"}, r"'epochs' should be int, got '3'"),
        ({"tta": 1}, r"'tta' should be bool"),
        ({"lr": -1.0}, "learning rate must be positive"),
    ],
)
def test_a_bad_keyword_is_one_clear_error(options, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CnnzooError, match=message):
        cnnzoo.train("lenet5", **options)
    assert list(tmp_path.iterdir()) == []


def test_the_facade_names_the_functions_and_stays_cheap():
    import cnnzoo.engine.train  # noqa: F401  (the module of the same name, inside its own package)

    assert (
        {"train", "finetune"} <= set(cnnzoo.__all__) and callable(cnnzoo.train) and callable(cnnzoo.finetune)
    )
    assert (
        cnnzoo.train.__module__ == "cnnzoo.engine.api" and cnnzoo.finetune.__module__ == "cnnzoo.transfer.api"
    )
    code = "import sys, cnnzoo; assert 'torch' not in sys.modules; assert 'train' in dir(cnnzoo)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_module_trains_a_network_outside_the_zoo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 12 * 12, 10),
    )
    before = net[0].weight.detach().clone()
    result = cnnzoo.fit_module(net, data="mnist", epochs=2, train_subset=2000, batch_size=64, lr=0.05)
    assert list(tmp_path.iterdir()) == [] and result.run_dir is None
    assert result.model is net and not net.training
    assert not torch.equal(net[0].weight.detach(), before)  # the caller's network is the one trained
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.final_acc == result.history[-1]["test_acc"] > 80  # far above chance (10%)
    assert cnnzoo.fit_module.__module__ == "cnnzoo.engine.api" and "fit_module" in cnnzoo.__all__


def test_fit_module_refuses_what_is_not_a_module():
    with pytest.raises(CnnzooError, match="model must be a torch.nn.Module, not str"):
        cnnzoo.fit_module("lenet5")
    with pytest.raises(CnnzooError, match=r"cnnzoo.fit_module: unknown option 'epoch'"):
        cnnzoo.fit_module(torch.nn.Linear(1, 1), epoch=3)
