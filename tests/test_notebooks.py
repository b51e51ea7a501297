"""The lecture's notebooks (notebooks/): each committed notebook was executed from its current source
(notebooks/src/NN_name.py), and each runs top to bottom with CNNZOO_QUICK=1 without an error.

Needs nbformat, nbclient, ipykernel and jupytext (the `dev` extra); without them these tests skip.
The kernel inherits this process's environment (PYTHONPATH and OMP_NUM_THREADS included).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

SOURCES = build.sources()
LECTURE = ["01_lenet", "02_alexnet_augmentation", "03_vgg", "04_inception", "05_resnet", "06_transfer"]
# A hang guard per notebook, not a speed test: the quick preset's goal is <= 60 s each on 2 cores
# (README's Notebooks section gives the measured figures).
QUICK_TIMEOUT = 300


def _needs(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module)


def test_the_six_notebooks_have_sources_and_readme_links_them():
    assert [s.stem for s in SOURCES] == LECTURE
    readme = (ROOT / "README.md").read_text()
    for name in LECTURE:
        assert f"(notebooks/{name}.ipynb)" in readme, f"README does not link notebooks/{name}.ipynb"


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.stem)
def test_committed_notebook_was_executed_from_its_source(source):
    _needs("jupytext", "nbformat")
    assert build.check(source) is None


def test_the_check_catches_an_edited_cell(tmp_path, monkeypatch):
    _needs("jupytext", "nbformat")
    import nbformat

    source = SOURCES[0]
    edited = tmp_path / "src" / source.name
    edited.parent.mkdir()
    edited.write_text(source.read_text().replace("# # 1. LeNet-5", "# # 1. LeNet-5 (edited)", 1))
    committed = nbformat.read(build.notebook_path(source), as_version=4)
    monkeypatch.setattr(build, "NOTEBOOKS", tmp_path)
    nbformat.write(committed, tmp_path / f"{source.stem}.ipynb")
    assert "was not executed from the current" in build.check(edited)
    committed.metadata.cnnzoo["mode"] = "unknown"  # outputs that do not say which run made them
    nbformat.write(committed, tmp_path / f"{source.stem}.ipynb")
    assert "quick or the full run" in build.check(source)
    assert build.cells_hash(build.read_source(edited)) != build.cells_hash(build.read_source(source))


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.stem)
def test_notebook_runs_with_the_quick_preset(source):
    _needs("jupytext", "nbformat", "nbclient", "ipykernel")
    nb = build.read_source(source)
    build.execute(nb, quick=True, timeout=QUICK_TIMEOUT)  # raises on any cell's error
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    first = next(o for o in outputs if o.output_type == "stream")
    assert first.text.startswith("preset: quick")  # the kernel saw CNNZOO_QUICK=1
    assert any("image/png" in o.get("data", {}) for o in outputs), "no inline plot"
