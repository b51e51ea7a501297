"""A saved model config checked against the weights it describes, field by field, before anything is built.

An export folder's `config.json`, a checkpoint's `.json` and a bundled entry's config are plain text a
person can edit; the weights are the ground truth. A config that disagrees with them (three mean values for
a one-channel network, eleven class names for a ten-way classifier, an input size the network cannot read)
would otherwise surface deep inside preprocessing as a `zip()` or shape error with a traceback. Here each
field is compared with what the weights say, and the first disagreement is one `CnnzooError` line naming
the field:

    model, model_kwargs, architecture   a registered network, options its builder takes, timm's name for it
    classes, num_classes, label_names   names (strings), as many as the classifier's outputs
    in_chans, input_shape               the first convolution's input channels
    image_size                          a side the network reads (a forward pass on the meta device)
    mean, std                           one finite value per channel; mean within 0..1, std above 0
    pretrained_cfg                      timm's copy of input size, mean, std and class count, equal to ours
    dataset, framing                    a name; a well-formed framing where that data set's images were framed

Fields a config does not carry (a checkpoint has no `architecture` or `framing`) are not asked for here;
`artifacts.checkpoint.check_meta` says which ones every checkpoint must have.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.sources import dataset_framing
from ..errors import CnnzooError
from ._registry import model_info
from ._weights import _create, _diff, _key, _listing, _meta_layout, state_shape

__all__ = ["Found", "check_config", "found_in_state"]


@dataclass(frozen=True)
class Found:
    """What the weights themselves say (None: they do not say it, e.g. no classifier)."""

    classes: int | None
    in_chans: int | None
    image_size: int | None = None  # a fixed input side (an ONNX graph's); torch weights read many sides
    forward: bool = True  # torch weights: check the side with a forward pass on the meta device


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class _Checker:
    def __init__(self, meta: dict, label: str):
        self.meta, self.label = meta, label

    def fail(self, field: str, why: str) -> CnnzooError:
        value = repr(self.meta.get(field))
        value = value if len(value) <= 60 else value[:57] + "..."
        return CnnzooError(f"{self.label}: field {field!r} = {value} {why}")

    def need(self, field: str, ok: bool, why: str) -> None:
        if not ok:
            raise self.fail(field, why)


def found_in_state(name: str, kwargs: dict, state: dict[str, Tensor]) -> Found:
    classes, chans = state_shape(name, kwargs, state)
    return Found(classes, chans)


def check_config(
    meta: dict, label: str, *, state: dict[str, Tensor] | None = None, found: Found | None = None
) -> None:
    """Refuse `meta` (a config read from `label`) where a field disagrees with the weights (`state`, or
    what was `found` in another format's file), naming the field. See the module docstring."""
    c = _Checker(meta, label)
    if not isinstance(meta, dict):
        raise CnnzooError(f"{label}: not a JSON object")
    # the network
    name = meta.get("model")
    c.need("model", isinstance(name, str), "should name a cnnzoo model (see `cnnzoo models`)")
    try:
        info = model_info(name)
    except CnnzooError as e:
        raise c.fail("model", f"is no cnnzoo model: {e}") from None
    kwargs = meta.get("model_kwargs") or {}
    c.need("model_kwargs", isinstance(kwargs, dict), "should be a JSON object of builder options")
    params = inspect.signature(info.builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params or k in ("num_classes", "in_chans")]
        c.need("model_kwargs", not unknown, f"has options {name} does not take: {', '.join(unknown)}")
    if found is None:
        found = Found(None, None) if state is None else _found(c, name, kwargs, state)
    if "architecture" in meta:
        arch = meta["architecture"]
        c.need("architecture", arch in (name, f"cnnzoo/{name}"), f"does not match 'model' {name!r}")
    _check_classes(c, found)
    chans = _check_input(c, found)
    if state is not None and found.forward:
        _check_side(c, name, kwargs, found)
    side = c.meta["image_size"]
    if "input_shape" in c.meta:
        c.need(
            "input_shape",
            c.meta["input_shape"] == ["batch", chans, side, side],
            f"disagrees with in_chans {chans} and image_size {side}",
        )
    _check_stats(c, chans)
    _check_timm_copy(c)
    _check_framing(c, chans)


def _found(c: _Checker, name: str, kwargs: dict, state: dict[str, Tensor]) -> Found:
    """Classes and channels read off the weights, once they are known to be `name`'s (with `kwargs`)."""
    try:
        layout = _meta_layout(name, _key(kwargs))
    except CnnzooError as e:
        raise c.fail("model_kwargs", f"cannot build {name}: {e}") from None
    problems = _diff(state, layout)  # forgives only the class count and the input channels
    if any(problems):
        field = "model_kwargs" if kwargs else "model"
        raise c.fail(field, f"but the weights are not those of {name} {kwargs or ''}({_listing(*problems)})")
    return found_in_state(name, kwargs, state)


def _check_classes(c: _Checker, found: Found) -> None:
    classes = c.meta.get("classes")
    c.need("classes", isinstance(classes, list) and classes, "should be a non-empty list of class names")
    c.need("classes", all(isinstance(x, str) for x in classes), "should hold strings (class names)")
    if found.classes is not None:
        c.need(
            "classes",
            len(classes) == found.classes,
            f"names {len(classes)} classes, but the weights' classifier has {found.classes} outputs",
        )
    if "num_classes" in c.meta:
        c.need(
            "num_classes",
            c.meta["num_classes"] == len(classes),
            f"disagrees with the {len(classes)} 'classes'",
        )
    if "label_names" in c.meta:
        c.need("label_names", c.meta["label_names"] == classes, "disagrees with 'classes'")


def _check_input(c: _Checker, found: Found) -> int:
    chans, side = c.meta.get("in_chans"), c.meta.get("image_size")
    c.need("in_chans", _is_int(chans) and chans >= 1, "should be a positive whole number of channels")
    if found.in_chans is not None:
        c.need(
            "in_chans",
            chans == found.in_chans,
            f"but the weights' first convolution reads {found.in_chans} channel(s)",
        )
    c.need("image_size", _is_int(side) and side >= 1, "should be a positive whole number of pixels")
    if found.image_size is not None:
        c.need(
            "image_size",
            side == found.image_size,
            f"but the model file reads {found.image_size}x{found.image_size} images",
        )
    return chans


def _check_stats(c: _Checker, chans: int) -> None:
    for field in ("mean", "std"):
        values = c.meta.get(field)
        c.need(
            field,
            isinstance(values, list) and all(_is_number(v) for v in values),
            "should be a list of numbers",
        )
        c.need(
            field, len(values) == chans, f"has {len(values)} value(s), but the model reads {chans} channel(s)"
        )
        c.need(field, all(math.isfinite(v) for v in values), "should hold finite numbers")
    c.need("mean", all(0 <= v <= 1 for v in c.meta["mean"]), "should lie within 0..1 (pixels / 255)")
    c.need("std", all(v > 0 for v in c.meta["std"]), "should be above 0 (it divides)")


def _check_timm_copy(c: _Checker) -> None:
    """timm's `pretrained_cfg` repeats input size, mean, std and class count: a reader of either must agree."""
    if "pretrained_cfg" not in c.meta:
        return
    cfg = c.meta["pretrained_cfg"]
    c.need("pretrained_cfg", isinstance(cfg, dict), "should be a JSON object")
    m = c.meta
    ours = {"input_size": [m["in_chans"], m["image_size"], m["image_size"]], "mean": m["mean"], "std": m["std"],
            "num_classes": len(m["classes"])}  # fmt: skip
    for key, value in ours.items():
        if key in cfg:
            c.need("pretrained_cfg", cfg[key] == value, f"says {key} {cfg[key]!r}, the config {value!r}")


def _check_framing(c: _Checker, chans: int) -> None:
    """Present where the data set's images were framed (one channel only), absent (null) elsewhere, and a
    well-formed framing. The numbers themselves are not compared with today's registry: cnnzoo frames by
    the data set's registry entry, and a re-measured framing must not make older folders unreadable."""
    dataset = c.meta.get("dataset")
    c.need("dataset", dataset is None or isinstance(dataset, str), "should be a data set's name or null")
    if "framing" not in c.meta:
        return
    framed = chans == 1 and dataset_framing(dataset) is not None
    got = c.meta["framing"]
    if not framed:
        why = " (framing is for one channel)" if chans != 1 else ""
        c.need("framing", got is None, f"but {dataset or 'its data'}'s images were not framed{why}")
        return
    c.need("framing", isinstance(got, dict), f"is missing, but {dataset}'s images were framed")
    canvas, box, at = got.get("canvas"), got.get("box"), got.get("at")
    c.need("framing", _is_int(canvas) and canvas >= 1, "should give the canvas side in pixels")
    c.need(
        "framing",
        _is_int(box) and 1 <= box <= canvas,
        f"should give a box side within the {canvas} px canvas",
    )
    c.need(
        "framing",
        isinstance(at, list) and len(at) == 2 and all(_is_number(v) and 0 <= v <= canvas for v in at),
        "should give the centre as two coordinates within the canvas",
    )
    c.need("framing", got.get("centre") in ("mass", "box"), "should centre by 'mass' or 'box'")


def _check_side(c: _Checker, name: str, kwargs: dict, found: Found) -> None:
    """The network reads an image_size x image_size input (see `_side_problem`)."""
    side, chans = c.meta["image_size"], c.meta["in_chans"]
    why = _side_problem(name, _key(kwargs), found.classes or 1, chans, side)
    if why:
        raise c.fail(
            "image_size", f"is a side {name} cannot read ({why}; smallest {model_info(name).min_size})"
        )


@functools.lru_cache(maxsize=64)
def _side_problem(name: str, kwargs_key: tuple, classes: int, chans: int, side: int) -> str | None:
    """Why `name` cannot read a (1, chans, side, side) input, or None: a forward pass on the meta device
    (shapes only, nothing computed); it depends on these numbers alone, so each is tried once."""
    model = _create(name, dict(kwargs_key), classes, chans, meta=True).eval()
    try:
        with torch.no_grad():
            model(torch.empty(1, chans, side, side, device="meta"))
    except (RuntimeError, ValueError) as e:
        text = str(e).strip()
        return (text.splitlines()[0] if text else type(e).__name__)[:120]
    return None
