"""`cnnzoo export`: a trained network leaves cnnzoo as one folder, with its parity measured.

    cnnzoo export runs/lenet5-mnist-... --format onnx,torchscript,safetensors --out exported/lenet5

writes, into a temporary folder beside `--out` that is renamed into place only when every check passed:

    config.json        architecture, builder kwargs, classes, input size, channels, mean/std, framing,
                       cnnzoo and torch versions: all a reader needs to feed the model; beside them timm's
                       keys (architecture, num_classes, label_names, pretrained_cfg: `hub.py`)
    model.safetensors  the weights; `config.json` + this file rebuild the model (checked: equal logits),
                       and so does `timm.create_model("local-dir:...")` where timm has the network
    model.onnx         `torch.onnx.export(dynamo=True)`, opset 18, a dynamic batch axis; checked with
                       onnxruntime on real test images at batch 1 and at another batch size
    model.pt           TorchScript; checked in a Python process that never imports cnnzoo
    README.md          the model card, opening with the Hugging Face Hub's metadata: data, recipe,
                       accuracy, the parity figures, how to load each file (with timm or torch.hub too)

A failed check (parity beyond the tolerance, top-1 disagreement) raises `CnnzooError` saying by how much,
and nothing is left behind.

Each file but config.json and README.md is a format: one module here declaring an `ExportFormat` (its
writer, its check, its loading snippet for the card), registered by importing it (one line below); `card.py` writes the README.
Reading an export folder back is `cnnzoo.artifacts.exported` (re-exported here).
"""

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..._version import __version__
from ...artifacts.exported import OnnxModel, is_export_folder, load_export
from ...artifacts.source import provenance
from ...data import load_dataset
from ...errors import CnnzooError
from ..framing import framing_for
from ..predictor import Predictor, open_model

# isort: off
# Importing a format's module registers it, in this order: --format's, the card's and FORMATS'.
from . import onnx, torchscript, safetensors  # noqa: F401

# isort: on
from ._format import ExportFormat as ExportFormat  # the extension point, for a format defined elsewhere
from ._format import export_formats, format_names
from ._format import register_format as register_format
from ._format import unregister_format as unregister_format
from .card import model_card
from .hub import timm_architecture, timm_fields
from .onnx import p_line

__all__ = ["FORMATS", "ExportReport", "export_model", "is_export_folder", "load_export", "parse_formats"]

FORMATS = format_names()  # the built-in formats (parse_formats also accepts ones registered later)
PARITY_IMAGES = 32  # real test images in the larger batch (the first ones also go through one at a time)


@dataclass
class ExportReport:
    out: Path
    files: list[str]
    source: str
    parity: list[dict] = field(default_factory=list)  # per batch size: images, max_abs_diff, relative, top1
    checks: list[str] = field(default_factory=list)  # one line per other check that passed
    images: str = ""  # where the parity images came from

    def lines(self) -> list[str]:
        out = [f"exported {self.source} to {self.out}: {', '.join(self.files)}"]
        out += [f"onnx parity, {p_line(p)}" for p in self.parity]
        out += self.checks
        return out


def parse_formats(text: str) -> list[str]:
    """ "onnx,torchscript" -> ["onnx", "torchscript"]; an unknown or empty format is one clear error."""
    known = format_names()
    names = [f.strip().lower() for f in str(text).split(",") if f.strip()]
    unknown = [f for f in names if f not in known]
    if unknown or not names:
        raise CnnzooError(
            f"unknown export format {', '.join(map(repr, unknown)) or repr(text)} (choose from {', '.join(known)})"
        )
    return list(dict.fromkeys(names))


