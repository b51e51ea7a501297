"""The study registry and reports/README.md, the index written from each study's results.json."""

from __future__ import annotations

import shutil
from pathlib import Path

from cnnzoo.studies import get_study, list_studies
from cnnzoo.studies._index import MARKER, refresh_index, write_index
from cnnzoo.studies._registry import registered

REPORTS = Path(__file__).resolve().parents[2] / "reports"
NAMES = ["architectures", "augmentation", "degradation", "inception", "lenet", "transfer", "vgg-stacks"]


def test_every_study_is_registered_with_a_finding():
    assert list_studies() == NAMES
    for name in NAMES:
        study = get_study(name)
        assert study.default_out == f"reports/{name}"
        assert study.finding is not None


def test_index_lists_every_study(tmp_path):
    (tmp_path / "transfer").mkdir()
    for f in ("results.json", "README.md"):
        shutil.copy(REPORTS / "transfer" / f, tmp_path / "transfer" / f)
    text = write_index(tmp_path, registered()).read_text()
    assert MARKER in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| study")]
    assert len(rows) == len(NAMES)
    transfer = next(r for r in rows if "`transfer`" in r)
    assert "advice on the held-out rows" in transfer and "principles held" in transfer  # its own finding()
    assert "(transfer/README.md)" in transfer
    assert sum("| not run |" in r for r in rows) == len(NAMES) - 1


def test_refresh_only_rewrites_its_own_index(tmp_path):
    (tmp_path / "lenet").mkdir()
    foreign = tmp_path / "README.md"
    foreign.write_text("someone else's notes\n")
    refresh_index(tmp_path / "lenet", registered())
    assert foreign.read_text() == "someone else's notes\n"
    write_index(tmp_path, registered())
    foreign.write_text(foreign.read_text() + "\nstale line\n")
    refresh_index(tmp_path / "lenet", registered())
    assert "stale line" not in foreign.read_text()


def test_a_registered_studys_report_refreshes_the_index(tmp_path):
    """`cnnzoo study NAME --report-only` (the registry's study) rewrites the index above the report."""
    shutil.copytree(REPORTS / "inception", tmp_path / "inception")
    write_index(tmp_path, registered())
    index = tmp_path / "README.md"
    index.write_text(index.read_text() + "\nstale line\n")
    get_study("inception").report(tmp_path / "inception")
    assert "stale line" not in index.read_text() and "[`inception`](inception/README.md)" in index.read_text()


def test_no_module_of_studies_imports_itself_back():
    """The package imports the studies, the studies the registry, the registry the index, and none of them
    imports back (function-level imports included; none by name through importlib, which hid such a cycle),
    nor the command line: the library does not import its own front end."""
    import ast
    import graphlib

    import cnnzoo.studies

    package = Path(cnnzoo.studies.__file__).parent
    names = {p.stem for p in package.glob("*.py")}
    graph = {}
    for path in package.glob("*.py"):
        imported = set()
        text = path.read_text()
        assert "importlib" not in text, f"studies/{path.name} imports a module by name"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
                imported |= {t.split(".")[0] for t in targets if t.split(".")[0] in names}
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module != "cli", f"studies/{path.name} imports the command line"
        graph[path.stem] = imported - {path.stem}
    tuple(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert "__init__" not in set().union(*graph.values())


def test_committed_reports_ran_the_current_presets():
    """A preset changed without re-running the study leaves a report the code no longer makes."""
    import dataclasses
    import importlib
    import json

    for name in NAMES:
        if name == "transfer":
            continue
        module = importlib.import_module(f"cnnzoo.studies.{name.replace('-', '_')}")
        results = json.loads((REPORTS / name / "results.json").read_text())
        preset = json.loads(json.dumps(dataclasses.asdict(module.PRESETS[results["preset"]])))
        assert results["preset_config"] == preset, f"reports/{name} is stale: run `cnnzoo study {name}`"


def test_committed_lenet_report_ran_the_current_recipe():
    """The lenet study trains with `default_config("lenet5", "mnist")` (plus its budget): a recipe change
    without a re-run leaves its committed figures measuring an older recipe."""
    import json

    from cnnzoo.studies import lenet

    results = json.loads((REPORTS / "lenet" / "results.json").read_text())
    p = lenet.PRESETS[results["preset"]]
    for key, model, augment in lenet.RUNS:
        if key not in results["runs"]:
            continue
        ran = results["runs"][key]["config"]
        now = lenet.recipe(model, augment, p).to_dict()
        # tensorboard: where a run logs, not how it trains (the committed runs predate the field)
        skip = ("seed", "device", "tensorboard")
        differ = {k: (ran.get(k), now[k]) for k in now if k not in skip and ran.get(k) != now[k]}
        assert not differ, f"reports/lenet ran another recipe for {key} (ran, now): {differ}"
