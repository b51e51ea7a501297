"""The export folder's README.md: the Hub's metadata, data, recipe, accuracy, the folder's files, the
parity figures, how to load each file.

Built from a table of sections; each format contributes its description, its loading snippet (and parity
lines). The card describes the folder as written: only the files in it, and only the checks that ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch

from ..._version import __version__
from ...artifacts.exported import ONNX, WEIGHTS
from ._format import ExportFormat, Report, export_formats
from .hub import front_matter


class _Card(NamedTuple):
    """What every section reads."""

    config: dict
    report: Report
    formats: tuple[ExportFormat, ...]  # the chosen ones, in registration order
    prov: dict
    out: Path


def model_card(config: dict, report: Report, formats: list[str], prov: dict, out: Path) -> str:
    card = _Card(config, report, tuple(f for f in export_formats() if f.name in formats), prov, out)
    data = config.get("dataset") or "unknown data"
    lines = [
        *front_matter(config, prov, files=report.files),
        f"# {config['model']} trained on {data}",
        "",
        f"Exported by cnnzoo {__version__} (torch {torch.__version__}) from `{report.source}`.",
    ]
    for title, section in SECTIONS:
        lines += ["", f"## {title}", "", *section(card)]
    return "\n".join(lines) + "\n"


def _model(card: _Card) -> list[str]:
    config, prov = card.config, card.prov
    name, data = config["model"], config.get("dataset") or "unknown data"
    n, c, s = config["num_classes"], config["in_chans"], config["image_size"]
    acc = (
        f"{prov['accuracy']:.2f}% top-1 on the {data} test split"
        if prov.get("accuracy") is not None
        else "not recorded"
    )
    return [
        f"- architecture: `{name}` {json.dumps(config['model_kwargs']) if config['model_kwargs'] else ''}".rstrip(),
        f"- input: `(batch, {c}, {s}, {s})` float32, normalised per channel: `(pixels / 255 - mean) / std` with "
        f"mean {config['mean']} and std {config['std']}",
        f"- output: `(batch, {n})` logits over the classes in `config.json` (`classes`, in order); softmax gives "
        "probabilities",
        f"- training data: {data}; measured accuracy: {acc}",
        *_training(card),
    ]


def _training(card: _Card) -> list[str]:
    """How the weights were made: framing, the command, the recipe (each when known)."""
    lines = []
    if card.config.get("framing"):
        f = card.config["framing"]
        lines.append(
            f"- the training images were framed (light ink on black, longest side {f['box']} px, centred by "
            f"{f['centre']} in {f['canvas']}x{f['canvas']}): frame a person's picture the same way "
            "(`cnnzoo.inference.framing.frame_image`, on by default in `cnnzoo predict` and `cnnzoo.load`)"
        )
    if card.prov.get("command"):
        lines.append(f"- made by: `{card.prov['command']}`")
    if card.prov.get("recipe"):
        r = card.prov["recipe"]
        keys = ("epochs", "batch_size", "optimizer", "lr", "schedule", "weight_decay", "augment", "seed")
        # the options that change what was learned, when they are on (a subset is not a full run)
        extras = ("train_subset", "label_smoothing", "grad_clip", "ema")
        shown = [f"{k} {r[k]}" for k in keys if k in r] + [f"{k} {r[k]}" for k in extras if r.get(k)]
        lines.append("- recipe: " + ", ".join(shown))
    return lines


def _files(card: _Card) -> list[str]:
    """Every file of the folder, what it is, and which one cnnzoo reads."""
    what = {"config.json": "what a reader needs to feed the model: architecture, classes, input size, "
            "channels, mean/std, framing, versions (cnnzoo's keys, and timm's beside them)"}  # fmt: skip
    what |= {f.filename: f.description or f"the {f.name} export" for f in card.formats}
    files = [*card.report.files, "README.md"]
    lines = [f"- `{name}`: {what.get(name, 'this model card')}" for name in files]
    if WEIGHTS in files:
        reads = f"`{WEIGHTS}` (PyTorch)"
    elif ONNX in files:
        reads = f"`{ONNX}` through onnxruntime (no PyTorch weights here: no fine-tuning or re-export from this folder)"
    else:
        return [*lines, "", f"`cnnzoo.load` cannot read this folder: it reads `{WEIGHTS}` or `{ONNX}`."]
    return [
        *lines,
        "",
        f"`cnnzoo predict {card.out} IMAGE` and `cnnzoo.load({str(card.out)!r})` read {reads}.",
    ]


def _parity(card: _Card) -> list[str]:
    """The checks that ran on this folder's files; where there is no ONNX file, the card says so."""
    lines = [line for f in card.formats if f.card_parity for line in f.card_parity(card.report)]
    lines += [f"- {c}" for c in card.report.checks]
    if ONNX not in card.report.files:
        lines.append("- (no ONNX file in this export, so no onnxruntime parity: add `--format onnx`)")
    return lines


def _loading(card: _Card) -> list[str]:
    lines = []
    for f in card.formats:
        lines += ["```python", *f.loading_snippet(card.config, card.out), "```", ""]
    return lines


SECTIONS = (("Model", _model), ("Files", _files), ("Parity", _parity), ("Loading each file", _loading))