def export_model(
    source: str | Path, out: str | Path, formats: list[str] | str = FORMATS, *, overwrite: bool = False
) -> ExportReport:
    """Export a run, checkpoint, export folder or bundled name into `out`; see the module docstring."""
    formats = parse_formats(formats) if isinstance(formats, str) else parse_formats(",".join(formats))
    out = Path(out)
    _check_out(out, overwrite)
    model, meta, label = open_model(source)
    if isinstance(model, OnnxModel):
        raise CnnzooError(
            f"{label} holds only model.onnx: exporting needs the PyTorch weights (model.safetensors)"
        )
    model = model.float().eval().cpu()
    config = export_config(model, meta, label)
    x, y, what = parity_batch(meta, config)
    chosen = sorted((f for f in export_formats() if f.name in formats), key=lambda f: f.write_order)
    tmp = _make_tmp(out)
    try:
        report = ExportReport(out, [], label, images=what)
        _write_json(tmp / "config.json", config)
        report.files.append("config.json")
        for fmt in chosen:
            fmt.write(model, tmp / fmt.filename, x)
            report.files.append(fmt.filename)
            fmt.check(model, tmp / fmt.filename, x, report)
        (tmp / "README.md").write_text(model_card(config, report, formats, provenance(source, meta), out))
        report.files.append("README.md")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CnnzooError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CnnzooError(
            f"--out {out} already exists and is not empty (choose another folder, or --overwrite)"
        )


def _make_tmp(out: Path) -> Path:
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as e:
        raise CnnzooError(f"cannot write the export to {out}: {e.strerror or e}") from None


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished folder into place (replacing an old export only now that the new one is whole)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; the export is an ordinary folder
    for f in tmp.iterdir():
        os.chmod(f, 0o666 & ~umask)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError as e:
        if old is not None:
            os.replace(old, out)
        raise CnnzooError(f"cannot write the export to {out}: {e.strerror or e}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def export_config(model: nn.Module, meta: dict, label: str) -> dict:
    """cnnzoo's keys (what its reader needs), then timm's beside them (`hub.timm_fields`)."""
    framing = framing_for(meta.get("dataset")) if int(meta["in_chans"]) == 1 else None
    kwargs = dict(meta.get("model_kwargs") or {})
    if timm_architecture(model, int(meta["image_size"])) == "inception_v3" and model.aux_logits:
        kwargs["aux_logits"] = False  # timm's layout has no auxiliary head (used only in training)
    config = {
        "format": "cnnzoo-export/1",
        "model": meta["model"],
        "model_kwargs": kwargs,
        "classes": list(meta["classes"]),
        "num_classes": len(meta["classes"]),
        "in_chans": int(meta["in_chans"]),
        "image_size": int(meta["image_size"]),
        "input_shape": ["batch", int(meta["in_chans"]), int(meta["image_size"]), int(meta["image_size"])],
        "mean": list(meta["mean"]),
        "std": list(meta["std"]),
        "normalize": "x = (pixels / 255 - mean) / std, per channel; pixels are the image resized to image_size",
        "dataset": meta.get("dataset"),
        "framing": None
        if framing is None
        else {
            "box": framing.box,
            "at": list(framing.at),
            "centre": framing.centre,
            "canvas": framing.canvas,
        },  # fmt: skip
        "source": label,
        "versions": {"cnnzoo": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
    }
    return config | timm_fields(model, meta)


def parity_batch(meta: dict, config: dict) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Real test images of the model's dataset, preprocessed as in training: (x, labels, description).

    Falls back to random images (and says so) when the dataset cannot be loaded here."""
    n = PARITY_IMAGES
    try:
        test = load_dataset(meta["dataset"]).test
        images, labels = test.images[:n], test.labels[:n]
        what = f"{meta['dataset']} test images"
    except (CnnzooError, KeyError, OSError):
        gen = torch.Generator().manual_seed(0)
        size = config["image_size"]
        images = torch.randint(0, 256, (n, config["in_chans"], size, size), generator=gen, dtype=torch.uint8)
        labels, what = None, "random images (the training data set is not available here)"
    predictor = Predictor(nn.Identity(), meta, fit=False)
    x = predictor.preprocess([im for im in images])  # the training pipeline's resize and normalisation
    return x.float().cpu(), labels, what
