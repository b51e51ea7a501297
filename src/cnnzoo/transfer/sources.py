"""Where transfer learning starts: pretrained weights from a cnnzoo run, a weights file or torchvision.

`load_source(spec, num_classes=..., in_chans=...)` returns the model ready to fine-tune:

1. read the source: a cnnzoo run folder or checkpoint (its JSON names the architecture), a `.pth`/`.pt`
   file (read with `torch.load(weights_only=True)`, so a pickle can never run code), a `.safetensors`
   file, or `torchvision:NAME` (the official weights, downloaded through torchvision)
2. clean the keys: unwrap {"state_dict": ...}, strip "module." (DDP) and "_orig_mod." (torch.compile),
   rename timm's VGG head (`TIMM_RENAMES`)
3. find the architecture: the checkpoint's config, `model_name`, or the one registered model whose
   state-dict layout (keys and shapes) the weights fit
4. build it, adapt the first convolution to `in_chans` (`adapt_conv_weight`), load everything strictly
5. replace the classifier (`reset_classifier`) when the class count differs, and report what happened

Preprocessing follows the source weights, not the target data: what the network learned to see is
images normalised the way its training normalised them. Which layer is the first convolution and which
are the classifiers, and what a bare weights file's preprocessing is, come from the model's own
`pretrained_cfg` and registry entry (`cnnzoo.models`), never from a guess by family.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..engine.checkpoint import (
    describe_load_error,
    load_state_dict_checked,
    read_meta,
    read_weights,
    resolve_checkpoint,
)
from ..errors import CnnzooError
from ..models import create_model, list_models, model_info
from ..models._registry import adapt_stats

__all__ = [
    "LoadReport",
    "LoadedSource",
    "TIMM_RENAMES",
    "TORCHVISION_MODELS",
    "adapt_conv_weight",
    "adapt_stats",
    "clean_state_dict",
    "identify_architecture",
    "load_source",
    "map_timm_names",
]

# torchvision names that have official ImageNet weights and a cnnzoo twin with the same layout.
TORCHVISION_MODELS = (
    "alexnet",
    "googlenet",
    "inception_v3",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
)
# Crop size of each weights' eval transform (torchvision: `weights.transforms().crop_size`): the
# registry's native input size of each model (299 for inception_v3, 224 for the others).

# timm names -> torchvision names: (timm prefix, our prefix). timm's VGG turns the first two fc layers
# into convolutions (7x7 and 1x1 kernels); their weights are flattened back to linear ones. timm's
# resnet* and inception_v3 already use torchvision's names, so they need no entry.
TIMM_RENAMES = (
    ("pre_logits.fc1.", "classifier.0."),
    ("pre_logits.fc2.", "classifier.3."),
    ("head.fc.", "classifier.6."),
)
_TIMM_MARKER = "pre_logits.fc1.weight"  # present only in timm's VGG layout

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_STRIP_PREFIXES = ("module.", "_orig_mod.")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


@dataclass
class LoadReport:
    """Which state-dict keys came from the source, which of its keys were dropped, which are fresh."""

    loaded: list[str] = field(default_factory=list)  # copied from the source (after any adaptation)
    replaced: list[str] = field(default_factory=list)  # the source's classifier, discarded
    new: list[str] = field(default_factory=list)  # freshly initialised (the new classifier)
    adapted: list[str] = field(default_factory=list)  # messages: what was changed to fit


@dataclass
class LoadedSource:
    """The model to fine-tune (new head and channels), its name and kwargs, and the source's facts.

    `meta` holds the source's preprocessing (`image_size`, `mean`, `std`, adapted to the target's
    channels), `source_classes` (names, or None where the source has none), `source_num_classes`,
    `source_in_chans`, `source` (the spec) and `kind` ("cnnzoo", "weights" or "torchvision").
    """

    model: nn.Module
    model_name: str
    model_kwargs: dict
    meta: dict
    report: LoadReport

    def describe(self) -> list[str]:
        """A few human-readable lines: what was loaded from where, what was replaced or adapted."""
        m, r = self.meta, self.report
        n_src = m["source_num_classes"]
        lines = [f"source: {m['source']} ({m['kind']}, {self.model_name}, {n_src or 'no'} classes)"]
        lines.append(f"loaded {len(r.loaded)} tensors from the source")
        if r.replaced or r.new:
            lines.append(
                f"new classifier ({n_src or 'none'} -> {self.model.num_classes} classes): " + ", ".join(r.new)
            )
        lines += r.adapted
        how = "assumed for weights without a config" if m.get("assumed") else "from the source"
        lines.append(
            f"preprocessing ({how}): {m['image_size']} px, mean {_fmt(m['mean'])}, std {_fmt(m['std'])}"
        )
        return lines


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


# --- reading a source ---------------------------------------------------------------------------


@dataclass
class _Source:
    state: dict[str, Tensor]
    name: str
    kwargs: dict
    classes: list[str] | None
    preprocessing: dict  # image_size, mean, std (for the source's own channels), assumed
    kind: str
    label: str


def load_source(
    spec: str, *, num_classes: int, in_chans: int, model_name: str | None = None, reset_head: bool = False
) -> LoadedSource:
    """Build the model a pretrained source describes, with `num_classes` outputs and `in_chans` inputs.

    `spec`: a cnnzoo run folder or checkpoint, a `.pth`/`.pt`/`.safetensors` weights file (its
    architecture is `model_name` or guessed from its keys and shapes), `torchvision:NAME`, or bundled
    weights (`lenet5:glyphs-latin`, see `cnnzoo.inference.pretrained`).
    The classifier is replaced when the class counts differ, or always with `reset_head` (a new label
    set of the same size); everything else loads strictly. Every problem raises `CnnzooError`.
    """
    src = _read_source(str(spec), model_name)
    return _build(src, num_classes, in_chans, reset_head)


def _read_source(spec: str, model_name: str | None) -> _Source:
    from ..inference.pretrained import is_pretrained_name, pretrained_checkpoint

    if spec.startswith("torchvision:"):
        return _torchvision_source(spec, model_name)
    if is_pretrained_name(spec):  # bundled weights, e.g. lenet5:glyphs-latin (cnnzoo models --pretrained)
        source = _cnnzoo_source(pretrained_checkpoint(spec), spec, model_name)
        source.label = spec
        return source
    path = Path(spec)
    if not path.exists():
        raise CnnzooError(
            f"source {spec!r} not found (give a cnnzoo run folder or checkpoint, a .pth/.pt/.safetensors "
            "weights file, torchvision:NAME, or bundled weights such as lenet5:mnist)"
        )
    ours = _cnnzoo_checkpoint(path)
    if ours is not None:
        return _cnnzoo_source(ours, spec, model_name)
    state = clean_state_dict(_read_weights_file(path), label=spec)
    name, kwargs = identify_architecture(state, model_name, label=spec)
    return _Source(state, name, kwargs, None, _assumed_preprocessing(name), "weights", spec)


def _cnnzoo_checkpoint(path: Path) -> Path | None:
    """The weights path if `path` is a cnnzoo run folder or checkpoint, else None (a foreign file)."""
    if path.is_dir() or path.suffix == ".json":
        return resolve_checkpoint(path)
    if path.suffix == ".safetensors" and path.with_suffix(".json").exists():
        meta = read_meta(path)
        return path if isinstance(meta, dict) and "model" in meta else None
    return None


def _cnnzoo_source(weights: Path, spec: str, model_name: str | None) -> _Source:
    meta = read_meta(weights)
    try:
        name, kwargs, classes = meta["model"], dict(meta.get("model_kwargs") or {}), list(meta["classes"])
        prep = {"image_size": int(meta["image_size"]), "mean": tuple(meta["mean"]), "std": tuple(meta["std"])}
    except (KeyError, TypeError, ValueError) as e:
        raise CnnzooError(f"{weights}: checkpoint config lacks or garbles {e}") from None
    if model_name is not None and model_name != name:
        raise CnnzooError(
            f"{spec} is a cnnzoo {name} checkpoint; --model {model_name} does not match it (leave --model out)"
        )
    model_info(name)  # an unknown name fails here, with suggestions
    state = read_weights(weights)
    return _Source(state, name, kwargs, classes, {**prep, "assumed": False}, "cnnzoo", str(weights))


def _read_weights_file(path: Path) -> dict:
    """A state dict from `.safetensors` or a torch file (weights only: tensors and plain containers)."""
    if path.suffix == ".safetensors":
        return read_weights(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (UnpicklingError, RuntimeError, EOFError...)
        if path.suffix not in _TORCH_SUFFIXES and _looks_like_safetensors(path):
            return read_weights(path)
        why = describe_load_error(path, e)  # Python objects, truncated, or no PyTorch file at all
        raise CnnzooError(
            f"{path}: not a readable weights file ({why}); expected a cnnzoo checkpoint, a state dict saved "
            "with torch.save(model.state_dict(), ...), or a .safetensors file"
        ) from None
    return _unwrap(obj, path)


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _unwrap(obj, path: Path) -> dict:
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict) and _is_state_dict(obj[key]):
                return obj[key]
    if isinstance(obj, dict) and _is_state_dict(obj) and obj:
        return obj
    raise CnnzooError(
        f"{path}: holds no model state dict (expected name -> tensor, possibly under "
        f"{' / '.join(repr(k) for k in _WRAPPER_KEYS)})"
    )


def _is_state_dict(obj: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def clean_state_dict(state: dict[str, Tensor], label: str = "weights") -> dict[str, Tensor]:
    """Strip wrapper prefixes ("module.", "_orig_mod.") and map timm's names to torchvision's."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        if key in out:
            raise CnnzooError(f"{label}: key {key!r} appears twice once prefixes are stripped")
        out[key] = value
    return map_timm_names(out)


