"""The advisor: its rule table on hand-made figures, then real probes on a LeNet-5 pretrained on MNIST."""

from __future__ import annotations

import json

import pytest

from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.data.base import Splits, take_per_class
from cnnzoo.engine import TrainConfig, train
from cnnzoo.transfer.advise import (
    CEILING,
    LARGE,
    OWN_FEATURES_MIN,
    SCRATCH_GAIN,
    SCRATCH_MIN,
    SMALL,
    UNLIKE_PROBE,
    WORTH_GAIN,
    ambiguities,
    recommend,
)

STRATEGIES = {"head", "last:1", "last:2", "full", "scratch"}


# --- the rule table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "per_class, probe_source, probe_random, kept, num_groups, expected",
    [
        (10, 90.0, 40.0, 0.95, 4, "last:2"),  # little data, similar: the last two groups
        (10, 85.0, 80.0, None, 4, "last:2"),  # similar without a source accuracy: probe >= 80%
        (10, 45.0, 40.0, 0.70, 4, "full"),  # little data, different features
        (10, 45.0, 40.0, 0.50, 4, "scratch"),  # an unlike source (probe < 60% of its accuracy), >= 10 a class
        (5, 30.0, 40.0, 0.30, 4, "full"),  # below random features, but 5 a class are too few for scratch
        (5, 38.0, 40.0, 0.30, 4, "full"),  # 5 a class, unlike, within noise of random
        (2000, 95.0, 60.0, 0.97, 4, "full"),  # plenty of data, a source worth 35 points
        (2000, 60.0, 69.5, 0.60, 4, "scratch"),  # features clearly below random beat "plenty of data"
        (100, 40.0, 49.0, 0.40, 4, "scratch"),  # enough data, features 9 points below random ones
        (100, 50.0, 49.0, None, 4, "scratch"),  # 50+ a class, a source adding 1 point: not worth its bias
        (100, 70.0, 49.0, 0.70, 4, "full"),  # 50+ a class, different but worth 21 points: fine-tune all
        (20, 60.0, 40.0, 0.79, 4, "full"),  # 20 a class, different, not unlike
        (10, 90.0, 50.0, None, 1, "last:1"),  # ...never more groups than the model has before the head
        (100, 90.0, 50.0, 0.92, 4, "full"),  # moderate data, similar
        (20, 75.0, 85.0, 0.8, 4, "last:2"),  # below random features, but random ones already score 85%
        (100, 90.0, 82.0, 0.95, 4, "full"),  # a source adding 8 points at 100 a class, random ones at 82%
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
    still = per_class < SCRATCH_MIN and probe_source - probe_random < SCRATCH_GAIN  # said, not followed
    assert still == any("the source is still the better start" in r for r in reasons)
    ceiling = per_class >= SCRATCH_MIN and probe_random >= CEILING  # the gain has no room
    assert ceiling == any("random features alone already score" in r for r in reasons)
    # data, probe, [similarity,] [random,] [too few for scratch, or the ceiling,] verdict
    assert len(reasons) == 3 + (kept is not None) + no_better + (still or ceiling)


def test_rule_table_thresholds():
    """The size bands: under SCRATCH_MIN the table; to OWN_FEATURES_MIN the unlike and worse-than-random
    rules; from OWN_FEATURES_MIN a source must add WORTH_GAIN points. SMALL and LARGE bound the table's sizes."""
    assert recommend(SMALL - 1, 60, 40, None, 4)[0] == "full"  # little, different (no source accuracy)
    assert recommend(SMALL - 1, 90, 40, None, 4)[0] == "last:2"  # little, similar
    assert recommend(SMALL, 90, 40, None, 4)[0] == "full"  # moderate, similar
    assert recommend(LARGE + 1, 90, 40, None, 4)[0] == "full"  # plenty
    assert recommend(SCRATCH_MIN, 50 + SCRATCH_GAIN - 0.1, 50, 0.9, 4)[0] == "scratch"  # worse than random
    assert recommend(SCRATCH_MIN, 50 + SCRATCH_GAIN + 0.1, 50, 0.9, 4)[0] == "last:2"
    assert recommend(SCRATCH_MIN - 1, 50 + SCRATCH_GAIN - 0.1, 50, 0.9, 4)[0] == "last:2"  # too few images
    assert "no better than random ones, train from scratch" in recommend(SCRATCH_MIN, 40, 50, None, 4)[1][-1]
    assert recommend(SCRATCH_MIN, 45, 40, UNLIKE_PROBE / 100 - 0.001, 4)[0] == "scratch"  # unlike source
    assert recommend(SCRATCH_MIN, 45, 40, UNLIKE_PROBE / 100, 4)[0] == "full"
    assert recommend(SCRATCH_MIN - 1, 45, 40, 0.3, 4)[0] == "full"  # too few images to learn from scratch
    assert recommend(OWN_FEATURES_MIN - 1, 45, 40, 0.5, 4)[0] == "scratch"  # unlike, under the band
    assert "a substantially different source" in recommend(20, 45, 40, 0.5, 4)[1][-1]
    gain = 40 + WORTH_GAIN
    assert recommend(OWN_FEATURES_MIN, gain - 0.1, 40, 0.9, 4)[0] == "scratch"  # not worth its bias
    assert recommend(OWN_FEATURES_MIN, gain, 40, 0.9, 4)[0] == "full"
    assert recommend(OWN_FEATURES_MIN - 1, gain - 0.1, 40, 0.5, 4)[0] == "scratch"  # unlike, under the band
    assert recommend(OWN_FEATURES_MIN - 1, gain - 0.1, 40, 0.9, 4)[0] == "full"
    assert recommend(OWN_FEATURES_MIN, gain, 40, 0.5, 4)[0] == "full"  # unlike, yet worth 15 points
    assert "not worth its bias" in recommend(OWN_FEATURES_MIN, 45, 40, 0.9, 4)[1][-1]
    assert "little data" in recommend(SMALL - 1, 90, 40, 0.95, 4)[1][0]
    assert "plenty of data" in recommend(LARGE + 1, 90, 40, 0.95, 4)[1][0]
    assert "near-best in 18 of 25 measured rows" in recommend(5, 60, 40, 0.6, 4)[1][-1]
    # random features at CEILING: no scratch rule holds, whatever the gain
    assert recommend(OWN_FEATURES_MIN, CEILING - 10.1, CEILING - 0.1, 0.9, 4)[0] == "scratch"
    assert recommend(OWN_FEATURES_MIN, CEILING - 10, CEILING, 0.9, 4)[0] == "full"
    assert (
        "random features alone already score"
        in recommend(OWN_FEATURES_MIN, CEILING - 10, CEILING, 0.9, 4)[1][-2]
    )
    assert "the textbook's choice" in recommend(LARGE + 1, 60, 40, None, 4)[1][-1]


def test_the_table_is_refitted_on_the_recorded_rows():
    """TABLE and RECORD are what `calibrate.refit_table` gives on the study's recorded LeNet-5 rows measured
    before the dissimilar-5 grid (reports/transfer/results.json), with the scratch rules as they stand."""
    from pathlib import Path

    from cnnzoo.transfer.advise import RECORD, TABLE, _cell, _scratch_rule
    from cnnzoo.transfer.calibrate import refit_table

    results = json.loads((Path(__file__).parents[2] / "reports/transfer/results.json").read_text())
    before = (
        "calibration",
        "held-out",
        "unseen",
        "dissimilar",
        "dissimilar-2",
        "dissimilar-3",
        "dissimilar-4",
    )
    rows = [r for g in results["grids"] if g["name"] in before for s in g["settings"] for r in s["rows"]]
    assert len(rows) == 73
    assert refit_table(rows, _scratch_rule, _cell) == (TABLE, RECORD)


def test_unsure_near_the_scratch_gain_from_ten_a_class():
    near = [a for a in ambiguities(20, 50 + SCRATCH_GAIN + 1, 50, 0.9) if "below which scratch won" in a]
    assert near
    assert not any("below which scratch won" in a for a in ambiguities(20, 60, 50, 0.9))
    assert not any("below which scratch won" in a for a in ambiguities(5, 50 + SCRATCH_GAIN + 1, 50, 0.9))


def test_unsure_near_the_unlike_threshold():
    assert any("unlike the target" in a for a in ambiguities(20, 50, 40, UNLIKE_PROBE / 100 + 0.02))
    assert not any("unlike the target" in a for a in ambiguities(20, 50, 40, UNLIKE_PROBE / 100 + 0.2))
    assert not any("unlike the target" in a for a in ambiguities(5, 50, 40, UNLIKE_PROBE / 100))


def test_unsure_near_the_worth_gain_and_its_size():
    assert any("to be worth fine-tuning" in a for a in ambiguities(100, 40 + WORTH_GAIN + 1, 40, 0.9))
    assert not any("to be worth fine-tuning" in a for a in ambiguities(100, 40 + WORTH_GAIN + 5, 40, 0.9))
    # 40 a class, a source adding 5 points: scratch from 50, the table under it
    assert any("the rules' pick changes there" in a for a in ambiguities(40, 45, 40, 0.9))
    assert not any("the rules' pick changes there" in a for a in ambiguities(40, 80, 40, 0.9))


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
    assert advice.samples_per_class == 20 and advice.strategy == "last:2"  # little data, similar features


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
