"""Advice by trial: successive halving on a validation split carved from the training images, never the
test split; `cnnzoo advise --trial --budget`, `--samples-per-class`, and what each advice says it cost."""

from __future__ import annotations

import importlib
import json

import pytest

from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.transfer.advise import advise, ambiguities
from cnnzoo.transfer.trial import candidates, halving_plan, race, trial_steps


def test_candidates_and_the_halving_plan():
    assert candidates(4) == ["head", "last:1", "last:2", "last:3", "full", "scratch"]
    assert candidates(1) == ["head", "full", "scratch"]
    plan = halving_plan(6, 200)
    assert plan == [(6, 10), (3, 20), (2, 40)]  # halve the field, double the steps
    assert sum(n * s for n, s in plan) == 200  # each round costs about the same
    assert halving_plan(8, 8) == [(8, 1), (4, 2), (2, 4)]  # at least a step each
    assert halving_plan(1, 50) == [(1, 50)]
    assert trial_steps(165) == 3 * 40 * 3  # three recipe runs: 40 epochs of 3 steps


def test_race_scores_on_a_validation_split_carved_from_the_training_images(source, digits, monkeypatch):
    trial_module = importlib.import_module("cnnzoo.transfer.trial")  # the package exports `race` itself
    seen = []
    real = trial_module.finetune

    def spy(ft, cfg, **kw):
        seen.append((ft.strategy, cfg, kw["splits"]))
        return real(ft, cfg, **kw)

    monkeypatch.setattr(trial_module, "finetune", spy)
    from cnnzoo.data.base import Splits, take_per_class

    little = Splits(take_per_class(digits.train, 10, 0), digits.test)
    trial = race(str(source), little, device="cpu", multiple=0.5)
    assert trial.val_images == 20 and trial.train_images == 80  # 2 of each class's 10 held out
    assert [len(r["val_acc"]) for r in trial.rounds] == [6, 3, 2]
    assert trial.winner in trial.rounds[-1]["val_acc"]
    assert len(seen) == 11
    train_images = {bytes(img.numpy()) for img in little.train.images}
    for strategy, cfg, splits in seen:
        assert len(splits.test) == 20 and len(splits.train) == 80  # never the real test split (359)
        assert all(bytes(img.numpy()) in train_images for img in splits.test.images)
        assert cfg.eval_every == 1000 and cfg.lr == (0.05 if strategy in ("head", "scratch") else 0.01)
    steps = [r["steps"] for r in trial.rounds]
    assert steps[1] == 2 * steps[0] and steps[2] == 4 * steps[0]
    reasons = trial.reasons()
    assert reasons[0].startswith("trial: 6 strategies raced on 20 validation images")
    assert reasons[-1].startswith(f"the winner: {trial.winner}")


def test_a_budget_must_be_positive(source, digits):
    with pytest.raises(CnnzooError, match="positive number of seconds"):
        race(str(source), digits, device="cpu", budget=0)


def test_ambiguities_name_the_threshold_they_are_near_and_the_unsure_cells():
    assert ambiguities(25, 60.0, 30.0, 0.95) == [
        "25 per class is near the 30 that separates little data",
        "with little data, similar features, the rule picked near-best in only 8 of 9 measured rows",
    ]
    # 100 a class, a source within noise of random: scratch (not worth its bias), near the worse-than-random line
    assert ambiguities(100, 50.0, 51.0, None) == [
        "the probe's gain (-1.0 points) is near the -3.1 below which scratch won"
    ]
    assert ambiguities(5, 60.0, 30.0, 0.82) == [
        "the probe keeps 82% of the source's accuracy, near the 80% of 'similar'",
        "with little data, similar features, the rule picked near-best in only 8 of 9 measured rows",
    ]
    assert ambiguities(5, 60.0, 30.0, 0.5) == [
        "with little data, different features, the rule picked near-best in only 18 of 25 measured rows"
    ]
    assert ambiguities(100, 90.0, 30.0, 0.95) == []  # moderate data, similar: 10 of 10 measured rows
    assert ambiguities(100, 40.0, 50.0, 0.4) == []  # clearly below random features: scratch, sure
    assert ambiguities(2000, 90.0, 30.0, 0.95) == [  # plenty of data: no row measured
        "no measured row had plenty data, similar features: the rule there is the textbook's, untested"
    ]


def test_the_advice_says_what_it_measured_and_what_a_trial_would_cost(source, digits):
    advice = advise(str(source), digits, device="cpu", samples_per_class=8)
    assert advice.samples_per_class == 8 and advice.trial is None
    assert advice.trial_budget_steps == trial_steps(80 - 20)  # 8 per class, 2 of them for validation
    assert advice.trial_seconds > 0 and advice.seconds > 0
    text = advice.describe()
    assert text.startswith(f"recommended strategy: {advice.strategy} (by the rules)")
    assert f"measured in {advice.seconds:.0f} s" in text
    assert "`--trial` races" in text and f"about {advice.trial_seconds:.0f} s" in text
    assert ("the rules are unsure here" in text) == bool(advice.ambiguous)


def test_advise_trial_on_the_command_line(source, capsys):
    argv = [
        "advise",
        "--from",
        str(source),
        "--data",
        "digits",
        "--device",
        "cpu",
        "--samples-per-class",
        "5",
    ]
    assert main(argv + ["--budget", "2", "--json"]) == 0  # --budget implies --trial
    printed = json.loads(capsys.readouterr().out)
    assert printed["samples_per_class"] == 5.0
    trial = printed["trial"]
    assert printed["strategy"] == trial["winner"] and printed["rules_strategy"]
    assert trial["val_images"] == 10 and trial["train_images"] == 40
    assert any(r.startswith("trial: ") for r in printed["reasons"])
    assert printed["trial_seconds"] == trial["seconds"]
