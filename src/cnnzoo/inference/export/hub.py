"""The export folder as a Hugging Face Hub / timm model folder: timm's names and config fields, the card's
front matter, and a check in a Python that never imports cnnzoo.

timm reads a folder with `timm.create_model("local-dir:DIR", pretrained=True)` (without `pretrained`, it
builds the network the folder names with fresh weights): `config.json`'s `architecture` (a timm
model name), `num_classes`, `label_names` and `pretrained_cfg` (input size, mean, std, interpolation,
crop, first conv, classifier), and `model.safetensors` under timm's parameter names (timm's
`_hub.load_model_config_from_path` and `_builder.load_pretrained`). cnnzoo's ImageNet ResNets and
Inception v3 already carry timm's (= torchvision's) names; VGG's fully connected layers are timm's
`pre_logits.fc1` (a 7x7 convolution over the 512x7x7 map), `pre_logits.fc2` (a 1x1 one) and `head.fc`.
timm's Inception v3 has no auxiliary classifier unless asked (and then returns a pair), so the folder
leaves out that training-only head and says so in `model_kwargs` (`aux_logits: false`) for cnnzoo's reader.

Where timm has no such network (LeNet-5, AlexNet, GoogLeNet, the CIFAR ResNets) or computes another
function (VGG over a map larger than 7x7: timm convolves it and averages, cnnzoo averages it to 7x7 first;
Inception v3 with `transform_input`), `architecture` is `cnnzoo/NAME` (timm then says it has no such
model, instead of building its own `vgg16` with these weights), the weights keep cnnzoo's names and the
card says how to build the network without cnnzoo installed (torch.hub) or with it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ...errors import CnnzooError
from ...models import model_info
from ._format import Report, logits_in_fresh_python

__all__ = ["TIMM_MODELS", "front_matter", "hub_snippet", "timm_architecture", "timm_check", "timm_fields"]

# cnnzoo models that timm builds as the same function under the same name
TIMM_MODELS = frozenset(
    [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
    + [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
    + ["inception_v3"]
)
# cnnzoo's VGG head -> timm's (prefix, prefix, the weight's shape as timm's convolution, from the linear one)
_VGG_HEAD = (
    ("classifier.0.", "pre_logits.fc1.", lambda w: w.reshape(w.shape[0], -1, 7, 7)),
    ("classifier.3.", "pre_logits.fc2.", lambda w: w.reshape(w.shape[0], -1, 1, 1)),
    ("classifier.6.", "head.fc.", lambda w: w),
)
TOLERANCE = 1e-5  # max |timm - cnnzoo| / max |logit|
LICENSE = "mit"  # cnnzoo's; change it in the card where the training data's terms ask for another


def timm_architecture(model: nn.Module, image_size: int) -> str | None:
    """timm's name for `model` where timm computes the same function at this input size, else None."""
    name = getattr(model, "model_name", None)
    if name not in TIMM_MODELS or getattr(model, "transform_input", False):
        return None
    if name.startswith("vgg") and image_size // 32 > 7:  # five 2x2 pools: a map larger than 7x7
        return None
    return name


