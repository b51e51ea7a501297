"""Bundled pretrained weights: small networks trained by the project's own recipes, shipped in the package.

The network is not reachable at run time, so instead of torchvision's or timm's download-on-first-use,
cnnzoo carries its weights inside the package (`cnnzoo/assets/pretrained/`), a few hundred KB each:

    manifest.json               name -> model, dataset, accuracy, recipe and the command that made it,
                                preprocessing, SHA-256 and size of the weights file
    lenet5-mnist.safetensors    the weights (float32), beside
    lenet5-mnist.json           the checkpoint config every cnnzoo checkpoint has

A bundled name is `MODEL:DATASET` (`lenet5:mnist`). It is accepted wherever a checkpoint is:
`cnnzoo.load`, `cnnzoo predict`, `cnnzoo export`, `cnnzoo finetune --from`, `cnnzoo advise --from`; and
`create_model("lenet5", pretrained="mnist")` builds the model with those weights. The weights file's
SHA-256 is checked against the manifest before it is read. `scripts/make_pretrained.py` re-creates them.
They live in the model zoo, below checkpoints, because `create_model(..., pretrained=...)` builds from them.
"""

import difflib
import fnmatch
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import CnnzooError
from ._builder import adapt_stats, build_model
from ._weights import load_adapted, load_state_dict_checked, read_weights

__all__ = [
    "ASSETS",
    "PretrainedEntry",
    "create_pretrained",
    "is_pretrained_name",
    "list_pretrained",
    "pretrained_checkpoint",
    "pretrained_entry",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "pretrained"


@dataclass(frozen=True)
class PretrainedEntry:
    name: str  # "lenet5:mnist"
    model: str
    dataset: str
    accuracy: float  # % on the dataset's test split, measured from the bundled file
    weights: Path
    config: Path
    sha256: str
    record: dict  # the whole manifest entry: recipe, command, preprocessing, bytes...

    @property
    def tag(self) -> str:
        return self.name.split(":", 1)[1]


def _manifest() -> dict[str, PretrainedEntry]:
    return _manifest_at(ASSETS)


@functools.lru_cache(maxsize=4)
def _manifest_at(folder: Path) -> dict[str, PretrainedEntry]:
    path = folder / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise CnnzooError(
            f"the bundled weights' manifest {path} is unreadable ({e}); reinstall cnnzoo"
        ) from None
    entries = {}
    for name, r in data.get("models", {}).items():
        entries[name] = PretrainedEntry(
            name, r["model"], r["dataset"], float(r["accuracy"]), folder / r["weights"], folder / r["config"],
            r["sha256"], r,
        )  # fmt: skip
    return entries


def list_pretrained(pattern: str = "*") -> list[PretrainedEntry]:
    """Bundled weights whose name (`model:dataset`) or model matches a shell pattern, sorted by name."""
    return [
        e
        for n, e in sorted(_manifest().items())
        if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(e.model, pattern)
    ]


def is_pretrained_name(spec) -> bool:
    """True for `model:dataset` strings that are not files or folders on disk (those win)."""
    if not isinstance(spec, str) or ":" not in spec or spec.startswith(("torchvision:", "folder:")):
        return False
    model = spec.split(":", 1)[0]
    return bool(model) and "/" not in model and "\\" not in model and not Path(spec).exists()


def pretrained_entry(spec: str) -> PretrainedEntry:
    """The manifest entry of `model:dataset`; an unknown name raises with the bundled names listed."""
    entries = _manifest()
    if spec in entries:
        return entries[spec]
    close = difflib.get_close_matches(spec, list(entries), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"bundled: {', '.join(entries) or 'none'}"
    raise CnnzooError(f"no bundled weights named {spec!r} ({hint}; see `cnnzoo models --pretrained`)")


@functools.lru_cache(maxsize=16)
def _verified(path: Path, sha256: str) -> Path:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise CnnzooError(f"bundled weights file {path} is missing; reinstall cnnzoo") from None
    if digest != sha256:
        raise CnnzooError(
            f"bundled weights file {path} is corrupt (SHA-256 {digest[:12]}..., the manifest says "
            f"{sha256[:12]}...); reinstall cnnzoo or re-make it with scripts/make_pretrained.py"
        )
    return path


def pretrained_checkpoint(spec: str) -> Path:
    """The verified `.safetensors` path of a bundled name (its `.json` config is beside it)."""
    entry = pretrained_entry(spec)
    return _verified(entry.weights, entry.sha256)


def create_pretrained(
    name: str, tag: str | None, *, num_classes: int | None = None, in_chans: int | None = None, **kwargs
) -> nn.Module:
    """`create_model(name, pretrained=tag)`: the bundled `name:tag` weights (tag None: the first bundled
    for `name`). Another class count gets a fresh classifier, another channel count an adapted first
    convolution (as `cnnzoo finetune` does); `num_classes=0` keeps no classifier."""
    if tag is None:
        mine = [e for e in list_pretrained() if e.model == name]
        if not mine:
            raise CnnzooError(f"no bundled weights for {name} (see `cnnzoo models --pretrained`)")
        entry = mine[0]
    else:
        entry = pretrained_entry(f"{name}:{tag}")
    path = _verified(entry.weights, entry.sha256)
    meta = json.loads(entry.config.read_text())
    if kwargs and kwargs != meta.get("model_kwargs", {}):
        raise CnnzooError(
            f"{entry.name} was trained with {meta.get('model_kwargs') or 'no builder options'}, not {kwargs}"
        )
    classes, built_with = list(meta["classes"]), dict(meta.get("model_kwargs") or {})
    same = num_classes in (None, 0, len(classes)) and in_chans in (None, meta["in_chans"])
    if same:
        model = build_model(name, num_classes=len(classes), in_chans=meta["in_chans"], **built_with)
        load_state_dict_checked(model, read_weights(path), source=str(path))
        model.eval()
        chans = meta["in_chans"]
        mean, std = meta["mean"], meta["std"]
    else:  # another head or another first convolution, made as `cnnzoo finetune` makes them
        chans = in_chans or meta["in_chans"]
        model, _, _, _ = load_adapted(
            name, built_with, read_weights(path), num_classes=num_classes or len(classes), in_chans=chans,
            label=str(path),
        )  # fmt: skip
        mean, std = adapt_stats(meta["mean"], chans), adapt_stats(meta["std"], chans)
        classes = classes if num_classes in (None, 0, len(classes)) else None
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        "tag": entry.tag,
        "input_size": (chans, meta["image_size"], meta["image_size"]),
        "mean": tuple(mean),
        "std": tuple(std),
        "classes": classes,
        "accuracy": entry.accuracy,
        "dataset": entry.dataset,
    }
    return model
