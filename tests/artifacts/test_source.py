"""One resolver of sources: every kind opens to the same network, and every command accepts every kind."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.artifacts.source import KINDS, open_source, parse_source, provenance
from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.errors import CnnzooError
from cnnzoo.inference.export import export_model
from cnnzoo.models._pretrained import pretrained_checkpoint, pretrained_entry


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """lenet5:mnist as each kind of source: bundled, a run folder, one checkpoint, an export folder, a .pth."""
    root = tmp_path_factory.mktemp("sources")
    weights = pretrained_checkpoint("lenet5:mnist")
    run = root / "run"
    run.mkdir()
    shutil.copy(weights, run / "best.safetensors")
    shutil.copy(weights.with_suffix(".json"), run / "best.json")
    export_model("lenet5:mnist", root / "exported", formats="safetensors")
    pth = root / "lenet5.pth"
    torch.save(open_source("lenet5:mnist").model.state_dict(), pth)
    return {
        "bundled": "lenet5:mnist",
        "run": str(run),
        "checkpoint": str(run / "best.safetensors"),
        "export": str(root / "exported"),
        "weights": str(pth),
    }


def test_each_kind_is_recognised(sources):
    for kind, spec in sources.items():
        assert parse_source(spec).kind == kind
    assert parse_source("torchvision:resnet18").kind == "torchvision"
    assert parse_source(sources["run"] + "/best.json").kind == "checkpoint"
    assert set(sources) | {"torchvision"} == set(KINDS)
    with pytest.raises(CnnzooError, match="checkpoint not found: no/such/run .*export folder"):
        parse_source("no/such/run")


def test_every_kind_opens_to_the_same_network(sources):
    x = torch.rand(4, 1, 28, 28)
    reference = open_source("lenet5:mnist").model(x)
    for kind, spec in sources.items():
        opened = open_source(spec)
        assert opened.meta["classes"] == [str(i) for i in range(10)], kind
        assert opened.meta["image_size"] == 28 and opened.meta["in_chans"] == 1, kind
        torch.testing.assert_close(opened.model(x), reference, msg=kind)


def test_provenance_is_computed_once_for_every_kind(sources):
    bundled = pretrained_entry("lenet5:mnist")
    assert provenance("lenet5:mnist")["accuracy"] == bundled.accuracy
    assert provenance("lenet5:mnist")["command"] == bundled.record["command"]
    assert provenance(sources["weights"])["accuracy"] is None  # a bare state dict records nothing
    assert provenance(sources["export"])["dataset"] == "mnist"


@pytest.mark.parametrize("kind", ["bundled", "run", "checkpoint", "export", "weights"])
def test_every_command_accepts_every_kind(kind, sources, tmp_path, capsys):
    """predict, evaluate, explain and export take the same sources (evaluate once refused export folders)."""
    spec = sources[kind]
    digit = load_dataset("mnist").test.images[0].numpy().squeeze()
    image = tmp_path / "digit.png"
    Image.fromarray(np.asarray(digit, dtype=np.uint8)).save(image)
    assert main(["predict", spec, str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] == "7"
    data = [] if kind in ("bundled", "run", "checkpoint", "export") else ["--data", "mnist"]
    assert main(["evaluate", spec, *data, "--json", "--confusion-png", str(tmp_path / "c.png")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 98.5
    assert main(["explain", spec, str(image), "--method", "filters", "--out", str(tmp_path / "x")]) == 0
    assert main(["export", spec, "--format", "safetensors", "--out", str(tmp_path / "e")]) == 0