def timm_state_dict(model: nn.Module, image_size: int) -> dict[str, Tensor]:
    """The weights as `model.safetensors` holds them: under timm's names where timm has the network."""
    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()}
    arch = timm_architecture(model, image_size)
    if arch == "inception_v3":
        return {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    if arch is None or not arch.startswith("vgg"):
        return state
    out = {}
    for key, value in state.items():
        for ours, theirs, shape in _VGG_HEAD:
            if key.startswith(ours):
                key = theirs + key[len(ours) :]
                value = shape(value).contiguous() if key.endswith(".weight") else value
                break
        out[key] = value
    return out


def timm_fields(model: nn.Module, meta: dict) -> dict:
    """config.json's timm keys (beside cnnzoo's own): what `timm.create_model("local-dir:...")` reads."""
    size, chans = int(meta["image_size"]), int(meta["in_chans"])
    arch = timm_architecture(model, size)
    cfg = getattr(model, "pretrained_cfg", {})
    classifier = "head.fc" if arch and arch.startswith("vgg") else cfg.get("classifier")
    pool = model.feature_map_size(size) if hasattr(model, "feature_map_size") else None
    return {
        "architecture": arch or f"cnnzoo/{meta['model']}",  # timm: "Unknown model", never another network
        "num_classes": len(meta["classes"]),
        "num_features": int(getattr(model, "num_features", 0)),
        "global_pool": getattr(model, "global_pool", "avg") or "avg",
        "label_names": list(meta["classes"]),
        "pretrained_cfg": {
            "input_size": [chans, size, size],
            "interpolation": "bilinear",
            "crop_pct": 1.0,  # the centre square, resized to input_size (cnnzoo's framing of a picture)
            "crop_mode": "center",
            "mean": list(meta["mean"]),
            "std": list(meta["std"]),
            "num_classes": len(meta["classes"]),
            "pool_size": list(pool) if pool else None,
            "first_conv": cfg.get("first_conv"),
            "classifier": classifier,
        },
    }


def front_matter(config: dict, prov: dict, files: list[str] | None = None) -> list[str]:
    """The Hub's YAML metadata block that opens README.md (strings JSON-quoted: valid YAML whatever they hold).
    timm's library and tag only where timm can load the folder: its network, and `model.safetensors` in `files`."""
    timm = config.get("architecture") in TIMM_MODELS and (files is None or "model.safetensors" in files)
    family = model_info(config["model"]).family
    tags = ["image-classification", *(["timm"] if timm else []), "cnnzoo", family]
    data = config.get("dataset") or prov.get("dataset")
    lines = ["---", f"library_name: {'timm' if timm else 'cnnzoo'}", "tags:"]
    lines += [f"- {t}" for t in tags]  # identifiers: plain YAML
    lines += ["pipeline_tag: image-classification", f"license: {LICENSE}"]
    lines += ["datasets:", f"- {json.dumps(data)}"] if data else []
    return lines + ["metrics:", "- accuracy", "---", ""]


def hub_snippet(config: dict, out: Path) -> list[str]:
    """The card's lines for loading the folder without cnnzoo: timm, or torch.hub from a cnnzoo checkout."""
    arch = config.get("architecture")
    if arch in TIMM_MODELS:
        return [
            "",
            "# or timm (no cnnzoo needed): config.json + model.safetensors under timm's names; without",
            "# pretrained=True, timm builds the network with fresh weights (as it does for hf-hub: names)",
            "import timm",
            f"model = timm.create_model({('local-dir:' + str(out))!r}, pretrained=True).eval()  # timm's {arch}",
        ]
    size, name = config["image_size"], config["model"]
    if name not in TIMM_MODELS:
        why = f"timm has no {name}"
    elif config["model_kwargs"].get("transform_input"):
        why = f"timm's {name} has no transform_input"
    else:
        why = f"timm's {name} convolves a {size}x{size} input's whole map, cnnzoo averages it to 7x7 first"
    return [
        "",
        f"# {why}; without installing cnnzoo, torch.hub builds it from a cnnzoo checkout (its hubconf.py):",
        "import torch; from safetensors.torch import load_file",
        f'model = torch.hub.load("path/to/cnnzoo", {config["model"]!r}, source="local", '
        f"num_classes={config['num_classes']}, in_chans={config['in_chans']}"
        + "".join(f", {k}={v!r}" for k, v in config["model_kwargs"].items())
        + ")",
        f"model.load_state_dict(load_file({str(Path(out) / 'model.safetensors')!r}))",
    ]


_TIMM_CHECK = """
import sys, torch, timm
model = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2])), sys.argv[3])
assert not [m for m in sys.modules if m.split(".")[0] == "cnnzoo"], "cnnzoo was imported"
"""


@torch.no_grad()
def timm_check(model: nn.Module, folder: Path, x: Tensor, report: Report) -> None:
    """Where timm is installed and has the network: `timm.create_model("local-dir:...", pretrained=True)` in a fresh Python
    process (no cnnzoo) must give the model's logits; the measured difference goes on the card."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("architecture") not in TIMM_MODELS or importlib.util.find_spec("timm") is None:
        return
    failed = "timm check failed: timm.create_model('local-dir:...') in a fresh Python"
    got = logits_in_fresh_python(_TIMM_CHECK, folder.absolute(), x, failed, timeout=600)
    expected = model(x)
    diff = (got - expected).abs().max().item()
    scale = max(expected.abs().max().item(), 1e-12)
    if diff > TOLERANCE * scale or got.shape != expected.shape:
        raise CnnzooError(
            f"timm check failed: timm's logits differ from cnnzoo's by {diff:.3g} ({diff / scale:.1e} of the logit scale)"
        )
    report.checks.append(
        f"timm: timm.create_model('local-dir:...') in a Python process without cnnzoo gives the same logits "
        f"(max |diff| {diff:.1e} = {diff / scale:.1e} of the logit scale, on {len(x)} images)"
    )
