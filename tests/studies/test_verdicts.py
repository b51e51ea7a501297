"""What every study's verdict rests on: where a run writes (only the default run writes the committed report),
no spread verdict from one seed, the plateau criterion, and Budget-bound for runs still learning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cnnzoo.cli import main
from cnnzoo.studies import get_study
from cnnzoo.studies._common import (
    BUDGET_BOUND,
    ONE_SEED,
    PLATEAU,
    Plateau,
    budget_verdict,
    rerun_hint,
    spread_verdict,
)
from cnnzoo.studies._registry import run_folder
from cnnzoo.studies.vgg_stacks import compare

# --- where a run writes ----------------------------------------------------------------------------


def test_only_the_default_run_writes_the_committed_report():
    assert run_folder("lenet", "reports/lenet") == Path("reports/lenet")
    assert run_folder("lenet", "reports/lenet", "quick") == Path("runs/studies/lenet/quick")
    assert run_folder("lenet", "reports/lenet", "full", 1) == Path("runs/studies/lenet/full-seeds1")
    assert run_folder("lenet", "reports/lenet", "cuda") == Path("runs/studies/lenet/cuda")
    assert get_study("vgg-stacks").out_for("quick") == Path("runs/studies/vgg-stacks/quick")


def test_a_non_default_run_leaves_reports_alone(tmp_path, monkeypatch, capsys):
    """`cnnzoo study NAME --preset tiny` (as --quick) writes runs/studies/NAME/tiny/, nothing under reports/."""
    monkeypatch.chdir(tmp_path)
    assert main(["study", "inception", "--preset", "tiny"]) == 0
    assert (tmp_path / "runs/studies/inception/tiny/README.md").exists()
    assert not (tmp_path / "reports").exists()
    assert "runs/studies/inception/tiny/README.md" in capsys.readouterr().out
    # the Python API too: no out, a non-default preset
    path = get_study("inception").run(preset="tiny")
    assert path == Path("runs/studies/inception/tiny/README.md") and not (tmp_path / "reports").exists()
    assert "`cnnzoo study inception --preset tiny`" in path.read_text()


def test_an_unknown_preset_is_one_line(capsys):
    assert main(["study", "augmentation", "--preset", "tinny"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'tinny'" in err and "tiny" in err and "Traceback" not in err
    with pytest.raises(SystemExit):  # --quick is a preset: not both
        main(["study", "augmentation", "--quick", "--preset", "tiny"])


# --- one seed, spread ------------------------------------------------------------------------------


def test_one_seed_never_yields_a_spread_verdict():
    assert spread_verdict([(9.2, 0.0)], 1) == ("Inconclusive", ONE_SEED)
    assert spread_verdict([(9.2, 1.0), (3.0, 2.0)], 3) == ("Held", "")
    assert spread_verdict([(9.2, 1.0), (-3.0, 2.0)], 3)[0] == "Did not hold"
    assert spread_verdict([(9.2, 1.0), (1.0, 2.0)], 3) == (
        "Inconclusive",
        "the difference is within the spread",
    )
    assert spread_verdict([(-9.2, 1.0)], 3, want_positive=False)[0] == "Held"
    # the vgg-stacks figures of issue 20: 63.30 vs 72.50 with one seed is no "within the spread"
    verdict, figures = compare([72.5], [63.3])
    assert verdict == "Inconclusive" and ONE_SEED in figures and "± 0.00" not in figures
    assert compare([72.5, 73.0, 72.0], [63.3, 64.0, 63.0])[0] == "Held"


# --- convergence -----------------------------------------------------------------------------------


def test_plateau_criterion():
    flat = [2.0 * 0.5**e for e in range(8)] + [0.02] * 12  # falls, then flat for the last 12 epochs
    check = PLATEAU.check(flat)
    assert check["converged"] and check["window"] == 4 and check["improvement"] == pytest.approx(0.0)
    falling = [2.0 * 0.9**e for e in range(20)]  # 10% an epoch to the end
    assert not PLATEAU.check(falling)["converged"] and PLATEAU.check(falling)["improvement"] > 0.05
    # stuck high and creeping down (plain-56 at a short budget): a small fall for its level, still learning
    creeping = [2.3 - 0.01 * e for e in range(30)]
    assert not PLATEAU.check(creeping)["converged"] and PLATEAU.check(creeping)["improvement"] > 0.15
    assert not PLATEAU.check([2.3] * 30)["converged"]  # never fell: stuck, not converged
    fitted = [1.0 * 0.5**e for e in range(20)]  # still halving, but below the floor: fitted
    assert PLATEAU.check(fitted)["converged"]
    short = PLATEAU.check([1.0, 0.5, 0.4, 0.4, 0.4])  # too few epochs for a window and its smoothing
    assert not short["converged"] and short["improvement"] is None
    assert not PLATEAU.check([])["converged"]
    assert Plateau(tol=0.5).check(falling)["converged"]  # the threshold is the criterion's
    assert "5%" in PLATEAU.describe() and "20%" in PLATEAU.describe()


def test_budget_verdict():
    done, learning = {"converged": True}, {"converged": False}
    assert budget_verdict("Did not hold", [done, done], "run X") == ("Did not hold", "")
    verdict, note = budget_verdict("Did not hold", [done, learning], "run X")
    assert verdict == BUDGET_BOUND and "1 of 2 runs" in note and "read as Did not hold" in note
    assert note.endswith("run X")
    hint = rerun_hint("degradation", {"seconds": 1800}, "cuda", 10)
    assert "`cnnzoo study degradation --preset cuda --device cuda`" in hint and "about 5 h" in hint
    assert not math.isnan(float(hint.split("about ")[1].split(" h")[0]))
