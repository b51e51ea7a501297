"""README's Layout section shows every package of the library, so a newcomer finds where each thing lives."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Layout\n+```\n(.*?)```", text, re.S | re.M)
    assert match, "README.md has no '## Layout' section with a code block"
    return match.group(1)


def test_readme_layout_names_every_package():
    packages = sorted(p.parent.name for p in (ROOT / "src" / "cnnzoo").glob("*/__init__.py"))
    shown = set(re.findall(r"^  (\w+)/", layout_section(), re.M))
    assert packages and not set(packages) - shown, f"missing from README's Layout: {set(packages) - shown}"


def test_test_files_have_unique_names():
    """pytest imports test files outside a package by their base name: two of the same name stop the whole
    run at collection ("import file mismatch"), which a run of one folder never shows."""
    loose = [p for p in (ROOT / "tests").rglob("test_*.py") if not (p.parent / "__init__.py").exists()]
    names = [p.name for p in loose]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
