"""Reading an export folder (`cnnzoo export`): `config.json` + `model.safetensors` rebuild the model.

The folder is also a timm / Hugging Face Hub model folder, so its weights may carry timm's names (VGG's
head: `pre_logits.fc1` ...) and config.json timm's keys beside cnnzoo's; cnnzoo reads its own keys and
maps the names back (`models._weights.map_timm_names`). Folders written before either read as they did."""

import json
from pathlib import Path

from torch import nn

from ..errors import CnnzooError
from ..models import create_model
from ..models._weights import load_state_dict_checked, map_timm_names, read_weights

__all__ = ["is_export_folder", "load_export"]


def is_export_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def load_export(folder) -> tuple[nn.Module, dict]:
    """Rebuild the model from `config.json` and `model.safetensors` alone (eval mode, CPU)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
        model = create_model(
            meta["model"],
            num_classes=len(meta["classes"]),
            in_chans=meta["in_chans"],
            **meta.get("model_kwargs", {}),
        )
    except json.JSONDecodeError as e:
        raise CnnzooError(f"{folder / 'config.json'}: corrupt export config ({e})") from None
    except (KeyError, TypeError) as e:
        raise CnnzooError(f"{folder / 'config.json'}: export config lacks {e}") from None
    state = map_timm_names(read_weights(folder / "model.safetensors"))
    load_state_dict_checked(model, state, source=str(folder))
    return model.eval(), meta
