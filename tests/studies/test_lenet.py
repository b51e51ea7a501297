"""The lenet study at a tiny size: parameter table, the 28x28 arithmetic, runs, report and re-rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnzoo.studies import get_study
from cnnzoo.studies import lenet as study
from cnnzoo.studies._common import study_log_dir


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


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*")}


def test_fits_write_tensorboard_events_beside_the_report_not_in_it(report):
    """Each fit's per-step and per-epoch scalars, its hyper-parameters and final figures, read back with
    TensorBoard's own reader from the log folder of a study run into a non-default folder (OUT/.work)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    root = report / ".work" / "tensorboard"
    assert sorted(p.name for p in root.iterdir()) == ["lenet5-none-seed0", "lenet5_1998-none-seed0"]
    assert not list(report.glob("events.out.tfevents.*")) and not (report / "tensorboard").exists()
    events = EventAccumulator(str(root / "lenet5-none-seed0"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"step/train_loss", "step/lr", "epoch/train_loss", "epoch/test_acc", "final/test_acc"} <= scalars
    (seed,) = json.loads((report / "results.json").read_text())["runs"]["lenet5"]["seeds"]
    assert [e.value for e in events.Scalars("epoch/test_acc")] == pytest.approx(
        [100 - e for e in seed["curve"]], abs=1e-4
    )
    assert events.Scalars("final/test_acc")[-1].value == pytest.approx(100 - seed["test_error"], abs=1e-4)
    starts = [
        plugin_data_pb2.HParamsPluginData.FromString(v).session_start_info
        for v in events.PluginTagToContent("hparams").values()
    ]
    hparams = {k: v.string_value or v.number_value for s in starts for k, v in s.hparams.items()}
    assert hparams["study"] == "lenet" and hparams["preset"] == "tiny" and hparams["model"] == "lenet5"
    assert hparams["label"] == "lenet5-none-seed0" and hparams["seed"] == 0


def test_rerendering_writes_no_events_and_the_same_report(report, monkeypatch):
    before, readme = _files(report), (report / "README.md").read_bytes()
    monkeypatch.setattr(study, "fit_quiet", lambda *a, **k: pytest.fail("re-rendering trained a network"))
    get_study("lenet").report(report)
    assert (report / "README.md").read_bytes() == readme
    assert {k: v for k, v in _files(report).items() if ".work" in k} == {
        k: v for k, v in before.items() if ".work" in k
    }


def test_the_default_report_logs_under_runs_another_out_beside_itself():
    assert study_log_dir("lenet", "reports/lenet", "reports/lenet") == Path("runs/studies/lenet")
    assert study_log_dir("lenet", "/tmp/x/lenet", "reports/lenet") == Path("/tmp/x/lenet/.work")


def test_a_paper_error_not_reached_is_budget_bound_until_the_runs_converge():
    def results(curve):
        seed = {"test_error": 1.5, "train_error_curve": curve}
        return {
            "preset_config": {"epochs": len(curve)},
            "seconds": 600.0,
            "runs": {"lenet5": {"seeds": [seed]}},
        }

    ((claim, verdict, figures),) = study.verdicts(results([9.0, 3.0, 2.0, 1.5]))  # 4 epochs: still falling
    assert verdict == "Budget-bound" and "--preset long" in figures and "0.95%" in claim
    flat = [9.0, 3.0, 1.0] + [
        0.5
    ] * 12  # a long plateau: the run can answer, and the paper's figure is missed
    assert study.verdicts(results(flat))[0][1] == "Did not hold"
    reached = results([9.0, 3.0])
    reached["runs"]["lenet5"]["seeds"][0]["test_error"] = 0.7
    assert study.verdicts(reached)[0][1] == "Held"  # reached is reached, converged or not
