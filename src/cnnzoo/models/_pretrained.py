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
SHA-256 is checked against the manifest before it is read, and every field of the entry against the
checkpoint config beside the weights and that config against the weights (`_validate`), so an edited
manifest is one line naming the field. `scripts/make_pretrained.py` re-creates them.
They live in the model zoo, below checkpoints, because `create_model(..., pretrained=...)` builds from them.
"""

import difflib
import fnmatch
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..data.sources import dataset_framing
from ..errors import CnnzooError
from ._builder import adapt_stats, build_model
from ._validate import check_config
from ._weights import load_adapted, load_state_dict_checked, read_weights

__all__ = [
    "ASSETS",
    "PretrainedEntry",
    "create_pretrained",
    "framing_description",
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
    if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
        raise CnnzooError(f"the bundled weights' manifest {path} is not a cnnzoo manifest; reinstall cnnzoo")
    entries = {}
    for name, r in data.get("models", {}).items():
        for field, kind in _ENTRY_FIELDS.items():
            value = r.get(field) if isinstance(r, dict) else None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise _entry_error(path, name, field, value, f"should be {_KIND_WORDS[kind]}")
        entries[name] = PretrainedEntry(
            name, r["model"], r["dataset"], float(r["accuracy"]), folder / r["weights"], folder / r["config"],
            r["sha256"], r,
        )  # fmt: skip
    return entries


# what every manifest entry holds, before anything is read (the rest is checked when the entry is used)
_ENTRY_FIELDS = {"model": str, "dataset": str, "accuracy": (int, float), "weights": str, "config": str,
                 "sha256": str, "preprocessing": dict, "recipe": dict, "command": str}  # fmt: skip
_KIND_WORDS = {str: "a string", (int, float): "a number", dict: "a JSON object"}


def _entry_error(path: Path, name: str, field: str, value, why: str) -> CnnzooError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return CnnzooError(
        f"{path}: bundled entry {name!r} field {field!r} = {shown} {why}; reinstall cnnzoo or re-make it "
        "with scripts/make_pretrained.py"
    )


def framing_description(dataset: str) -> str | None:
    """The manifest's `preprocessing.framing`: how a picture is framed for a model trained on `dataset`."""
    framing = dataset_framing(dataset)
    return None if framing is None else f"light backgrounds inverted, {framing.describe()}"


_CHECKED: set[tuple[str, str]] = set()  # (weights path, the entry as JSON) already checked in this process


def _checked_entry(entry: PretrainedEntry) -> PretrainedEntry:
    """The entry with every field checked against its checkpoint config, and that config against the weights
    (after the SHA-256); the first disagreement is one line naming the field."""
    key = (str(entry.weights), json.dumps(entry.record, sort_keys=True, default=str))
    if key not in _CHECKED:
        _check_entry(entry)
        _CHECKED.add(key)
    return entry


def _check_entry(entry: PretrainedEntry) -> None:
    r, path = entry.record, entry.weights.parent / "manifest.json"

    def need(field: str, value, ok: bool, why: str) -> None:
        if not ok:
            raise _entry_error(path, entry.name, field, value, why)

    model, dataset = entry.name.split(":", 1)
    need("model", entry.model, entry.model == model, f"disagrees with the name {entry.name!r}")
    need("dataset", entry.dataset, entry.dataset == dataset, f"disagrees with the name {entry.name!r}")
    need(
        "sha256",
        entry.sha256,
        re.fullmatch(r"[0-9a-f]{64}", entry.sha256) is not None,
        "is no SHA-256 (64 hex digits)",
    )
    need("accuracy", entry.accuracy, 0 <= entry.accuracy <= 100, "should be a percentage")
    top5 = r.get("top5")
    need("top5", top5, top5 is None or (not isinstance(top5, bool) and isinstance(top5, int | float)
         and entry.accuracy <= top5 <= 100), "should be a percentage no lower than accuracy")  # fmt: skip
    weights = _verified(entry.weights, entry.sha256)
    need(
        "bytes",
        r.get("bytes"),
        r.get("bytes") == weights.stat().st_size,
        f"but {weights.name} has {weights.stat().st_size}",
    )
    try:
        config = json.loads(entry.config.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise _entry_error(path, entry.name, "config", r["config"], f"is unreadable ({e})") from None
    check_config(config, str(entry.config), state=read_weights(weights))
    need(
        "model",
        entry.model,
        config.get("model") == entry.model,
        f"but {entry.config.name} says {config.get('model')!r}",
    )
    need(
        "dataset",
        entry.dataset,
        config.get("dataset") == entry.dataset,
        f"but {entry.config.name} says {config.get('dataset')!r}",
    )
    prep = r["preprocessing"]
    for key in ("image_size", "in_chans", "mean", "std"):
        field = f"preprocessing.{key}"
        need(
            field,
            prep.get(key),
            prep.get(key) == config[key],
            f"but {entry.config.name} (and the weights) say {config[key]!r}",
        )
    # a description where the data set frames its images, null where not (its words are not compared with
    # today's registry: a re-measured framing must not make the bundled weights unreadable)
    framed = config["in_chans"] == 1 and framing_description(entry.dataset) is not None
    got = prep.get("framing")
    need(
        "preprocessing.framing",
        got,
        (isinstance(got, str) and bool(got)) if framed else got is None,
        f"but {entry.dataset}'s images were {'' if framed else 'not '}framed",
    )
    recipe = r["recipe"]
    need(
        "recipe.model",
        recipe.get("model"),
        recipe.get("model") == entry.model,
        f"disagrees with 'model' {entry.model!r}",
    )
    need(
        "recipe.data",
        recipe.get("data"),
        recipe.get("data") == entry.dataset,
        f"disagrees with 'dataset' {entry.dataset!r}",
    )


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
    entry = _checked_entry(pretrained_entry(spec))
    return entry.weights


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
    path = _checked_entry(entry).weights  # SHA-256, then every field against the config and the weights
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
