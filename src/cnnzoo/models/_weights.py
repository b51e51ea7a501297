"""Weights from anywhere into a zoo model: reading state dicts safely, recognising the architecture they
fit, adapting the first convolution to other channels, and loading strictly with a message that says what
does not fit.

- `read_weights` reads `.safetensors` (never code); `read_weights_file` also reads torch files with
  `torch.load(weights_only=True)`, so a pickle can never run code, and `describe_load_error` says in words
  why one was refused.
- `clean_state_dict` strips wrappers ("module." of DDP, "_orig_mod." of torch.compile) and maps timm's
  VGG names to torchvision's (`map_timm_names`); `identify_architecture` finds the one registered model
  whose layout (keys and shapes, built on the meta device) the weights fit.
- `load_adapted` builds the model for a target's classes and channels and loads everything the source
  has that fits: the first convolution adapted (`adapt_conv_weight`), the classifier replaced when the
  class counts differ, a `LoadReport` of what happened. Transfer learning and `create_model(...,
  pretrained=...)` for another class or channel count both go through it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import pickle
import pickletools
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .._io import describe_os_error
from ..errors import CnnzooError
from ._builder import build_model
from ._registry import list_models, model_info

__all__ = [
    "LoadReport",
    "TIMM_RENAMES",
    "adapt_conv_weight",
    "clean_state_dict",
    "describe_load_error",
    "identify_architecture",
    "load_adapted",
    "load_state_dict_checked",
    "map_timm_names",
    "read_weights",
    "read_weights_file",
    "state_shape",
    "unwrap_state_dict",
]


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CnnzooError(f"{weights}: unreadable safetensors file ({e})") from None


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a message that lists what is missing, unexpected or the wrong shape."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                shown = ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CnnzooError(
            f"{source} does not fit {getattr(model, 'model_name', type(model).__name__)}: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def describe_load_error(path: Path, e: BaseException) -> str:
    """Why `torch.load(path, weights_only=True)` failed, in words: Python objects (which could run code
    and are never unpickled), a truncated file, or bytes that are no PyTorch file at all."""
    text = str(e)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    names = [found.group(1)] if found else _pickled_globals(path)
    if names:
        shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        return f"it holds Python objects besides tensors, which cnnzoo never unpickles as they can run code: {shown}"
    if isinstance(e, OSError):
        return describe_os_error(e)
    if "central directory" in text or isinstance(e, EOFError) or "Ran out of input" in text:
        return "it is truncated or corrupt: an incomplete PyTorch file"
    if isinstance(e, pickle.UnpicklingError) or "Unsupported operand" in text or "invalid load key" in text:
        return "its bytes are not a PyTorch file: neither a zip archive nor a pickle of tensors"
    first = text.strip().splitlines()[0] if text.strip() else "no detail"
    return f"{type(e).__name__}: {first}"


def _pickled_globals(path: Path, limit: int = 64 << 20) -> list[str]:
    """The classes/functions a plain pickle file names (what unpickling it would import and call)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
        names, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
        return names
    except Exception:  # not a pickle at all
        return []


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


def read_weights_file(path: Path) -> dict:
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
    return unwrap_state_dict(obj, path)


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def unwrap_state_dict(obj, path: Path) -> dict:
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
            return build_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
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


def state_shape(name: str, kwargs: dict, state: dict[str, Tensor]) -> tuple[int | None, int | None]:
    """(classes, input channels) that `state` was trained with, read off `name`'s layout: None where the
    weights have no classifier or no first convolution."""
    layout = _meta_layout(name, _key(kwargs))
    head = [k for k in layout.head if k in state]
    classes = state[head[0]].shape[layout.head[head[0]]] if head else None
    conv = layout.first_conv
    return classes, (state[conv].shape[1] if conv in state else None)


def load_adapted(
    name: str,
    kwargs: dict,
    state: dict[str, Tensor],
    *,
    num_classes: int,
    in_chans: int,
    reset_head: bool = False,
    label: str = "weights",
    hint_guess: bool = False,
) -> tuple[nn.Module, LoadReport, int | None, int]:
    """`name` built for `num_classes` and `in_chans`, loaded from `state` wherever it fits.

    Returns (model, report, the source's class count or None, the source's input channels). The first
    convolution is adapted to `in_chans`; the classifier is kept only where the class counts agree (and
    not `reset_head`), else made fresh by the model's own `reset_classifier`; everything else loads
    strictly. `hint_guess`: on a misfit, also say which models the weights do look like.
    """
    # 1. the target model (our classes and channels); its layout tells which keys are the classifier
    model, layout = _create_for_loading(name, kwargs, num_classes, in_chans)
    state = dict(state)
    _check_source_fits(state, layout, name, label, hint_guess)
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
    original = set(state)
    state.update({k: own[k] if k in layout.head else torch.zeros_like(own[k]) for k in supplied})
    load_state_dict_checked(model, state, source=label)
    if replace:  # 4. a fresh classifier, as the model's contract makes it (Inception: auxiliary ones too)
        model.reset_classifier(num_classes)
    head = set(layout.head) if replace else set()
    report = LoadReport(
        loaded=[k for k in own if k not in supplied],
        replaced=[k for k in own if k in head and k in original],
        new=[k for k in own if k in head],
        adapted=adapted,
    )
    return model, report, src_classes, src_chans


def _check_source_fits(
    state: dict[str, Tensor], layout: _Layout, name: str, label: str, hint_guess: bool
) -> None:
    problems = _diff(state, layout)
    if not any(problems):
        return
    hint = ""
    if hint_guess:  # a bare weights file given with --model: say what it looks like
        guess = _matches(state, list_models())
        hint = f" (it looks like {', '.join(n for n, _ in guess)})" if guess else ""
    raise CnnzooError(f"{label} does not fit {name}: {_listing(*problems)}{hint}")