def map_timm_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm's VGG layout -> torchvision's: rename per `TIMM_RENAMES`, flatten conv-shaped fc weights.

    timm's `pre_logits.fc1` is a 7x7 convolution over the (512, 7, 7) map, the same numbers as
    torchvision's `classifier.0` linear layer over the flattened map (C-major, like `torch.flatten`).
    Any other layout comes back unchanged.
    """
    if _TIMM_MARKER not in state:
        return state
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for theirs, ours in TIMM_RENAMES:
            if key.startswith(theirs):
                key = ours + key[len(theirs) :]
                if key.endswith(".weight") and value.ndim == 4:
                    value = value.reshape(value.shape[0], -1)  # (O, C, kh, kw) -> (O, C*kh*kw)
                break
        out[key] = value
    return out


def _torchvision_source(spec: str, model_name: str | None) -> _Source:
    name = spec.split(":", 1)[1]
    if name not in TORCHVISION_MODELS:
        raise CnnzooError(f"no torchvision weights for {name!r}; available: {', '.join(TORCHVISION_MODELS)}")
    if model_name is not None and model_name != name:
        raise CnnzooError(f"{spec} is a {name}; --model {model_name} does not match it (leave --model out)")
    state, classes = _fetch_torchvision(name)
    state = clean_state_dict(state, label=spec)
    name, kwargs = identify_architecture(state, name, label=spec)
    # The registry's mean/std for googlenet and inception_v3 are 0.5: torchvision feeds its Inception
    # weights through `transform_input`, i.e. (x - 0.5) / 0.5, the same numbers as normalising with
    # mean = std = 0.5, which also works for other channel counts. ImageNet's for the others.
    prep = {**_assumed_preprocessing(name), "assumed": False}
    return _Source(state, name, kwargs, classes, prep, "torchvision", spec)


def _fetch_torchvision(name: str) -> tuple[dict[str, Tensor], list[str] | None]:
    """Download (or read from torch's cache) torchvision's DEFAULT weights; weights-only unpickling."""
    try:
        import torchvision.models as tvm
    except ImportError:
        raise CnnzooError(
            f"torchvision:{name} needs torchvision, which is not installed: pip install 'cnnzoo[torchvision]'"
        ) from None
    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError) as e:
        raise CnnzooError(f"torchvision has no weights for {name!r} ({e})") from None
    try:
        state = torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as e:  # no network, HTTP errors, hash mismatch, a corrupt cache file...
        raise CnnzooError(
            f"could not fetch torchvision's {name} weights ({type(e).__name__}: {e}); check the network, "
            f"or download {weights.url} and pass the file"
        ) from None
    categories = weights.meta.get("categories")
    return _unwrap(state, Path(weights.url)), list(categories) if categories else None


def _assumed_preprocessing(name: str) -> dict:
    """For weights that carry none (a bare .pth / .safetensors): the model's registered input size and
    the mean/std of the data the architecture was made for (MNIST for LeNet, CIFAR-10 for the CIFAR
    ResNets, 0.5 for torchvision's Inception ports, ImageNet's for the rest), as its `pretrained_cfg`."""
    info = model_info(name)
    return {"image_size": info.input_size, "mean": info.mean, "std": info.std, "assumed": True}


# --- architecture: layouts, fitting, guessing -----------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    shapes: dict[str, tuple[int, ...]]  # key -> shape, in state-dict order
    head: dict[str, int]  # keys whose shape follows num_classes -> the dimension that does
    first_conv: str | None  # the first convolution's weight (pretrained_cfg["first_conv"])


def _key(kwargs: dict) -> tuple:
    return tuple(sorted(kwargs.items()))


@functools.lru_cache(maxsize=128)
def _meta_layout(name: str, kwargs_key: tuple) -> _Layout:
    """`name`'s layout, built on the meta device (shapes only, nothing allocated)."""
    model = _create(name, dict(kwargs_key), 5, None, meta=True)
    with torch.device("meta"), _SkipInit():
        return _layout_of(model, 5)


def _layout_of(model: nn.Module, num_classes: int) -> _Layout:
    """The layout of a built model, read off its `pretrained_cfg`: the classifier modules (the main one
    and any auxiliary ones), whose tensors all have the classes first (Linear weight and bias, RBF
    prototypes), and the first convolution, whose weight's second dimension is the input channels."""
    cfg = model.pretrained_cfg
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    classifiers = (cfg["classifier"], *cfg.get("aux_classifiers", ()))
    head = {k: 0 for k in shapes if any(k.startswith(c + ".") for c in classifiers)}
    first_conv = f"{cfg['first_conv']}.weight"
    return _Layout(shapes, head, first_conv if first_conv in shapes else None)


def _variants(name: str) -> list[dict]:
    """Builder kwargs that change the state-dict layout: the auxiliary heads of the Inception nets."""
    params = inspect.signature(model_info(name).builder).parameters
    return [{}, {"aux_logits": False}] if "aux_logits" in params else [{}]


def _diff(state: dict[str, Tensor], layout: _Layout) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong shape), forgiving what loading fixes: the class count, the first
    conv's input channels, an absent classifier and absent `num_batches_tracked` counters."""
    missing = [
        k
        for k in layout.shapes
        if k not in state and k not in layout.head and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in layout.shapes]
    wrong, classes = [], set()
    for k, v in state.items():
        if k not in layout.shapes:
            continue
        want, got = list(layout.shapes[k]), list(v.shape)
        if k in layout.head and len(got) == len(want):
            classes.add(got[layout.head[k]])
            got[layout.head[k]] = want[layout.head[k]]
        if k == layout.first_conv and len(got) == 4:
            got[1] = want[1]
        if got != want:
            wrong.append(f"{k} {tuple(v.shape)} vs {layout.shapes[k]}")
    if len(classes) > 1:
        wrong.append(f"classifier layers disagree on the class count ({sorted(classes)})")
    return missing, unexpected, wrong


