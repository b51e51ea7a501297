"""The vgg-stacks study at a tiny size: 18 vs 25 and 27 vs 49 weights, receptive fields measured = computed."""

from __future__ import annotations

import json

import pytest
import torch

from cnnzoo.studies import get_study
from cnnzoo.studies import vgg_stacks as study
from cnnzoo.studies._common import computed_rf, measured_rf


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("vgg-stacks")
    study.run_vgg_stacks_study(out, preset="tiny", device="cpu")
    return out, json.loads((out / "results.json").read_text())


def test_weights_per_channel_pair(results):
    _, r = results
    w = r["per_channel_pair"]["weights"]
    assert (w["3x3x2"], w["5x5"], w["3x3x3"], w["7x7"]) == (18, 25, 27, 49)
    assert w["3x3x2 linear"] == 18 and w["3x3x3 linear"] == 27
    assert r["per_channel_pair"]["savings"]["7x7 vs 3x3x3"] == pytest.approx(1 - 27 / 49)  # the 45%


def test_receptive_field_measured_equals_computed(results):
    _, r = results
    expected = {"5x5": 5, "3x3x2": 5, "3x3x2 linear": 5, "7x7": 7, "3x3x3": 7, "3x3x3 linear": 7}
    for kind, side in expected.items():
        assert r["receptive_fields"][kind] == {"computed": [side, side], "measured": [side, side]}, kind


def test_measured_rf_sees_a_dilated_kernel():
    # the measurement is not the computation restated: a dilated 3x3 (rf 5) is caught by both
    conv = torch.nn.Conv2d(2, 2, 3, dilation=2, padding=2)
    assert measured_rf(conv, (2, 11, 11)) == computed_rf(conv, (2, 11, 11)) == (5, 5)


def test_networks_trained_and_report(results):
    out, r = results
    nets = r["networks"]
    assert set(nets) == set(study.KINDS)
    for n in nets.values():
        assert len(n["runs"]) == 1 and 0 <= n["runs"][0]["test_acc"] <= 100
        assert n["speed"]["forward"] > 0 and n["speed"]["train"] > 0
    assert nets["3x3x3"]["cost"]["params"] < nets["7x7"]["cost"]["params"]
    assert nets["3x3x2"]["cost"]["macs"] < nets["5x5"]["cost"]["macs"]
    text = (out / "README.md").read_text()
    assert "| 3x3x2 | 18 | 5x5 | 5x5 |" in text and "| 7x7 | 49 | 7x7 | 7x7 |" in text
    assert "45% fewer weights" in text
    # one seed decides nothing, and one epoch has not converged: the accuracy claims are Budget-bound
    for verdict, _, figures in study.claims(r)[2:]:
        assert (
            verdict == "Budget-bound"
            and "one seed: no spread" in figures
            and "read as Inconclusive" in figures
        )
    for png in ("weights.png", "accuracy.png", "loss.png"):
        assert (out / png).stat().st_size > 1000 and f"({png})" in text
    (out / "README.md").unlink()
    assert get_study("vgg-stacks").report(out).exists()
