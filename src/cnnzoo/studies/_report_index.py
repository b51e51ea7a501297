"""reports/README.md: one line of finding per study, computed from each study's results.json.

`python -m cnnzoo.studies._index [DIR]` writes it (`_index.py`, the command; this module is what it runs,
kept apart so the registry imports it without importing the command's module, which `python -m` warns of).

A study supplies `finding(results) -> (verdict, line)` in its registration; for one that does not (transfer),
the line counts the verdict bullets ("- **Held**", "- **Did not hold**") of its own generated README. Every
study run or report taken from the registry (`cnnzoo.studies.get_study`, as `cnnzoo study` takes them) also
refreshes the index of the folder above its report when that index was written by this module
(`refresh_index`, called by `_registry`). The studies come in as an argument (`_registry.registered()`: each
a `Study`, of which this module reads name, summary, default_out and finding): it imports none of them, nor
the registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["write_index", "refresh_index", "MARKER"]

MARKER = "<!-- written by `python -m cnnzoo.studies._index` from each study's results.json -->"


def _from_readme(readme: Path) -> tuple[str, str]:
    """For a study without a `finding` (transfer): count the verdict bullets of its own generated report."""
    text = readme.read_text() if readme.exists() else ""
    held = text.count("- **Held**")
    not_held = text.count("- **Did not hold**")
    total = held + not_held
    if not total:
        return "-", "see its report"
    verdict = "Held" if held == total else ("Partly held" if held else "Did not hold")
    return verdict, f"{held} of {total} claims held in its report's list of principles"


def _finding(study, results: dict, folder: Path) -> tuple[str, str]:
    if study.finding is not None:
        return study.finding(results)
    return _from_readme(folder / "README.md")


def write_index(root: str | Path, studies: Iterable) -> Path:
    """`root`/README.md: one row per study of `studies` (the registered ones: `_registry.registered()`)."""
    root = Path(root)
    lines = [
        "# Studies: the lecture's claims, measured",
        "",
        MARKER,
        "",
        "Each study is `cnnzoo study NAME` (`--quick` for a small preset); its folder holds README.md (tables, plots, "
        "the exact command, machine, seeds and wall time) and results.json (every number), and `cnnzoo study NAME "
        "--report-only` re-renders the report from results.json. Verdicts are about *this* machine and budget.",
        "",
        "| study | verdict here | finding | preset, wall time |",
        "|---|---|---|---|",
    ]
    for study in sorted(studies, key=lambda s: s.name):
        name = study.name
        folder = root / Path(study.default_out).name
        path = folder / "results.json"
        if not path.exists():
            lines.append(f"| `{name}` | not run | {study.summary} | - |")
            continue
        results = json.loads(path.read_text())
        verdict, line = _finding(study, results, folder)
        minutes = results.get("minutes") or round(results.get("seconds", 0) / 60, 1)
        lines.append(
            f"| [`{name}`]({Path(study.default_out).name}/README.md) | **{verdict}** | {line} | "
            f"{results.get('preset', '?')}, {minutes} min |"
        )
    lines.append("")
    out = root / "README.md"
    out.write_text("\n".join(lines))
    return out


def refresh_index(report_dir: Path, studies: Iterable) -> None:
    """Rewrite the index above `report_dir` if it is one this module wrote (never a stranger's README)."""
    index = Path(report_dir).parent / "README.md"
    if index.exists() and MARKER in index.read_text():
        write_index(index.parent, studies)
