"""The learning-rate range test: an exponential sweep, a suggestion inside it, the model left untouched."""

import math

import pytest
import torch

from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.data.base import Splits
from cnnzoo.engine.config import default_config
from cnnzoo.engine.lr_find import _centred, _result, lr_find
from cnnzoo.engine.setup import make_loaders
from cnnzoo.errors import CnnzooError
from cnnzoo.models import create_model


@pytest.fixture(scope="module")
def loader():
    splits = load_dataset("mnist")
    keep = torch.arange(512)
    splits = Splits(splits.train.subset(keep), splits.test.subset(keep[:64]))
    info = splits.info
    common = dict(
        image_size=28, channels=1, mean=info.mean, std=info.std, augment="none", device="cpu", seed=0
    )
    return make_loaders(splits, batch_size=32, **common)[0]


def test_sweep_suggests_a_rate_inside_it_and_leaves_the_model(loader, tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cfg = default_config("lenet5", "mnist", batch_size=32)
    result = lr_find(model, loader, cfg, start_lr=1e-4, end_lr=10.0, steps=60)
    assert math.isfinite(result.suggestion) and 1e-4 <= result.suggestion <= 10.0
    assert result.lrs[0] == pytest.approx(1e-4) and all(
        a < b for a, b in zip(result.lrs, result.lrs[1:], strict=False)
    )
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) <= 60
    assert result.suggestion <= result.min_lr  # the steepest descent comes before the minimum
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    png = result.plot(tmp_path / "lr.png", "LR range test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_suggestion_is_where_the_loss_falls_fastest():
    rates = torch.logspace(-6, 1, 200).numpy()
    # a loss flat at 2.3, falling fastest at 1e-2, flat again, then exploding past 1: as a real sweep
    x = torch.log10(torch.from_numpy(rates))
    loss = (2.3 - 2.0 * torch.sigmoid(4 * (x + 2)) + torch.relu(x) ** 2 * 10).tolist()
    result = _result(rates, loss, stopped_early=False)
    assert result.suggestion == pytest.approx(1e-2, rel=0.2)
    assert _centred([1.0] * 50) == pytest.approx([1.0] * 50)  # the centred average keeps a constant


def test_a_diverging_sweep_stops_early(loader):
    model = create_model("lenet5", num_classes=10)
    cfg = default_config("lenet5", "mnist", grad_clip=0.0)
    result = lr_find(model, loader, cfg, start_lr=1e-3, end_lr=1e6, steps=80)
    assert result.stopped_early and len(result.lrs) < 80


def test_bad_sweeps_are_one_clear_error(loader):
    model = create_model("lenet5", num_classes=10)
    cfg = default_config("lenet5", "mnist")
    with pytest.raises(CnnzooError, match="0 < start < end"):
        lr_find(model, loader, cfg, start_lr=1.0, end_lr=0.1)
    with pytest.raises(CnnzooError, match="too short"):
        lr_find(model, loader, cfg, steps=3)


def test_lr_find_command(tmp_path, capsys):
    png = tmp_path / "plots" / "lr_find.png"
    args = [
        "lr-find",
        "lenet5",
        "--data",
        "mnist",
        "--train-subset",
        "640",
        "--steps",
        "40",
        "--out",
        str(png),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("recipe for 640 training images")
    suggestion = next(line for line in out if line.startswith("suggested learning rate"))
    rate = float(suggestion.split()[3])
    assert 1e-6 <= rate <= 10 and "steepest descent" in suggestion
    assert out[-1].endswith(f"cnnzoo train lenet5 --data mnist --lr {rate:.3g} --train-subset 640")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["lr-find", "--data", "mnist"]) == 2
    assert "name a model" in capsys.readouterr().err
    assert main(["lr-find", "lenet5", "--data", "mnist", "--lr", "0.1"]) == 2
    assert "the sweep chooses the rate" in capsys.readouterr().err
