"""`model.onnx`: `torch.onnx.export(dynamo=True)`, opset 18, a dynamic batch axis; checked with onnxruntime
on real test images at batch 1 and at another batch size."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import CnnzooError
from ._format import ExportFormat, Report, register_format

OPSET = 18
TOLERANCE = 1e-4  # max |ONNX - PyTorch| / max |logit|: the parity goal
SINGLE_IMAGES = 8  # images run at batch 1


def p_line(p: dict) -> str:
    return (
        f"batch {p['batch']} ({p['images']} {p['what']}): max |diff| {p['max_abs_diff']:.2e} = "
        f"{p['relative']:.1e} of the logit scale {p['logit_scale']:.3g} (goal <= {TOLERANCE:g}), top-1 agreement "
        f"{p['top1_agreement']:.1f}% (goal 100%)"
    )


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise CnnzooError(
            "ONNX export needs onnxruntime (and onnx, onnxscript): pip install 'cnnzoo[export]'"
        ) from None
    return onnxruntime


def write(model: nn.Module, path: Path, x: torch.Tensor) -> None:
    _onnxruntime()  # said before a slow export that could not be checked
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (x[:2],), dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic,
                input_names=["images"], output_names=["logits"], verbose=False,
            )  # fmt: skip
            program.save(str(path))
    except ImportError as e:
        raise CnnzooError(
            f"ONNX export needs {e.name or 'onnxscript'}: pip install 'cnnzoo[export]'"
        ) from None
    finally:
        quiet.setLevel(level)


def check(model: nn.Module, path: Path, x: torch.Tensor, report: Report) -> None:
    """onnxruntime against PyTorch, one image at a time and as one batch: the report's parity rows."""
    session = _onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    with torch.no_grad():
        ref = model(x).numpy()
    single = min(SINGLE_IMAGES, len(x))
    got_single = np.concatenate([session.run(None, {name: x[i : i + 1].numpy()})[0] for i in range(single)])
    got_batch = session.run(None, {name: x.numpy()})[0]
    parity = [
        _parity(1, got_single, ref[:single], report.images),
        _parity(len(x), got_batch, ref, report.images),
    ]
    bad = [p for p in parity if p["relative"] > TOLERANCE or p["top1_agreement"] < 100.0]
    if bad:
        raise CnnzooError(
            "ONNX parity check failed: " + "; ".join(p_line(p) for p in bad) + "; nothing written"
        )
    report.parity = parity


def _parity(batch: int, got: np.ndarray, ref: np.ndarray, what: str) -> dict:
    diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    agree = float((got.argmax(1) == ref.argmax(1)).mean() * 100)
    return {"batch": batch, "images": len(ref), "what": what, "max_abs_diff": diff, "logit_scale": scale,
            "relative": diff / scale, "top1_agreement": agree}  # fmt: skip


def card_parity(report: Report) -> list[str]:
    if not report.parity:
        return []
    return [
        f"ONNX (opset {OPSET}, dynamic batch) against PyTorch, onnxruntime on the CPU, {report.images}:",
        "",
        "| batch | images | max abs diff | relative to logit scale | top-1 agreement |",
        "|---|---|---|---|---|",
        *(
            f"| {p['batch']} | {p['images']} | {p['max_abs_diff']:.2e} | {p['relative']:.1e} | "
            f"{p['top1_agreement']:.1f}% |"
            for p in report.parity
        ),
        "",
    ]


def loading_snippet(config: dict, out: Path) -> list[str]:
    c, s = config["in_chans"], config["image_size"]
    return [
        "import numpy as np, onnxruntime as ort  # no cnnzoo, no PyTorch needed",
        'session = ort.InferenceSession("model.onnx")',
        f"x = np.zeros((1, {c}, {s}, {s}), np.float32)  # normalised as above",
        'logits = session.run(None, {"images": x})[0]',
    ]


FORMAT = ExportFormat(
    "onnx", "model.onnx", write, check, loading_snippet, write_order=10, card_parity=card_parity,
    description=f"the network as an ONNX graph (opset {OPSET}, dynamic batch) for onnxruntime and other runtimes",
)  # fmt: skip
register_format(FORMAT)
