"""The advisor: its rule table on hand-made figures, then real probes on a LeNet-5 pretrained on MNIST."""

from __future__ import annotations

import json

import pytest

from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.data.base import Splits, take_per_class
from cnnzoo.engine import TrainConfig, train
from cnnzoo.transfer.advise import (
    DIFFERENT_SCRATCH_MIN,
    LARGE,
    SCRATCH_GAIN,
    SCRATCH_MIN,
    SMALL,
    UNLIKE_PROBE,
    ambiguities,
    recommend,
)

STRATEGIES = {"head", "last:1", "last:2", "full", "scratch"}


# --- the rule table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "per_class, probe_source, probe_random, kept, num_groups, expected",
    [
        (
            10,
            90.0,
            40.0,
            0.95,
            4,
            "full",
        ),  # little data, similar: full (near-best in 2 of 2 calibration rows)
        (10, 85.0, 80.0, None, 4, "full"),  # similar without a source accuracy: probe >= 80%
        (10, 45.0, 40.0, 0.70, 4, "full"),  # little data, different (2 of 3 calibration rows: unsure)
        (10, 45.0, 40.0, 0.50, 4, "scratch"),  # an unlike source (probe < 60% of its accuracy), >= 10 a class
        (5, 30.0, 40.0, 0.30, 4, "scratch"),  # no better than random (10 points below): scratch at any size
        (5, 38.0, 40.0, 0.30, 4, "full"),  # 5 a class, unlike, within noise of random
        (2000, 95.0, 60.0, 0.97, 4, "full"),  # plenty of data (no calibration row: the textbook's)
        (2000, 60.0, 69.5, 0.60, 4, "scratch"),  # features clearly below random beat "plenty of data"
        (100, 40.0, 49.0, 0.40, 4, "scratch"),  # enough data, features 9 points below random ones
        (100, 50.0, 49.0, None, 4, "last:2"),  # moderate data, different (no calibration row: textbook)
        (100, 50.0, 49.0, 0.70, 4, "scratch"),  # different features, at least 20 a class: scratch
        (20, 60.0, 40.0, 0.79, 4, "scratch"),
        (100, 60.0, 40.0, None, 2, "last:1"),  # ...never more groups than the model has before the head
        (100, 90.0, 50.0, 0.92, 4, "full"),  # moderate data, similar (2 of 2 calibration rows)
    ],
)
def test_rule_table(per_class, probe_source, probe_random, kept, num_groups, expected):
    strategy, reasons = recommend(per_class, probe_source, probe_random, kept, num_groups)
    assert strategy == expected
    assert reasons[0].startswith(f"{per_class} training images per class")
    assert f"{probe_source:.1f}% against {probe_random:.1f}%" in reasons[1]
    assert (kept is not None) == any("of the source's own accuracy" in r for r in reasons)
    no_better = probe_source <= probe_random
    assert no_better == any("no better than random ones" in r for r in reasons)
    assert len(reasons) == 3 + (kept is not None) + no_better  # data, probe, [similarity,] [random,] verdict


def test_rule_table_thresholds():
    """SMALL images per class is no longer little data; LARGE is not yet plenty; scratch below SCRATCH_GAIN."""
    assert recommend(SMALL - 1, 60, 40, None, 4)[0] == "full"  # little, different (no source accuracy)
    assert recommend(SMALL, 60, 40, None, 4)[0] == "last:2"  # moderate, different
    assert recommend(LARGE, 60, 40, None, 4)[0] == "last:2"
    assert recommend(LARGE + 1, 60, 40, None, 4)[0] == "full"
    assert recommend(100, 50 + SCRATCH_GAIN - 0.1, 50, 0.9, 4)[0] == "scratch"
    assert recommend(100, 50 + SCRATCH_GAIN + 0.1, 50, 0.9, 4)[0] == "full"
    assert recommend(5, 50 + SCRATCH_GAIN - 0.1, 50, 0.9, 4)[0] == "scratch"  # no better than random:
    assert recommend(5, 50 + SCRATCH_GAIN + 0.1, 50, 0.9, 4)[0] == "full"  # scratch at any size (issue 21)
    assert recommend(SMALL, 40, 50, None, 4)[0] == "scratch"
    assert "no better than random ones, train from scratch" in recommend(5, 40, 50, None, 4)[1][-1]
    assert recommend(DIFFERENT_SCRATCH_MIN, 70, 40, 0.79, 4)[0] == "scratch"  # different features
    assert recommend(DIFFERENT_SCRATCH_MIN - 1, 70, 40, 0.79, 4)[0] == "full"
    assert recommend(DIFFERENT_SCRATCH_MIN, 70, 40, 0.8, 4)[0] == "full"  # similar
    assert "plenty of different data" in recommend(DIFFERENT_SCRATCH_MIN, 70, 40, 0.7, 4)[1][-1]
    assert recommend(SCRATCH_MIN, 45, 40, UNLIKE_PROBE / 100 - 0.001, 4)[0] == "scratch"  # unlike source
    assert recommend(SCRATCH_MIN, 45, 40, UNLIKE_PROBE / 100, 4)[0] == "full"
    assert recommend(SCRATCH_MIN - 1, 45, 40, 0.3, 4)[0] == "full"  # too few images to learn from scratch
    assert "a substantially different source" in recommend(20, 45, 40, 0.5, 4)[1][-1]
    assert "little data" in recommend(SMALL - 1, 90, 40, 0.95, 4)[1][0]
    assert "plenty of data" in recommend(LARGE + 1, 90, 40, 0.95, 4)[1][0]
    assert "near-best in 2 of 3 calibration rows" in recommend(5, 60, 40, 0.6, 4)[1][-1]
    assert "the textbook's choice" in recommend(100, 60, 40, None, 4)[1][-1]


