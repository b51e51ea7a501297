"""`model.safetensors`: the weights; `config.json` + this file rebuild the model (checked: equal logits)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ...artifacts.exported import load_export
from ...errors import CnnzooError
from ._format import ExportFormat, Report, register_format


def write(model: nn.Module, path: Path, x: torch.Tensor) -> None:
    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "cnnzoo-export"})


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


def loading_snippet(config: dict, out: Path) -> list[str]:
    return [
        "import cnnzoo",
        f"predictor = cnnzoo.load({str(out)!r})  # config.json + model.safetensors (and framing, if any)",
        'predictor.predict(["digit.png"], top_k=3)',
        "",
        "# or the bare module:",
        "import json; from safetensors.torch import load_file",
        'cfg = json.load(open("config.json"))',
        'model = cnnzoo.create_model(cfg["model"], num_classes=cfg["num_classes"], in_chans=cfg["in_chans"], '
        '**cfg["model_kwargs"])',
        'model.load_state_dict(load_file("model.safetensors"))',
    ]


# Written first: the cheap round trip of the weights, before the slow exporters.
FORMAT = ExportFormat("safetensors", "model.safetensors", write, check, loading_snippet, write_order=0)
register_format(FORMAT)
