"""The architectures study at a tiny size: counts for every model, MACs against torchvision's, speed, pictures."""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest

from cnnzoo.cli import main
from cnnzoo.models import list_models
from cnnzoo.studies import architectures as study
from cnnzoo.studies import get_study


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """`cnnzoo study architectures --quick`, its preset shrunk to the tiny one (seconds, not minutes)."""
    out = tmp_path_factory.mktemp("architectures")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(study.PRESETS, "quick", study.PRESETS["tiny"])
        mp.setattr(sys, "stderr", io.StringIO())
        mp.setattr(sys, "stdout", io.StringIO())
        assert main(["study", "architectures", "--quick", "--out", str(out), "--device", "cpu"]) == 0
        (out / "stderr.txt").write_text(sys.stderr.getvalue())
        (out / "stdout.txt").write_text(sys.stdout.getvalue())
    return out, json.loads((out / "results.json").read_text())


def test_quick_flag_runs_the_quick_preset(report):
    _, r = report
    assert r["preset"] == "quick" and r["command"] == "cnnzoo study architectures --quick"
    assert r["preset_config"]["picture_train"] == study.PRESETS["tiny"].picture_train and r["seconds"] > 0


def test_every_model_counted(report):
    _, r = report
    models = r["models"]
    assert list(models) == list_models()
    assert models["lenet5"]["params"] == 61_706 and models["lenet5"]["macs"] == 416_520
    assert models["vgg16"]["params"] == 138_357_544 and models["alexnet"]["min_input"] == 63
    assert models["googlenet"]["params_without_aux"] == 6_624_904
    # our MAC count is what torchvision publishes as "GFLOPS", for every model it has weights of
    for name, (_, _, gflops) in study.TORCHVISION.items():
        assert models[name]["macs"] / 1e9 == pytest.approx(gflops, rel=5e-3), name


def test_speed_measured_when_no_benchmark_json(report):
    out, r = report
    assert r["speed"]["source"].startswith("measured by the study") and r["speed"]["missing"] == "speed.json"
    text = (out / "README.md").read_text()
    assert "The speed benchmark's JSON is missing" in text and study.SPEED_COMMAND in text
    assert study.SPEED_COMMAND in (out / "stderr.txt").read_text()  # said on the console too
    assert set(r["speed"]["models"]) == {"lenet5", "resnet20"}
    assert r["speed"]["models"]["lenet5"]["size"] == 28 and r["speed"]["models"]["resnet20"]["size"] == 32
    assert all(s["forward"] > 0 and s["train"] > 0 for s in r["speed"]["models"].values())


def test_speed_json_is_preferred(report, tmp_path):
    rows = [
        {"model": "vgg11", "size_kind": "small", "input": [3, 32, 32], "batch": 16, "channels_last": False, "precision": "fp32", "forward_img_s": 50.0, "train_img_s": 9.0},
        {"model": "vgg11", "size_kind": "native", "input": [3, 224, 224], "batch": 2, "channels_last": False, "precision": "fp32", "forward_img_s": 5.0, "train_img_s": 1.0},
        {"model": "vgg11", "size_kind": "native", "input": [3, 224, 224], "batch": 2, "channels_last": False, "precision": "bf16", "forward_img_s": 7.0, "train_img_s": 2.0},
        {"model": "vgg16", "size_kind": "native", "input": [3, 224, 224], "batch": 2, "channels_last": False, "precision": "fp32", "skipped": "too big"},
    ]  # fmt: skip
    (tmp_path / "speed.json").write_text(json.dumps({"meta": {"date": "2026-12-02"}, "results": rows}))
    speed = study.speed_from_json(tmp_path / "speed.json")
    assert speed["models"] == {
        "vgg11": {"forward": 5.0, "train": 1.0, "size": 224, "batch": 2, "size_kind": "native"}
    }
    assert study.speed_from_json(tmp_path / "missing.json") is None


def test_spearman():
    assert study.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert study.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_report_and_pictures(report):
    out, r = report
    text = (out / "README.md").read_text()
    assert "| `vgg16` | vgg | 138,357,544 | 15.47 G at 224 |" in text
    assert "15.3" in text and "26.2" in text and "within 0.5% for 16 of 16 models" in text
    for f in ("accuracy.png", "speed.png", *r["pictures"]["models"]["lenet5"]["files"]):
        assert (out / f).stat().st_size > 1000 and f"({f})" in text, f
    (out / "README.md").unlink()
    assert get_study("architectures").report(out).exists()


def test_report_only_takes_the_benchmark_json_when_it_appears(report, tmp_path):
    out, _ = report
    folder = tmp_path / "architectures"
    shutil.copytree(out, folder)
    row = {"model": "lenet5", "size_kind": "native", "input": [1, 28, 28], "batch": 2, "channels_last": False, "precision": "fp32", "forward_img_s": 900.0, "train_img_s": 300.0}  # fmt: skip
    meta = {"date": "2026-12-02", "threads": 1, "command": "python bench/bench_models.py --models lenet5"}
    (folder / "speed.json").write_text(json.dumps({"meta": meta, "results": [row]}))
    text = get_study("architectures").report(folder).read_text()
    assert "The speed benchmark's JSON is missing" not in text
    assert "Speed columns: `python bench/bench_models.py --models lenet5`" in text
    assert "| 900.0 | 300.0 | 28 px, batch 2 |" in text
    saved = json.loads((folder / "results.json").read_text())["speed"]  # the index reads it from here
    assert saved["source"].startswith("bench/bench_models.py") and "missing" not in saved


def test_the_command_says_where_its_tensorboard_events_are(report):
    """One line naming the log folder (OUT/.work for an --out that is not the default), the events in it."""
    pytest.importorskip("tensorboard")
    out, _ = report
    root = out / ".work" / "tensorboard"
    lines = (out / "stdout.txt").read_text().splitlines()
    # a slow machine may see the study's progress lines (every 10 s) before them
    lines = [line for line in lines if not line.startswith("study architectures: ")]
    assert lines == [
        f"TensorBoard events of 1 fit(s) in {root}: tensorboard --logdir {root}",
        f"report written: {out / 'README.md'}",
    ]
    assert list((root / "lenet5-seed0").glob("events.out.tfevents.*"))
