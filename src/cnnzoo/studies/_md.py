"""The Markdown of the study reports, as lists of lines: a report is `join`ed from sections, each a heading
followed by its paragraphs, tables, figures and bullets, every block ending with one blank line.

A part of a section or document is a string (a paragraph: the string, then a blank line) or a list of
lines already made by these helpers (taken as is).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["join", "document", "section", "paragraph", "table", "figure", "bullets", "verdicts"]

Part = str | list[str]


def join(*parts: Part) -> list[str]:
    """The parts one after another: a string becomes a paragraph, a list of lines is kept as is."""
    lines: list[str] = []
    for part in parts:
        lines += paragraph(part) if isinstance(part, str) else part
    return lines


def document(title: str, *parts: Part) -> list[str]:
    """A report: `# title`, then its parts."""
    return join(f"# {title}", *parts)


def section(title: str, *parts: Part) -> list[str]:
    """`## title`, then its parts."""
    return join(f"## {title}", *parts)


def paragraph(text: str) -> list[str]:
    return [text, ""]


def table(headers: list[str], rows: list[list]) -> list[str]:
    """A Markdown table (every cell through `str`), then a blank line."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def figure(path: str, alt: str | None = None) -> list[str]:
    """An image of the report's folder (`alt`: its text, the file's name without .png by default)."""
    return paragraph(f"![{path.removesuffix('.png') if alt is None else alt}]({path})")


def bullets(items: Iterable[str]) -> list[str]:
    """A list, one `- item` a line, then a blank line."""
    return [f"- {item}" for item in items] + [""]


def verdicts(claims: Iterable[tuple[str, str, str]]) -> list[str]:
    """(verdict, claim, figures) as `- **verdict**: claim (figures).` bullets."""
    return bullets(f"**{verdict}**: {claim} ({figures})." for verdict, claim, figures in claims)
