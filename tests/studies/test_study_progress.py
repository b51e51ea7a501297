"""A running study shows its progress: fits done, the one running, time so far and, from the last run of the
same preset, the time left."""

from __future__ import annotations

import io
import json
import time

from cnnzoo.studies import lenet as study
from cnnzoo.studies._common import _progress_after
from cnnzoo.studies._progress import StudyProgress


def test_a_log_gets_a_line_every_interval_with_the_fit_running():
    stream = io.StringIO()  # not a terminal: whole lines
    with StudyProgress("demo", interval=0.02, stream=stream) as progress:
        progress.fit_started("lenet5-seed0")
        time.sleep(0.15)
        progress.fit_done()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and "\r" not in stream.getvalue()
    assert lines[0].startswith("study demo: ") and "0 fit(s) done, running lenet5-seed0" in lines[0]
    assert "left" not in lines[0]  # nothing to estimate from


def test_the_time_left_comes_from_the_last_run_of_the_preset():
    progress = StudyProgress("demo", expected_fits=4, expected_seconds=100.0, stream=io.StringIO())
    assert 99 < progress.left() <= 100  # no fit done yet: the last run's wall time
    progress.fit_seconds = [10.0, 10.0]
    assert progress.left() == 20.0  # two fits to go at this run's pace
    assert "2 of ~4 fit(s) done" in progress.line() and "~20 s left" in progress.line()


def test_a_study_records_its_fits_and_the_next_run_estimates_from_them(tmp_path, capsys):
    study.run_lenet_study(tmp_path, preset="tiny", device="cpu")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["fits"] >= 2
    progress = _progress_after("lenet", tmp_path, "tiny")
    assert progress.expected_fits == results["fits"] and progress.expected_seconds == results["seconds"]
    assert _progress_after("lenet", tmp_path, "full").expected_fits is None
