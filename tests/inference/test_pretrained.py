"""Bundled pretrained weights: present, verified, accurate, and accepted wherever a checkpoint is."""

import json
import shutil

import pytest
import torch

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.engine.evaluate import evaluate_checkpoint
from cnnzoo.errors import CnnzooError
from cnnzoo.models import _pretrained as pretrained
from cnnzoo.transfer import load_source

REQUIRED = ("lenet5:mnist", "lenet5:glyphs-latin", "resnet20:glyphs-latin")


def test_the_manifest_has_what_the_issue_asks_for():
    entries = {e.name: e for e in pretrained.list_pretrained()}
    missing = [n for n in REQUIRED if n not in entries]
    assert not missing, (
        f"bundled weights missing: {missing} (python scripts/make_pretrained.py {' '.join(missing)})"
    )
    assert any(e.dataset == "fashion-mnist" for e in entries.values())
    assert entries["lenet5:mnist"].accuracy >= 99.3
    for e in entries.values():
        r = e.record
        assert r["command"].startswith(f"cnnzoo train {e.model} --data {e.dataset}")
        assert r["recreate"] == f"python scripts/make_pretrained.py {e.name}"
        assert r["recipe"]["model"] == e.model and r["preprocessing"]["mean"] and len(e.sha256) == 64
        assert e.weights.stat().st_size == r["bytes"]
    assert sum(e.weights.stat().st_size for e in entries.values()) < 4 * 2**20  # a few MB in all


def test_every_file_matches_its_sha256():
    for e in pretrained.list_pretrained():
        assert pretrained.pretrained_checkpoint(e.name) == e.weights


def test_recorded_mnist_accuracy_is_what_the_file_gives():
    metrics, _ = evaluate_checkpoint(pretrained.pretrained_checkpoint("lenet5:mnist"), "mnist", device="cpu")
    assert round(metrics["accuracy"], 2) == pretrained.pretrained_entry("lenet5:mnist").accuracy


def test_create_model_pretrained_equals_load():
    model = cnnzoo.create_model("lenet5", pretrained="mnist").eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), cnnzoo.load("lenet5:mnist").model(x), rtol=0, atol=0)
    cfg = model.pretrained_cfg
    assert (
        cfg["tag"] == "mnist" and cfg["classes"] == [str(i) for i in range(10)] and cfg["mean"] == (0.1307,)
    )
    feats = cnnzoo.create_model("lenet5", pretrained="mnist", num_classes=0).eval()
    with torch.no_grad():
        assert feats(x).shape == (3, 84)
    other = cnnzoo.create_model("lenet5", pretrained="glyphs-latin", num_classes=5, in_chans=3)
    assert other.num_classes == 5 and other.pretrained_cfg["input_size"] == (3, 28, 28)


def test_unknown_and_corrupt_bundled_weights_are_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(CnnzooError, match="did you mean lenet5:mnist"):
        cnnzoo.load("lenet5:mnsit")
    with pytest.raises(CnnzooError, match="no bundled weights"):
        cnnzoo.create_model("vgg16", pretrained="imagenet")
    copy = tmp_path / "pretrained"
    shutil.copytree(pretrained.ASSETS, copy)
    data = bytearray((copy / "lenet5-mnist.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (copy / "lenet5-mnist.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "ASSETS", copy)
    with pytest.raises(CnnzooError, match="corrupt"):
        cnnzoo.load("lenet5:mnist")


def test_transfer_takes_a_bundled_name():
    src = load_source("lenet5:glyphs-latin", num_classes=33, in_chans=1)
    assert src.meta["source"] == "lenet5:glyphs-latin" and src.meta["source_num_classes"] == 52
    assert src.report.new == ["classifier.4.weight", "classifier.4.bias"]
    assert "features.1.weight" in src.report.loaded  # pretrained_cfg["first_conv"]


def test_cli_models_pretrained(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "lenet5:mnist" in out and f"{pretrained.pretrained_entry('lenet5:mnist').accuracy:.2f}%" in out
    assert main(["models", "--pretrained", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"lenet5:mnist"}


def test_the_recorded_command_and_make_pretrained_give_the_recorded_recipe():
    """The manifest's `command` (and `scripts/make_pretrained.py`'s recipe) re-run the recipe the bundled file
    was trained with, today: a later change of `default_config` must not silently change what they train."""
    import importlib.util
    import shlex
    from pathlib import Path

    from cnnzoo.cli import build_parser, train_overrides
    from cnnzoo.engine.config import default_config

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_pretrained.py"
    spec = importlib.util.spec_from_file_location("make_pretrained", script)
    make_pretrained = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_pretrained)
    for e in pretrained.list_pretrained():
        recorded = e.record["recipe"]
        args = build_parser().parse_args(shlex.split(e.record["command"])[1:])
        from_command = default_config(args.model, args.data, **train_overrides(args)).to_dict()
        model, data, overrides, _, _ = make_pretrained.SPECS[e.name]
        from_script = default_config(model, data, **overrides).to_dict()
        assert e.record["command"] == make_pretrained.train_command(default_config(model, data, **overrides))
        for made, how in ((from_command, e.record["command"]), (from_script, e.record["recreate"])):
            changed = {k: (v, made.get(k)) for k, v in recorded.items() if made.get(k) != v}
            assert not changed, f"{e.name}: `{how}` now trains another recipe (recorded, now): {changed}"


def test_cli_evaluate_takes_a_bundled_name(tmp_path, capsys):
    """`cnnzoo evaluate lenet5:mnist` checks the manifest's figure; no plot lands in the package's folder."""
    assert main(["evaluate", "lenet5:mnist", "--data", "mnist", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert round(result["accuracy"], 2) == pretrained.pretrained_entry("lenet5:mnist").accuracy
    assert result["confusion_png"] is None and not list(pretrained.ASSETS.glob("confusion-*"))
    png = tmp_path / "c.png"
    assert main(["evaluate", "lenet5:mnist", "--data", "mnist", "--confusion-png", str(png)]) == 0
    acc = pretrained.pretrained_entry("lenet5:mnist").accuracy
    assert png.is_file() and f"accuracy {acc:.2f}%" in capsys.readouterr().out


def test_evaluate_defaults_to_the_data_the_checkpoint_was_trained_on(capsys):
    """No --data: the checkpoint's own dataset (it used to be MNIST whatever the model had learned)."""
    assert main(["evaluate", "lenet5:fashion-mnist"]) == 0
    acc = pretrained.pretrained_entry("lenet5:fashion-mnist").accuracy
    assert f"lenet5 on fashion-mnist (10,000 test images): accuracy {acc:.2f}%" in capsys.readouterr().out
