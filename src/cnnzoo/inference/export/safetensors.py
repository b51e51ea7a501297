"""`model.safetensors`: the weights; `config.json` + this file rebuild the model (checked: equal logits).

Under timm's parameter names where timm has the network (`hub.py`), so the folder is also a timm / Hugging
Face Hub model folder; cnnzoo's reader maps them back. Where timm is installed, it is checked too."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ...artifacts.exported import load_export
from ...errors import CnnzooError
from ._format import ExportFormat, Report, register_format
from .hub import hub_snippet, timm_check, timm_state_dict


def write(model: nn.Module, path: Path, x: torch.Tensor) -> None:
    # the metadata is what the Hub's and timm's readers expect of a PyTorch state dict
    save_file(timm_state_dict(model, x.shape[-1]), str(path), metadata={"format": "pt"})


@torch.no_grad()
def check(model: nn.Module, path: Path, x: torch.Tensor, report: Report) -> None:
    """Rebuild the model from the folder's config.json and this file alone: the logits must be identical."""
    rebuilt, _ = load_export(path.parent)
    diff = (rebuilt(x) - model(x)).abs().max().item()
    if diff != 0:
        raise CnnzooError(
            f"round trip failed: the model rebuilt from config.json + model.safetensors differs by {diff:.3g}"
        )
    report.checks.append(
        "safetensors round trip: config.json + model.safetensors rebuild the model, logits identical"
    )
    timm_check(model, path.parent, x, report)


def loading_snippet(config: dict, out: Path) -> list[str]:
    return [
        "import cnnzoo",
        f"predictor = cnnzoo.load({str(out)!r})  # config.json + model.safetensors (and framing, if any)",
        'predictor.predict(["digit.png"], top_k=3)',
        "",
        "# or the bare module (eval mode) and config.json:",
        "from cnnzoo.artifacts.exported import load_export",
        f"model, config = load_export({str(out)!r})",
        *hub_snippet(config, out),
    ]


# Written first: the cheap round trip of the weights, before the slow exporters.
FORMAT = ExportFormat(
    "safetensors", "model.safetensors", write, check, loading_snippet, write_order=0,
    description="the weights (float32); with config.json they rebuild the PyTorch model (cnnzoo, timm, torch.hub)",
)  # fmt: skip
register_format(FORMAT)