def _listing(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _check_fits(state: dict[str, Tensor], layout: _Layout, name: str, label: str) -> None:
    problems = _diff(state, layout)
    if any(problems):
        raise CnnzooError(f"{label} does not fit {name}: {_listing(*problems)}")


def _matches(state: dict[str, Tensor], names: list[str]) -> list[tuple[str, dict]]:
    found = []
    for name in names:
        for kwargs in _variants(name):
            if not any(_diff(state, _meta_layout(name, _key(kwargs)))):
                found.append((name, kwargs))
                break
    return found


def _aux_variant(name: str, state: dict[str, Tensor]) -> dict:
    """Builder kwargs for `name` matching whether `state` has auxiliary classifiers (aux*, AuxLogits)."""
    if len(_variants(name)) == 1:
        return {}
    has_aux = any(k.split(".", 1)[0].lower().startswith("aux") for k in state)
    return {} if has_aux else {"aux_logits": False}


def identify_architecture(
    state: dict[str, Tensor], model_name: str | None = None, label: str = "weights"
) -> tuple[str, dict]:
    """(model name, builder kwargs) for a foreign state dict; `model_name` fixes the architecture.

    With `model_name`, only the auxiliary-classifier variant is read off the keys (the fit is checked
    when loading). Without, every registered model is tried on the meta device (nothing allocated;
    the first use of the meta device costs PyTorch a few seconds of imports) and exactly one must fit.
    Twins with identical layouts (resnet20 / plain20) are ambiguous.
    """
    if model_name is not None:
        model_info(model_name)  # unknown name -> error with suggestions
        return model_name, _aux_variant(model_name, state)
    found = _matches(state, list_models())
    if len(found) == 1:
        return found[0]
    if not found:
        raise CnnzooError(
            f"{label}: its keys and shapes fit no cnnzoo model; pass --model NAME to see what differs"
        )
    raise CnnzooError(
        f"{label} fits several models ({', '.join(n for n, _ in found)}); pass --model to choose"
    )


# --- building: channels, head, report ---------------------------------------------------------------


def adapt_conv_weight(weight: Tensor, in_chans: int) -> tuple[Tensor, str]:
    """A first-conv weight (O, k, kh, kw) for `in_chans` inputs, and how it was made.

    k -> 1: sum over the inputs (a grey image equals RGB with three equal channels, so the sum gives
    the same activations); 1 -> m: repeat and divide by m (the same, the other way round); k -> m in
    general: repeat the k input channels cyclically and scale by k / m to keep activations' scale.
    """
    k = weight.shape[1]
    if in_chans == k:
        return weight, "unchanged"
    w = weight.float()
    if in_chans == 1:
        new, how = w.sum(dim=1, keepdim=True), "summing over input channels"
    else:
        reps = math.ceil(in_chans / k)
        new = w.repeat(1, reps, 1, 1)[:, :in_chans] * (k / in_chans)
        how = (
            f"repeating and dividing by {in_chans}"
            if k == 1
            else f"repeating cyclically, scaled by {k}/{in_chans}"
        )
    return new.to(weight.dtype).contiguous(), how


class _SkipInit(TorchFunctionMode):
    """Skip `torch.nn.init` calls while building a model whose weights are loaded (or only measured).

    With `torch.device("meta")` the model costs no memory and no initialisation; skipping the init
    calls also avoids the slow imports PyTorch makes on the first random op on a meta tensor.
    """

    _SKIP = frozenset(getattr(nn.init, n) for n in _INIT_FUNCTIONS)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._SKIP:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def _create(
    name: str, kwargs: dict, num_classes: int, in_chans: int | None, *, meta: bool = False
) -> nn.Module:
    try:
        with contextlib.ExitStack() as stack:
            if meta:
                stack.enter_context(torch.device("meta"))
                stack.enter_context(_SkipInit())
            return create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except (TypeError, ValueError) as e:
        raise CnnzooError(f"cannot build {name} with {kwargs} and {in_chans} input channels: {e}") from None


def _create_for_loading(
    name: str, kwargs: dict, num_classes: int, in_chans: int
) -> tuple[nn.Module, _Layout]:
    """The model with uninitialised weights (every one is about to be loaded) and its layout.

    Initialising is most of the cost of building some models (Inception v3's truncated normals take
    seconds on a CPU), all of it wasted here. A model with non-persistent buffers, which no load
    would set, is built normally.
    """
    model = _create(name, kwargs, num_classes, in_chans, meta=True)
    if set(dict(model.named_buffers())) - set(model.state_dict()):
        model = _create(name, kwargs, num_classes, in_chans)
        return model, _layout_of(model, num_classes)
    with torch.device("meta"), _SkipInit():
        layout = _layout_of(model, num_classes)
    return model.to_empty(device="cpu"), layout


def _check_source_fits(state: dict[str, Tensor], layout: _Layout, src: _Source) -> None:
    problems = _diff(state, layout)
    if not any(problems):
        return
    hint = ""
    if src.kind == "weights":  # a bare weights file given with --model: say what it looks like
        guess = _matches(state, list_models())
        hint = f" (it looks like {', '.join(n for n, _ in guess)})" if guess else ""
    raise CnnzooError(f"{src.label} does not fit {src.name}: {_listing(*problems)}{hint}")


def _build(src: _Source, num_classes: int, in_chans: int, reset_head: bool) -> LoadedSource:
    # 1. the target model (our classes and channels); its layout tells which keys are the classifier
    model, layout = _create_for_loading(src.name, src.kwargs, num_classes, in_chans)
    state = dict(src.state)
    _check_source_fits(state, layout, src)
    head_in_source = [k for k in layout.head if k in state]
    src_classes = state[head_in_source[0]].shape[layout.head[head_in_source[0]]] if head_in_source else None
    conv = layout.first_conv
    src_chans = state[conv].shape[1] if conv in state else in_chans
    # 2. the first conv adapted to our channels
    adapted = []
    if src_chans != in_chans:
        state[conv], how = adapt_conv_weight(state[conv], in_chans)
        adapted.append(f"adapted {conv} from {src_chans} to {in_chans} input channels by {how}")
    # 3. strict load of everything; the classifier is kept only where the class counts agree
    replace = reset_head or src_classes != num_classes
    own = model.state_dict()
    supplied = [
        k
        for k in own
        if (replace and k in layout.head) or (k not in state and k.endswith("num_batches_tracked"))
    ]
    # (the supplied head, uninitialised, is replaced below; a missing counter starts at zero)
    state.update({k: own[k] if k in layout.head else torch.zeros_like(own[k]) for k in supplied})
    load_state_dict_checked(model, state, source=src.label)
    if replace:  # 4. a fresh classifier, as the model's contract makes it (Inception: auxiliary ones too)
        model.reset_classifier(num_classes)
    head = set(layout.head) if replace else set()
    report = LoadReport(
        loaded=[k for k in own if k not in supplied],
        replaced=[k for k in own if k in head and k in src.state],
        new=[k for k in own if k in head],
        adapted=adapted,
    )
    prep = src.preprocessing
    meta = {
        "image_size": prep["image_size"],
        "mean": adapt_stats(prep["mean"], in_chans),
        "std": adapt_stats(prep["std"], in_chans),
        "assumed": prep["assumed"],
        "source_classes": src.classes,
        "source_num_classes": src_classes,
        "source_in_chans": src_chans,
        "source": src.label,
        "kind": src.kind,
    }
    return LoadedSource(model, src.name, dict(src.kwargs), meta, report)
