"""The lenet study at a tiny size: parameter table, the 28x28 arithmetic, runs, report and re-rendering."""

from __future__ import annotations

import json

import pytest

from cnnzoo.studies import get_study
from cnnzoo.studies import lenet as study


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("lenet")
    study.run_lenet_study(out, preset="tiny", device="cpu")
    return out


def test_parameter_table_is_the_lecture_and_the_paper():
    t = study.parameter_table()
    assert [t["lecture"][k] for k in ("C1", "C3", "C5", "F6", "output")] == [156, 2_416, 48_120, 10_164, 850]
    assert t["lecture_total"] == 61_706 and t["paper_total"] == 60_000
    assert {k: t["paper_model"][k] for k in study.PAPER_LAYERS} == study.PAPER_LAYERS
    assert t["c3_connections"] == 60
    # the explained differences account for the whole gap between the two totals
    assert sum(d["delta"] for d in t["differences"].values()) == 60_000 - 61_706


def test_first_output_is_28_because_of_the_padding():
    fo = study.first_output()
    assert fo["padded"] == 32 and fo["kernel"] == 5
    assert fo["c1"] == [6, 28, 28] and fo["padded"] - fo["kernel"] + 1 == 28
    assert fo["c5_receptive_field"] == 32


def test_runs_and_report(report):
    results = json.loads((report / "results.json").read_text())
    assert set(results["runs"]) == {"lenet5", "lenet5_1998"}  # no distortions row in the tiny preset
    for run in results["runs"].values():
        (seed,) = run["seeds"]
        assert 0 <= seed["test_error"] <= 100 and len(seed["curve"]) == results["preset_config"]["epochs"]
    assert results["machine"]["cores"] >= 1 and results["seconds"] > 0
    text = (report / "README.md").read_text()
    assert "| C3 | 2,416 | 2,416 | 1,516 | 1,516 |" in text
    assert "exactly the difference of the totals" in text and "paper's 0.95%" in text
    for png in (
        "test_error.png",
        "parameters.png",
        "confused.png",
        "filters.png",
        "feature_maps.png",
        "gradcam.png",
    ):
        assert (report / png).stat().st_size > 1000, png
        assert f"({png})" in text
    digits = results["confusions"]["digits"]
    assert all(d["true"] != d["pred"] for d in digits)
    assert [d["p"] for d in digits] == sorted((d["p"] for d in digits), reverse=True)


def test_report_rerenders_without_training(report, monkeypatch):
    (report / "README.md").unlink()
    (report / "test_error.png").unlink()
    monkeypatch.setattr(study, "fit_quiet", lambda *a, **k: pytest.fail("re-rendering trained a network"))
    path = get_study("lenet").report(report)
    assert path.exists() and (report / "test_error.png").exists()
