"""Same command, same figure: `cnnzoo finetune` trains with the recipe the transfer study measured.

The source is a LeNet-5 pretrained on 1,500 MNIST images; the target, scikit-learn's digits cut to a
few images per class (a small slice of a study cell).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict

import pytest

from cnnzoo.cli import main
from cnnzoo.studies.transfer import (
    PRESETS,
    cell_plan,
    finetune_command,
    run_cell,
    source_command,
    source_config,
)
from cnnzoo.transfer.finetune import FinetuneConfig
from cnnzoo.transfer.recipe import (
    BATCH_SIZE,
    MAX_EPOCHS,
    MIN_STEPS,
    finetune_plan,
    gradual_head_epochs,
    recipe_config,
    recipe_epochs,
    strategy_rate,
)


@pytest.mark.parametrize(
    "n_train, epochs",
    [
        (165, 40),  # 5 Cyrillic letters per class: 3 steps an epoch, 100 epochs wanted, 40 at most
        (660, 28),  # 20 per class: 11 steps an epoch, 28 epochs give 308 steps
        (1438, 14),  # all of digits: 23 steps an epoch
        (60_000, 3),  # MNIST: 938 steps an epoch, already past 300 in one; 3 epochs at least
    ],
)
def test_epochs_give_at_least_300_steps_within_3_to_40_epochs(n_train, epochs):
    assert recipe_epochs(n_train) == epochs
    steps = epochs * -(-n_train // BATCH_SIZE)
    assert steps >= MIN_STEPS or epochs == MAX_EPOCHS


def test_rates_per_strategy_and_the_gradual_head_phase():
    assert [strategy_rate(s) for s in ("scratch", "head", "gradual", "last:1", "last:3", "full")] == [
        0.05,
        0.05,
        0.05,
        0.01,
        0.01,
        0.01,
    ]
    assert gradual_head_epochs(40) == 13 and gradual_head_epochs(2) == 1


def test_flags_override_the_recipe_and_the_epochs_follow_the_batch():
    cfg = recipe_config("head", 165, data="glyphs-cyrillic")
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.augment) == (40, 0.05, 64, 5e-4, "none")
    assert cfg.eval_every == 10  # the test split four times, not forty
    assert recipe_config("head", 165, data="x", eval_every=1).eval_every == 1
    cfg = recipe_config("last:2", 660, data="glyphs-cyrillic", lr=0.02, epochs=None, batch_size=32)
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (0.02, 32, 15)  # 21 steps an epoch: 15 epochs
    assert recipe_config("full", 660, data="x", epochs=7).epochs == 7
    assert recipe_config("full", 60_000, data="x").eval_every == 1


def test_plan_counts_the_images_the_run_will_see(digits):
    ft = FinetuneConfig(source="unused", strategy="gradual", samples_per_class=5)
    ft, cfg, splits = finetune_plan(ft, "digits", splits=digits)
    assert splits is digits and cfg.epochs == 40 and ft.head_epochs == 13  # 50 images: one step an epoch
    ft, cfg, _ = finetune_plan(
        FinetuneConfig(source="unused", strategy="full"), "digits", splits=digits, train_subset=640
    )
    assert (cfg.epochs, cfg.lr, ft.head_epochs) == (30, 0.01, 10)  # 10 steps an epoch
    ft, _, _ = finetune_plan(
        FinetuneConfig(source="unused", strategy="gradual", head_epochs=2), "digits", splits=digits
    )
    assert ft.head_epochs == 2  # given: kept


def test_the_cli_resolves_the_studys_cell_and_reproduces_its_figure(source, digits, tmp_path, capsys):
    """`cnnzoo finetune ... --strategy last:2 --samples-per-class 5`: the configuration of the study's cell
    (full preset), and on this slice the same accuracy as the study's own function, same seed."""
    preset = PRESETS["full"]
    ft, cfg, _ = cell_plan(source, digits, "last:2", 5, 0, preset, "cpu")
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (40, 0.01, 64)
    command = finetune_command(str(source), "digits", "last:2", 5)
    assert command == f"cnnzoo finetune --from {source} --data digits --strategy last:2 --samples-per-class 5"
    run = tmp_path / "run"
    argv = command.split()[1:] + ["--device", "cpu", "--eval-every", "1000", "--quiet", "--out", str(run)]
    assert main(argv) == 0
    recorded = json.loads((run / "config.json").read_text())
    assert recorded == json.loads(json.dumps({"finetune": asdict(ft), "train": cfg.to_dict()}))
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = tmp_path / "events"
    cell = run_cell(source, digits, "last:2", 5, 0, preset, "cpu", events)
    assert log[-1]["test_acc"] == cell["accuracy"] and cell["epochs"] == 40
    if importlib.util.find_spec("tensorboard"):  # a study's cell saves nothing but logs its events there
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        ea = EventAccumulator(str(events), size_guidance={"scalars": 0})
        ea.Reload()
        assert ea.Scalars("epoch/test_acc")[-1].value == pytest.approx(cell["accuracy"])
    assert f"test accuracy {cell['accuracy']:.2f}%" in capsys.readouterr().out


def test_the_studys_sources_are_what_cnnzoo_train_trains():
    """`cnnzoo train lenet5 --data glyphs-latin` is `default_config`; the command names the preset's flags."""
    from cnnzoo.engine.config import default_config

    assert source_config("lenet5", "glyphs-latin", {}) == default_config("lenet5", "glyphs-latin")
    deeper = next(g for g in PRESETS["full"].grids if g.name == "deeper")
    assert source_command("resnet20", "glyphs-digits", deeper.source_flags) == (
        "cnnzoo train resnet20 --data glyphs-digits --epochs 4"
    )
    cfg = source_config("resnet20", "glyphs-digits", deeper.source_flags)
    assert (cfg.epochs, cfg.lr) == (4, default_config("resnet20", "glyphs-digits").lr)


def test_the_study_checks_its_readme_command_through_the_command_line(source, digits):
    """`reproduce_cell` runs the README's `cnnzoo finetune ... --strategy last:2` line and compares what it
    printed with the report's cell (here one computed by the study's own `run_cell`, full recipe)."""
    from cnnzoo.studies.transfer import reproduce_cell

    cell = run_cell(source, digits, "last:2", 5, 0, PRESETS["full"], "cpu")
    row = {"samples_per_class": 5, "cells": {"last:2": {"runs": [cell]}}}
    setting = {"source": {"path": str(source)}, "target_data": "digits", "rows": [row]}
    check = reproduce_cell({"grids": [{"name": "calibration", "settings": [setting]}]}, "cpu")
    assert check["command"] == finetune_command(str(source), "digits", "last:2", 5)
    assert check["exit"] == 0 and check["printed"] == round(cell["accuracy"], 2)
