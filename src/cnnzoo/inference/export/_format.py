"""What an export format is, and the registry `export_model` and the model card read.

A format is one file of the export folder: how it is written, how it is checked against the PyTorch model,
and how a reader loads it (the model card's snippet). `inference/export/__init__.py` registers the built-in
ones; a new format is one module declaring an `ExportFormat` plus its line there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from ...errors import CnnzooError


class Report(Protocol):
    """What a format's check fills and the card reads: `ExportReport` (named here, not imported from the
    package, so the format modules do not depend on the package that registers them)."""

    source: str
    files: list[str]  # the folder's files written so far, in order
    images: str  # where the parity images came from
    parity: list[dict]  # per batch size: images, max_abs_diff, relative, top1
    checks: list[str]  # one line per other check that passed


@dataclass(frozen=True)
class ExportFormat:
    """One file of an export folder.

    name             what `--format` says (lower case, no comma)
    filename         the file it writes into the folder
    write            write(model, path, x): writes the file; `x` is the parity batch (real test images,
                     preprocessed as in training), for exporters that trace an example input
    check            check(model, path, x, report): measures the written file against the PyTorch model and
                     records it in the report (a line in `report.checks`, or rows in `report.parity`);
                     raises `CnnzooError` saying by how much when it fails, so nothing is published
    loading_snippet  loading_snippet(config, out): the Python lines of the card's "how to load this file"
    write_order      among the chosen formats, lower is written and checked first (the order of the
                     report's files and checks; the card lists formats in registration order)
    card_parity      card_parity(report): lines of the card's parity section before the check lines, if any
    description      what the file is, for the card's list of the folder's files
    """

    name: str
    filename: str
    write: Callable[[nn.Module, Path, torch.Tensor], None]
    check: Callable[[nn.Module, Path, torch.Tensor, Report], None]
    loading_snippet: Callable[[dict, Path], list[str]]
    write_order: int = 100
    card_parity: Callable[[Report], list[str]] | None = None
    description: str = ""


_REGISTRY: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Add a format; `--format` and the card list formats in the order they were registered."""
    if not fmt.name or fmt.name != fmt.name.lower() or any(c in fmt.name for c in ", \t"):
        raise ValueError(f"export format name {fmt.name!r}: lower case, no comma or spaces")
    if fmt.name in _REGISTRY:
        raise ValueError(f"export format {fmt.name!r} is already registered")
    _REGISTRY[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    del _REGISTRY[name]


def export_formats() -> tuple[ExportFormat, ...]:
    """The registered formats, in registration order."""
    return tuple(_REGISTRY.values())


def format_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def logits_in_fresh_python(code: str, target: Path, x: Tensor, failed: str, *, timeout: int) -> Tensor:
    """Run `code` (argv: `target`, an input file, an output file) in a Python that never imports cnnzoo
    (`-I`, no PYTHONPATH, a scratch folder), feed it `x` and read back the logits it saves: how a format
    proves it loads without cnnzoo. A failure is one CnnzooError, `failed` followed by the last error line."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = Path(tmp) / "x.pt", Path(tmp) / "y.pt"
        torch.save(x, inp)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env.pop("PYTHONPATH", None)
        done = subprocess.run(
            [sys.executable, "-I", "-c", code, str(target), str(inp), str(outp)],
            capture_output=True, text=True, cwd=tmp, env=env, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CnnzooError(f"{failed}: {why}")
        return torch.load(outp, weights_only=True)
