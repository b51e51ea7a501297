"""The study registry: name -> how to run it and how to re-render its report, like the model registry.

A study module ends with `register_study(Study(...))`; `cnnzoo study NAME` takes its choices from here.
Every study writes `reports/NAME/README.md` (tables, PNG plots) and `results.json`, and has a `quick`
preset for the test suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import unknown_name

__all__ = ["Study", "register_study", "list_studies", "get_study"]


@dataclass(frozen=True)
class Study:
    name: str
    summary: str  # what it shows, one line (`cnnzoo study --help`, reports/README.md)
    run: Callable[..., Path]  # run(out, *, quick, seeds, device) -> the report written
    report: Callable[[str | Path], Path]  # re-render the report from out/results.json, no training
    default_out: str
    # results.json -> (verdict, one line of finding) for reports/README.md (`studies/_index.py`)
    finding: Callable[[dict], tuple[str, str]] | None = None


_STUDIES: dict[str, Study] = {}
_MODULES = (
    "transfer",
    "lenet",
    "inception",
    "vgg_stacks",
    "degradation",
    "augmentation",
    "architectures",
)  # importing each registers its study


def register_study(study: Study) -> Study:
    if study.name in _STUDIES:
        raise ValueError(f"study {study.name!r} registered twice")
    _STUDIES[study.name] = study
    return study


def _ensure_loaded() -> None:
    import importlib

    for module in _MODULES:
        importlib.import_module(f"{__package__}.{module}")


def list_studies() -> list[str]:
    _ensure_loaded()
    return sorted(_STUDIES)


def get_study(name: str) -> Study:
    _ensure_loaded()
    if name not in _STUDIES:
        raise unknown_name("study", name, _STUDIES, f"the studies: {', '.join(sorted(_STUDIES))}")
    return _STUDIES[name]
