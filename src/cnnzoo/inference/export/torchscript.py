"""`model.pt`: TorchScript, checked in a Python process that never imports cnnzoo."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ...errors import CnnzooError
from ._format import ExportFormat, Report, logits_in_fresh_python, register_format

# Runs in a fresh interpreter: TorchScript must load and run without cnnzoo (nor its source) present.
_JIT_CHECK = """
import sys, torch
model = torch.jit.load(sys.argv[1])
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(x), sys.argv[3])
assert not any(m == "cnnzoo" or m.startswith("cnnzoo.") for m in sys.modules), "cnnzoo was imported"
"""


def write(model: nn.Module, path: Path, x: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    scripted.save(str(path))


def check(model: nn.Module, path: Path, x: torch.Tensor, report: Report) -> None:
    failed = "TorchScript check failed: torch.jit.load in a fresh Python process"
    got = logits_in_fresh_python(_JIT_CHECK, path, x, failed, timeout=300)
    with torch.no_grad():
        diff = (got - model(x)).abs().max().item()
    if diff > 1e-5 * max(1.0, model(x).abs().max().item()):
        raise CnnzooError(f"TorchScript check failed: its logits differ from PyTorch's by {diff:.3g}")
    report.checks.append(
        f"torchscript: torch.jit.load in a Python process without cnnzoo gives the same logits "
        f"(max |diff| {diff:.1e} on {len(x)} images)"
    )


def loading_snippet(config: dict, out: Path) -> list[str]:
    c, s = config["in_chans"], config["image_size"]
    return [
        "import torch  # no cnnzoo needed",
        'model = torch.jit.load("model.pt").eval()',
        f"logits = model(torch.zeros(1, {c}, {s}, {s}))",
    ]


FORMAT = ExportFormat(
    "torchscript", "model.pt", write, check, loading_snippet, write_order=20,
    description="TorchScript: the network and its weights, for torch.jit.load without cnnzoo",
)  # fmt: skip
register_format(FORMAT)
