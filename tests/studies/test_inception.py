"""The inception study at a tiny size: branch arithmetic, 1x1 reductions, receptive fields, the 12x claim."""

from __future__ import annotations

import io
import json
import sys

import pytest

from cnnzoo.models.googlenet import INCEPTION_CFG
from cnnzoo.studies import get_study
from cnnzoo.studies import inception as study


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("inception")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdout", io.StringIO())
        study.run_inception_study(out, preset="tiny")
        # it fits no network: no events, and no line about them (a slow machine may show its progress lines)
        printed = [
            line for line in sys.stdout.getvalue().splitlines() if not line.startswith("study inception: ")
        ]
        assert printed == [] and not (out / ".work").exists()
    return out, json.loads((out / "results.json").read_text())


def test_branches_of_inception3a(results):
    _, r = results
    red, naive = r["variants"]["reduced"], r["variants"]["naive"]
    assert red["branches"]["1x1"]["params"] == 64 * (192 + 1)
    assert red["branches"]["5x5"]["params"] == 16 * (192 + 1) + 32 * (16 * 25 + 1)
    assert naive["branches"]["5x5"]["params"] == 32 * (192 * 25 + 1)
    # concatenation: the output has the sum of the branch widths
    assert (
        red["total"]["channels"] == 64 + 128 + 32 + 32 == sum(b["channels"] for b in red["branches"].values())
    )
    assert naive["total"]["channels"] == 64 + 128 + 32 + 192
    assert (
        naive["total"]["params"] > 2 * red["total"]["params"]
        and naive["total"]["macs"] > 2 * red["total"]["macs"]
    )


def test_receptive_fields_measured_equal_computed(results):
    _, r = results
    for variant in r["variants"].values():
        for row in [*variant["branches"].values(), variant["total"]]:
            assert row["rf_measured"] == row["rf"]
    paper = {b: r["variants"]["reduced"]["branches"][b]["rf_measured"] for b in study.BRANCHES}
    assert paper == {"1x1": [1, 1], "3x3": [3, 3], "5x5": [5, 5], "pool": [3, 3]}
    # cnnzoo's googlenet keeps torchvision's 3x3 in the "5x5" branch, and the measurement shows it
    assert r["variants"]["cnnzoo googlenet"]["branches"]["5x5"]["rf_measured"] == [3, 3]


def test_stack_arithmetic_matches_the_summary_and_table_1(results):
    _, r = results
    first = r["stack"]["reduced"][0]
    assert first["params"] == r["variants"]["reduced"]["total"]["params"]
    assert first["macs"] == r["variants"]["reduced"]["total"]["macs"]
    assert r["stack"]["naive"][0]["macs"] == r["variants"]["naive"]["total"]["macs"]
    names = list(INCEPTION_CFG)
    for row, nxt in zip(r["stack"]["reduced"], names[1:], strict=False):
        assert row["out"] == INCEPTION_CFG[nxt][0]  # each block reads what the previous one wrote
    naive = r["stack"]["naive"]
    assert all(b["in"] > a["in"] for a, b in zip(naive, naive[1:], strict=False))  # channels only grow


def test_googlenet_against_alexnet_and_report(results):
    out, r = results
    s = r["sizes"]
    assert s["googlenet"] == 6_624_904 and s["alexnet2012"] == 60_965_224
    assert 9 < s["alexnet2012"] / s["googlenet"] < 12
    text = (out / "README.md").read_text()
    assert "| **module** | **163,696** |" in text and "Did not hold here" in text
    for png in ("branches.png", "stack.png", "receptive_fields.png"):
        assert (out / png).stat().st_size > 1000 and f"({png})" in text
    (out / "README.md").unlink()
    assert get_study("inception").report(out).exists()
