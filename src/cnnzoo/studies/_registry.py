"""The study registry: name -> how to run it and how to re-render its report, like the model registry.

A study module ends with `register_study(Study(...))`; the package (`studies/__init__.py`) imports every
study module, so the registry is full once `cnnzoo.studies` is imported, and `cnnzoo study NAME` takes its
choices from here. Every study writes `reports/NAME/README.md` (tables, PNG plots) and `results.json` when
run with its full preset and own seeds (any other run, unless told where: runs/studies/NAME/PRESET, see
`run_folder`), and has a `quick` preset for the test suite. This module imports no study (the studies import it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import unknown_name
from ._report_index import refresh_index

__all__ = ["Study", "register_study", "list_studies", "get_study", "registered", "run_folder"]

RUNS = Path("runs/studies")  # not committed (.gitignore): where every run but the default one writes


def run_folder(name: str, default_out: str, preset: str = "full", seeds: int | None = None) -> Path:
    """Where a run of study `name` writes when no --out is given: its committed report folder
    (`default_out`, reports/NAME) only for the default run (the full preset, its own seeds); any other
    (--quick, --preset, --seeds) writes to runs/studies/NAME/PRESET[-seedsN], never over a committed report."""
    if preset == "full" and seeds is None:
        return Path(default_out)
    return RUNS / name / (preset + (f"-seeds{seeds}" if seeds is not None else ""))


@dataclass(frozen=True)
class Study:
    name: str
    summary: str  # what it shows, one line (`cnnzoo study --help`, reports/README.md)
    run: Callable[..., Path]  # run(out, *, quick, seeds, device) -> the report written
    report: Callable[[str | Path], Path]  # re-render the report from out/results.json, no training
    default_out: str
    # results.json -> (verdict, one line of finding) for reports/README.md (`studies/_report_index.py`)
    finding: Callable[[dict], tuple[str, str]] | None = None
    presets: tuple[str, ...] = (
        "full",
        "quick",
    )  # what `--preset` takes (run(..., preset=) for more than these)

    def out_for(self, preset: str = "full", seeds: int | None = None) -> Path:
        """The folder a run of `preset` with `seeds` (--seeds, None: the preset's) writes without --out."""
        return run_folder(self.name, self.default_out, preset, seeds)


_STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    if study.name in _STUDIES:
        raise ValueError(f"study {study.name!r} registered twice")
    _STUDIES[study.name] = study
    return study


def list_studies() -> list[str]:
    return sorted(_STUDIES)


def registered() -> list[Study]:
    """Every registered study, by name, as registered."""
    return [_STUDIES[name] for name in list_studies()]


def get_study(name: str) -> Study:
    """The study registered as `name`, its run and report also refreshing the index above the report they
    write (reports/README.md, when `_report_index` wrote it): what `cnnzoo study NAME` runs."""
    if name not in _STUDIES:
        raise unknown_name("study", name, _STUDIES, f"the studies: {', '.join(sorted(_STUDIES))}")
    study = _STUDIES[name]
    return replace(study, run=_refreshing(study.run), report=_refreshing(study.report))


def _refreshing(write: Callable[..., Path]) -> Callable[..., Path]:
    """`write` (a study's run or report, returning the README it wrote), then the index above it refreshed."""

    @functools.wraps(write)
    def write_and_refresh(*args, **kwargs) -> Path:
        path = write(*args, **kwargs)
        refresh_index(Path(path).parent, registered())
        return path

    return write_and_refresh
