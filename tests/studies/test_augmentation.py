"""The augmentation study at a tiny size: the grid, the gaps, the claims' logic, the report."""

from __future__ import annotations

import copy
import json

import pytest

from cnnzoo.studies import augmentation as study
from cnnzoo.studies import get_study


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("augmentation")
    study.run_augmentation_study(out, preset="tiny", device="cpu")
    return out, json.loads((out / "results.json").read_text())


def test_grid(report):
    _, r = report
    sizes = [str(n) for n in study.PRESETS["tiny"].sizes]
    assert set(r["grid"]) == {"fashion-mnist", "mnist"}
    for data, conditions in study.DATASETS.items():
        assert list(r["grid"][data]) == sizes
        for n in sizes:
            assert list(r["grid"][data][n]) == list(conditions)
            for cell in r["grid"][data][n].values():
                (run,) = cell
                assert run["gap"] == pytest.approx(run["train_acc"] - run["test_acc"])
                assert run["epochs"] == study.epochs_for(int(n), study.PRESETS["tiny"])
                assert len(run["train_loss_curve"]) == run["epochs"]
    assert study.DATASETS["mnist"] == ("crop", "crop+flip")  # the flip question on digits


def _set(r: dict, data: str, condition: str, key: str, values: list[float]) -> None:
    for n in r["grid"][data]:
        r["grid"][data][n][condition] = [
            {**run, key: v}
            for run, v in zip([r["grid"][data][n][condition][0]] * len(values), values, strict=True)
        ]


def test_claims_logic(report):
    _, r = report
    r = copy.deepcopy(r)
    r["seeds"] = 2
    for data, conditions in study.DATASETS.items():
        for c in conditions:
            _set(r, data, c, "test_acc", [80.0, 81.0])
            _set(r, data, c, "gap", [5.0, 5.5])
    _set(r, "fashion-mnist", "crop+flip", "gap", [1.0, 1.5])
    _set(r, "mnist", "crop+flip", "test_acc", [70.0, 71.0])
    # the tiny runs are far too short to converge: every verdict is Budget-bound, saying what it read
    bound = study.claims(r)
    assert {v for v, _, _ in bound} == {"Budget-bound"}
    assert "read as Held" in bound[0][2] and "--preset cuda --device cuda" in bound[0][2]
    for data, conditions in study.DATASETS.items():  # converged runs: flat for their last epochs
        for c in conditions:
            _set(r, data, c, "train_loss_curve", [[1.0, 0.5] + [0.3] * 10] * 2)
    verdicts = {claim.split(":")[0]: v for v, claim, _ in study.claims(r)}
    assert (
        verdicts[
            "crops and flips narrow the gap between training and test accuracy (Fashion-MNIST, every size)"
        ]
        == "Held"
    )
    assert verdicts["flips stop helping on digits"] == "Held"
    assert verdicts["crops and flips raise test accuracy (Fashion-MNIST, every size)"] == "Inconclusive"
    sizes = list(r["grid"]["fashion-mnist"])
    for run in r["grid"]["fashion-mnist"][sizes[-1]]["none"]:  # only the largest size's runs still learning
        run["train_loss_curve"] = [1.0 - e / 20 for e in range(12)]
    gap = next(f for v, c, f in study.claims(r) if c.startswith("crops and flips narrow the gap"))
    assert f"at the sizes whose runs all converged ({sizes[0]} images) it reads Held" in gap
    _set(
        r,
        "fashion-mnist",
        "none",
        "train_loss_curve",
        [[1.0, 0.5] + [0.3] * 10, [1.0 - e / 20 for e in range(12)]],
    )
    verdicts = {claim.split(":")[0]: v for v, claim, _ in study.claims(r)}
    assert verdicts["crops and flips raise test accuracy (Fashion-MNIST, every size)"] == "Budget-bound"
    assert verdicts["flips stop helping on digits"] == "Held"  # rests on MNIST runs only
    r["seeds"] = 1
    for v, _, figures in study.claims(r):  # one seed has no spread to judge by, and says so
        assert v in ("Inconclusive", "Budget-bound") and "one seed: no spread; run with --seeds 3" in figures


def test_report(report):
    out, _ = report
    text = (out / "README.md").read_text()
    assert "## fashion-mnist" in text and "## mnist" in text and "| train images | augmentation |" in text
    assert "## Did the runs converge?" in text and "0/1 (" in text  # the tiny runs: too short
    for png in ("fashion-mnist.png", "mnist.png", "loss.png"):
        assert (out / png).stat().st_size > 1000 and f"({png})" in text
    (out / "README.md").unlink()
    assert get_study("augmentation").report(out).exists()