def test_unsure_near_the_scratch_gain_at_any_size():
    near = [a for a in ambiguities(5, 50 + SCRATCH_GAIN + 1, 50, 0.9) if "below which scratch won" in a]
    assert near  # 5 a class too: the scratch rule holds at every size
    assert not any("below which scratch won" in a for a in ambiguities(5, 60, 50, 0.9))


def test_unsure_near_the_unlike_threshold():
    assert any("unlike the target" in a for a in ambiguities(20, 50, 40, UNLIKE_PROBE / 100 + 0.02))
    assert not any("unlike the target" in a for a in ambiguities(20, 50, 40, UNLIKE_PROBE / 100 + 0.2))
    assert not any("unlike the target" in a for a in ambiguities(5, 50, 40, UNLIKE_PROBE / 100))


def test_the_table_is_what_the_procedure_fits_on_calibration_rows():
    """`calibrate.fit_rules` on hand-made calibration rows: the scratch threshold at the widest margin, each
    cell's strategy by near-best count then mean shortfall, and how sure each cell is."""
    from cnnzoo.transfer.calibrate import fit_rules

    def row(n, ps, pr, kept, **means):
        advice = {"samples_per_class": n, "probe_source": ps, "probe_random": pr, "kept": kept}
        return {"advice": advice, "cells": {k.replace("_", ":"): {"mean": v} for k, v in means.items()}}

    rows = [
        row(
            5, 60, 40, 0.6, scratch=20, head=70, last_2=80, full=79.5
        ),  # little, different: last:2 / full near
        row(5, 60, 40, 0.6, scratch=20, head=70, last_2=75, full=80),  # full best, last:2 off
        row(100, 90, 50, 0.95, scratch=90, head=92, last_2=95, full=96),  # moderate, similar: full
        row(100, 60, 66, 0.6, scratch=90, head=80, last_2=85, full=86),  # gain -6: scratch
        row(200, 70, 72, 0.7, scratch=87, head=80, last_2=85, full=88),  # gain -2: full best, scratch near
    ]
    fit = fit_rules(rows, small=SMALL, large=LARGE, similar_probe=80.0)
    assert fit.scratch_gain == -4.0  # between -6 (scratch best) and -2 (full best): the middle
    assert fit.table[("little", False)] == "full" and fit.record[("little", False)] == (2, 2)
    assert fit.table[("moderate", True)] == "full" and fit.sure(("moderate", True))
    assert fit.table[("moderate", False)] == "full"  # the gain -2 row: 88 is the best of its row
    assert fit.table[("little", True)] == "head" and not fit.sure(("little", True))  # no row: textbook's
    assert (fit.near, fit.rows) == (5, 5)


# --- real probes ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """LeNet-5 after two epochs on 1,500 MNIST images (about 90% on MNIST's test split)."""
    run = tmp_path_factory.mktemp("source") / "lenet5-mnist"
    cfg = TrainConfig(
        model="lenet5", data="mnist", epochs=2, batch_size=32, lr=0.05, train_subset=1500, precision="fp32"
    )
    result = train(cfg, run_dir=run, quiet=True)
    assert result.final_acc > 80.0
    return run


def test_probe_prefers_the_sources_features_on_its_own_task(source):
    """On MNIST itself (20 test images per class as the target), the trained features beat random ones."""
    from cnnzoo.transfer.advise import advise

    mnist = load_dataset("mnist")
    target = Splits(take_per_class(mnist.test, 20, 0), mnist.test)
    advice = advise(str(source), target, device="cpu")
    assert advice.probe_source >= advice.probe_random + 10, advice
    assert advice.samples_per_class == 20 and advice.strategy == "full"  # little data, useful features


def test_advise_on_digits_and_the_json_of_the_command(source, capsys):
    from cnnzoo.transfer.advise import advise

    digits = load_dataset("digits")
    advice = advise(str(source), digits, device="cpu")
    source_acc = json.loads((source / "best.json").read_text())["metrics"]["test_acc"]
    assert advice.strategy in STRATEGIES
    assert advice.num_classes == 10 and advice.samples_per_class == 144.5  # median of the per-class counts
    assert advice.groups == ["conv1", "conv2", "fc1", "fc2", "head"] and advice.num_groups == 4
    # probes cross-validated on digits' training split: far above chance (10%) with either features
    assert 50.0 < advice.probe_source <= 100.0 and 50.0 < advice.probe_random <= 100.0
    assert advice.source_accuracy == pytest.approx(source_acc)
    assert advice.kept == pytest.approx(advice.probe_source / source_acc)
    # the verdict is the rule table applied to the measured figures
    assert (advice.strategy, advice.reasons) == recommend(
        advice.samples_per_class, advice.probe_source, advice.probe_random, advice.kept, advice.num_groups
    )
    assert advice.describe().startswith(
        f"recommended strategy: {advice.strategy} (by the rules)\n  - 144 training images"
    )

    capsys.readouterr()
    assert main(["advise", "--from", str(source), "--data", "digits", "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"strategy", "reasons", "probe_source", "probe_random"} <= printed.keys()
    assert printed["strategy"] == advice.strategy and printed["reasons"] == advice.reasons
    assert printed["probe_source"] == pytest.approx(advice.probe_source)  # same seed, same figures
    assert printed["probe_random"] == pytest.approx(advice.probe_random)
