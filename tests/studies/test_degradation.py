"""The degradation study at a tiny size: four runs, curves, per-layer gradients, the verdict's logic."""

from __future__ import annotations

import copy
import json

import pytest

from cnnzoo.studies import degradation as study
from cnnzoo.studies import get_study


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("degradation")
    study.run_degradation_study(out, preset="tiny", device="cpu")
    return out, json.loads((out / "results.json").read_text())


def test_runs_curves_and_gradients(report):
    _, r = report
    assert list(r["runs"]) == list(study.MODELS)
    assert r["runs"]["plain20"]["params"] == r["runs"]["resnet20"]["params"]  # shortcuts add no weights
    epochs = r["preset_config"]["epochs"]
    for run in r["runs"].values():
        (seed,) = run["seeds"]
        assert (
            len(seed["train_error_curve"]) == len(seed["test_error_curve"]) == len(seed["train_loss_curve"])
        )
        assert len(seed["train_loss_curve"]) == epochs
        assert 0 <= seed["final_train_error"] <= 100
    # one norm per convolution (6n + 1 of them: option-A shortcuts have none) and one for the fc
    for name, layers in (("plain20", 20), ("resnet20", 20), ("plain56", 56), ("resnet56", 56)):
        g = r["gradients"][name]
        assert len(g["init"]) == len(g["epoch1"]) == layers
        assert all(v > 0 for v in g["init"])


FLAT = [2.0, 1.0] + [0.5] * 10  # converged by the plateau criterion
FALLING = [2.0 - e / 10 for e in range(12)]


def _with_errors(r: dict, errors: dict[str, list[float]], curve: list[float] = FLAT) -> dict:
    r = copy.deepcopy(r)
    for name, errs in errors.items():
        r["runs"][name]["seeds"] = [{"final_train_error": e, "train_loss_curve": curve} for e in errs]
    return r


def test_verdict(report):
    _, r = report
    held = {"plain20": [10, 11], "plain56": [20, 21], "resnet20": [9, 10], "resnet56": [8, 9]}
    assert study.verdict(_with_errors(r, held))[0] == "Held"
    res_worse = {**held, "resnet56": [15, 16]}
    assert study.verdict(_with_errors(r, res_worse))[0] == "Partly held"
    plain_better = {**held, "plain56": [5, 6]}
    assert study.verdict(_with_errors(r, plain_better))[0] == "Did not hold"
    within_spread = {**held, "plain56": [8, 14]}
    assert study.verdict(_with_errors(r, within_spread))[0] == "Inconclusive"
    one_seed = {k: v[:1] for k, v in held.items()}
    verdict, figures = study.verdict(_with_errors(r, one_seed))
    assert verdict == "Inconclusive" and "one seed: no spread; run with --seeds 3" in figures
    # a run still learning: never "Did not hold", but Budget-bound with the command and time that can answer
    verdict, figures = study.verdict(_with_errors(r, plain_better, FALLING))
    assert verdict == "Budget-bound" and "read as Did not hold" in figures[-1]
    assert (
        "`cnnzoo study degradation --preset cuda --device cuda`" in figures[-1]
        and " h on this CPU" in figures[-1]
    )


def test_report(report):
    out, _ = report
    text = (out / "README.md").read_text()
    assert "| `resnet56` | 852,730 |" in text and "6.97% (CIFAR-10, Table 6)" in text
    assert "| model | converged |" in text and "| `plain56` | 0/1 |" in text  # one epoch: too short to tell
    for png in ("curves.png", "gradients.png", "loss.png"):
        assert (out / png).stat().st_size > 1000 and f"({png})" in text
    (out / "README.md").unlink()
    assert get_study("degradation").report(out).exists()
