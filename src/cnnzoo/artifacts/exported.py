"""Reading an export folder (`cnnzoo export`): `config.json` + `model.safetensors` rebuild the model, or
`config.json` + `model.onnx` run it through onnxruntime where the folder holds only the ONNX file.

The folder is also a timm / Hugging Face Hub model folder, so its weights may carry timm's names (VGG's
head: `pre_logits.fc1` ...) and config.json timm's keys beside cnnzoo's; cnnzoo reads its own keys and
maps the names back (`models._weights.map_timm_names`). Folders written before either read as they did.

Every field of `config.json` is checked against the weights (or the ONNX graph's input and output shapes)
before anything is built (`models._validate.check_config`): a tampered config is one line naming the field.
"""

from pathlib import Path

import torch
from torch import nn

from .._io import read_json_object
from ..errors import CnnzooError
from ..models import create_model
from ..models._validate import Found, check_config
from ..models._weights import load_state_dict_checked, map_timm_names, read_weights

__all__ = [
    "OnnxModel",
    "export_files",
    "is_export_folder",
    "load_export",
    "load_export_onnx",
    "read_export_config",
]

WEIGHTS, ONNX = "model.safetensors", "model.onnx"


def export_files(path) -> list[str]:
    """The model files an export folder holds, of those cnnzoo reads (safetensors first)."""
    p = Path(path)
    return [name for name in (WEIGHTS, ONNX) if (p / name).is_file()]


def is_export_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and bool(export_files(p))


def read_export_config(folder) -> dict:
    """`config.json` as a dict; unreadable or not a JSON object is one line."""
    return read_json_object(Path(folder) / "config.json", "export config")


def load_export(folder) -> tuple[nn.Module, dict]:
    """Rebuild the model from `config.json` and `model.safetensors` alone (eval mode, CPU)."""
    folder = Path(folder)
    meta = read_export_config(folder)
    if not (folder / WEIGHTS).is_file():
        held = ", ".join(export_files(folder)) or "no model file"
        raise CnnzooError(f"{folder} holds {held}, not {WEIGHTS}: the PyTorch model needs the weights")
    state = map_timm_names(read_weights(folder / WEIGHTS))
    check_config(meta, str(folder / "config.json"), state=state)
    model = create_model(
        meta["model"],
        num_classes=len(meta["classes"]),
        in_chans=meta["in_chans"],
        **meta.get("model_kwargs", {}),
    )
    load_state_dict_checked(model, state, source=str(folder))
    return model.eval(), meta


class OnnxModel(nn.Module):
    """`model.onnx` run by onnxruntime behind a module's interface, so a `Predictor` (and evaluation) use it
    as they use the PyTorch model: (B, C, S, S) float tensor in, (B, classes) float32 logits out, on the
    input's device. Inference only (no gradients, no parameters to train)."""

    def __init__(self, path: Path):
        super().__init__()
        try:
            import onnxruntime
        except ImportError:
            raise CnnzooError(
                f"{path.parent} holds only {ONNX}; running it needs onnxruntime: pip install 'cnnzoo[export]'"
            ) from None
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own error types: a corrupt or foreign file
            raise CnnzooError(
                f"{path}: not a model onnxruntime can run ({str(e).splitlines()[0][:160]})"
            ) from None
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        # empty, but where `next(model.parameters()).device` looks (evaluation); never trained
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def found(self) -> Found:
        """Classes, channels and input side as the graph's input (batch, C, S, S) and output (batch, K) fix them."""
        shape_in, shape_out = self.session.get_inputs()[0].shape, self.session.get_outputs()[0].shape

        def fixed(shape, i):
            return shape[i] if len(shape) > i and isinstance(shape[i], int) else None

        side = fixed(shape_in, 2) if fixed(shape_in, 2) == fixed(shape_in, 3) else None
        return Found(fixed(shape_out, 1), fixed(shape_in, 1), side, forward=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().float().contiguous().cpu().numpy()
        (logits,) = self.session.run(None, {self.input_name: array})[:1]
        return torch.from_numpy(logits).float().to(x.device)

    def extra_repr(self) -> str:
        return f"{self.path}, onnxruntime"


def load_export_onnx(folder) -> tuple[OnnxModel, dict]:
    """An export folder's `model.onnx` behind a module's interface, with its config checked against the
    graph's input and output shapes."""
    folder = Path(folder)
    meta = read_export_config(folder)
    if not (folder / ONNX).is_file():
        raise CnnzooError(f"{folder} holds no {ONNX}")
    model = OnnxModel(folder / ONNX)
    check_config(meta, str(folder / "config.json"), found=model.found())
    return model.eval(), meta
