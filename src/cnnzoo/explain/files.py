"""`cnnzoo explain`: the maps of `maps.py` for image files, written as PNGs into one folder."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..artifacts.exported import OnnxModel
from ..errors import CnnzooError
from .maps import feature_maps, first_layer_filters, gradcam, saliency
from .render import colorize, filter_grid, map_grid, overlay, save_png

__all__ = ["METHODS", "explain_images", "class_index"]

METHODS = ("featuremaps", "filters", "gradcam", "saliency")
MIN_SIDE = 224  # small maps are enlarged (nearest) to at least this many pixels, to be seen


def class_index(classes: Sequence[str], target: str | int | None) -> int | None:
    """A class given by name ("7", "cat") or by index, as an index; None stays None (the prediction)."""
    if target is None:
        return None
    text = str(target)
    if text in classes:
        return list(classes).index(text)
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    raise CnnzooError(f"unknown class {text!r}: the model's classes are {', '.join(classes)}")


def file_part(name: str) -> str:
    """A class name as part of a file name: fashion-mnist's "T-shirt/top" (or a checkpoint's "../x") would
    otherwise make a sub-folder, or a path outside --out."""
    return re.sub(r"[^\w+-]+", "_", str(name)).strip("_") or "class"


def _stems(images: Sequence) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for i, image in enumerate(images):
        stem = Path(image).stem if isinstance(image, str | Path) else f"image{i}"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def explain_images(
    predictor,
    images: Sequence,
    method: str,
    out: str | Path,
    *,
    layer: str | None = None,
    target: str | int | None = None,
) -> list[Path]:
    """Write `method`'s pictures for each image into `out` (a `Predictor` gives model and preprocessing);
    return the files written. `filters` needs no image: it shows the first convolution's kernels."""
    if method not in METHODS:
        raise CnnzooError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
    out, model = Path(out), predictor.model
    if isinstance(model, OnnxModel):  # a graph run by onnxruntime: no layers to look into, no gradients
        raise CnnzooError(
            f"{predictor.source} holds only model.onnx: explaining needs the PyTorch model (model.safetensors)"
        )
    if method == "filters":
        return [save_png(filter_grid(first_layer_filters(model)), out / "filters.png", min_side=MIN_SIDE)]
    if not images:
        raise CnnzooError(f"--method {method} needs at least one image")
    t = class_index(predictor.classes, target)
    written: list[Path] = []
    for stem, image in zip(_stems(images), images, strict=True):
        seen = predictor.to_uint8(image).numpy()  # (C, S, S): the picture the model reads
        x = predictor.preprocess([image])
        if method == "featuremaps":
            written.append(save_png(seen, out / f"{stem}-input.png", min_side=MIN_SIDE))
            for i, lm in enumerate(feature_maps(model, x)):
                path = out / f"{stem}-{i + 1:02d}-{lm.kind}-{lm.name}.png"
                written.append(save_png(map_grid(lm.maps[0]), path, min_side=MIN_SIDE))
        elif method == "gradcam":
            cam = gradcam(model, x, target=t, layer=layer)
            name = file_part(predictor.classes[cam.target[0]])
            path = out / f"{stem}-gradcam-{name}.png"
            written.append(save_png(overlay(seen, cam.maps[0]), path, min_side=MIN_SIDE))
        else:
            sal = saliency(model, x, target=t)
            name = file_part(predictor.classes[sal.target[0]])
            path = out / f"{stem}-saliency-{name}.png"
            written.append(save_png(colorize(sal.maps[0], scaled=True), path, min_side=MIN_SIDE))
    return written
