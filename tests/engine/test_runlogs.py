"""Run logs other tools read: summary.csv (timm's shape) and TensorBoard events, read back with TensorBoard's
own EventAccumulator (skipped where the optional package is missing; `dev` installs it, so CI runs them)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import matplotlib.pyplot as plt
import pytest
import torch

from cnnzoo.cli import main
from cnnzoo.data.loader import InMemoryLoader
from cnnzoo.engine import default_config, train
from cnnzoo.engine.runlog import SUMMARY_COLUMNS, RunLog
from cnnzoo.engine.tblog import _prediction_figure

# 500 images in batches of 50: 10 steps an epoch, the loop's progress syncs at batches 1 and 10
TINY = dict(train_subset=500, epochs=2, batch_size=50, lr=0.1, checkpoint_minutes=0.0)


def tiny_cfg(**kw):
    return replace(default_config("lenet5", "mnist"), **{**TINY, **kw})


def summary(run) -> list[dict]:
    with (run / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def events(run):
    """TensorBoard's own reader over RUN/tensorboard (every event kept: no sampling)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ea = accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


def scalars(ea, tag) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in ea.Scalars(tag)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs") / "run"
    result = train(tiny_cfg(eval_every=2), run_dir=folder, quiet=True)
    return folder, result


def test_summary_csv_has_one_row_per_epoch_as_metrics_jsonl(run):
    folder, result = run
    rows = summary(folder)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [1, 2] == [r["epoch"] for r in records]
    for row, record in zip(rows, records, strict=True):
        for key in ("train_loss", "train_acc", "lr"):
            assert float(row[key]) == pytest.approx(record[key], rel=1e-12), key
        assert float(row["seconds"]) > 0
    # --eval-every 2: epoch 1 had no test pass, its test cells are empty; the last is the run's figure
    assert rows[0]["test_acc"] == rows[0]["test_loss"] == ""
    assert float(rows[1]["test_acc"]) == pytest.approx(result.final_acc)


def test_tensorboard_events_hold_steps_epochs_hparams_and_predictions(run):
    folder, result = run
    ea = events(folder)
    tags = ea.Tags()
    losses = scalars(ea, "step/train_loss")
    # a point at each progress sync (batches 1 and 10 of each epoch), x = the optimizer step
    assert [s for s, _ in losses] == [1, 10, 11, 20]
    assert [s for s, _ in scalars(ea, "step/lr")] == [1, 10, 11, 20]
    # each point is the mean over the steps since the previous one (1 step, then 9): they rebuild the epoch's
    first, rest = losses[0][1], losses[1][1]
    assert (first + 9 * rest) / 10 == pytest.approx(result.history[0]["train_loss"], rel=1e-5)
    assert scalars(ea, "epoch/train_acc") == [
        (r["epoch"], pytest.approx(r["train_acc"], rel=1e-6)) for r in result.history
    ]
    assert scalars(ea, "epoch/test_acc") == [(2, pytest.approx(result.final_acc, rel=1e-6))]  # eval_every 2
    assert scalars(ea, "final/best_acc") == [(2, pytest.approx(result.best_acc, rel=1e-6))]
    image = ea.Images("predictions")[0]
    assert image.step == 2 and image.width > 500 and "predictions" in tags["images"]
    hparams = _hparams(ea)
    assert hparams["lr"].number_value == pytest.approx(0.1) and hparams["model"].string_value == "lenet5"
    assert hparams["tensorboard"].string_value == "true"


def _hparams(ea) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    return dict(plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams)


def test_no_tensorboard_writes_no_events(tmp_path, capsys):
    args = ["--train-subset", "200", "--epochs", "1", "--batch-size", "100", "--quiet"]
    assert main(["train", "lenet5", *args, "--no-tensorboard", "--out", str(tmp_path / "off")]) == 0
    assert not (tmp_path / "off" / "tensorboard").exists()
    assert [int(r["epoch"]) for r in summary(tmp_path / "off")] == [1]
    assert json.loads((tmp_path / "off" / "config.json").read_text())["tensorboard"] is False


class Crash(Exception):
    pass


def test_a_resumed_run_has_no_doubled_stretch(tmp_path, monkeypatch):
    """A crash in epoch 2 after its first logged step (11): the resumed run starts again from the epoch-1
    checkpoint (step 10), and TensorBoard drops the crashed run's step 11 for the new one."""
    pytest.importorskip("tensorboard")
    original_iter = InMemoryLoader.__iter__
    calls = {"n": 0}

    def crashing_iter(self):
        for batch in original_iter(self):
            if self.shuffle:
                calls["n"] += 1
                if calls["n"] == 15:
                    raise Crash
            yield batch

    monkeypatch.setattr(InMemoryLoader, "__iter__", crashing_iter)
    with pytest.raises(Crash):
        train(tiny_cfg(), run_dir=tmp_path / "run", quiet=True)
    crashed = dict(scalars(events(tmp_path / "run"), "step/train_loss"))
    assert sorted(crashed) == [1, 10, 11] and [int(r["epoch"]) for r in summary(tmp_path / "run")] == [1]
    monkeypatch.setattr(InMemoryLoader, "__iter__", original_iter)
    resumed = train(None, resume=tmp_path / "run", quiet=True)
    losses = scalars(events(tmp_path / "run"), "step/train_loss")
    assert [s for s, _ in losses] == [1, 10, 11, 20]  # step 11 once: the resumed run's
    assert [int(r["epoch"]) for r in summary(tmp_path / "run")] == [1, 2]
    assert scalars(events(tmp_path / "run"), "final/test_acc") == [(2, pytest.approx(resumed.final_acc))]


def test_summary_follows_truncation_and_is_rebuilt_for_an_older_run(tmp_path):
    log = RunLog(tmp_path)
    for epoch in (1, 2, 3):
        log.write({"epoch": epoch, "train_loss": 1.0 / epoch, "lr": 0.1})
    log.truncate_after(2)  # resume from epoch 2's checkpoint: epoch 3 was logged past it
    assert [int(r["epoch"]) for r in summary(tmp_path)] == [1, 2]
    (tmp_path / "summary.csv").unlink()  # a run folder from before summary.csv existed
    RunLog(tmp_path).write({"epoch": 3, "train_loss": 0.25, "test_acc": 91.5})
    rows = summary(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[0]["seconds"] == "" and float(rows[2]["seconds"]) >= 0 and rows[2]["test_acc"] == "91.5"


def test_prediction_figure_labels_each_image_and_marks_the_wrong_ones():
    classes = ["airplane with a long name", "bird", "cat"]
    fig = _prediction_figure(torch.rand(5, 3, 32, 32), [0, 1, 2, 0, 1], [0, 1, 0, 0, 2], classes)
    texts = fig.axes[0].texts
    assert [t.get_text() for t in texts][:3] == ["airplane… (airplane…)", "bird (bird)", "cat (airplane…)"]
    assert [t.get_color() for t in texts] == ["black", "black", "red", "black", "red"]
    assert fig.axes[0].images[0].get_array().shape[2] == 3  # colour images stay in colour
    plt.close(fig)
