"""`cnnzoo explain`: the maps of `maps.py` for image files, written as PNGs into one folder."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..artifacts.exported import OnnxModel
from ..errors import CnnzooError
from .figures import filters_figure, grid_figure, heat_figure, image_figure
from .maps import feature_maps, first_conv_name, first_layer_filters, gradcam, saliency

__all__ = ["METHODS", "explain_images", "class_index"]

METHODS = ("featuremaps", "filters", "gradcam", "saliency")


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
        name, w = first_conv_name(model), first_layer_filters(model)
        title = f"First convolution ({name}): {len(w)} kernels of {w.shape[-2]}x{w.shape[-1]} pixels"
        return [filters_figure(w, out / "filters.png", title=title)]
    if not images:
        raise CnnzooError(f"--method {method} needs at least one image")
    t = class_index(predictor.classes, target)
    written: list[Path] = []
    for stem, image in zip(_stems(images), images, strict=True):
        seen = predictor.to_uint8(image).numpy()  # (C, S, S): the picture the model reads
        x = predictor.preprocess([image])
        if method == "featuremaps":
            title = f"{stem}: the input, as the model reads it"
            written.append(image_figure(seen, out / f"{stem}-input.png", title=title))
            for i, lm in enumerate(feature_maps(model, x)):
                path = out / f"{stem}-{i + 1:02d}-{lm.kind}-{lm.name}.png"
                c, h, w = lm.maps.shape[1:]
                title = f"{stem}: layer {lm.name} ({lm.kind}), {c} maps of {h}x{w}, each on its own scale"
                written.append(grid_figure(lm.maps[0], path, title=title))
            continue
        if method == "gradcam":
            heat = gradcam(model, x, target=t, layer=layer)
            what = f"Grad-CAM at layer {heat.layer}"
            bar = "evidence for the class (1 = the image's strongest)"
        else:
            heat = saliency(model, x, target=t)
            what = "saliency |d score / d pixel|"
            bar = "|gradient| (1 = the image's largest)"
        k = heat.target[0]
        prob = float(
            np.exp(heat.logits[0] - heat.logits[0].max())[k]
            / np.exp(heat.logits[0] - heat.logits[0].max()).sum()
        )
        chosen = "the predicted class" if t is None else "the class asked for"
        title = f"{stem}: {what} for class {predictor.classes[k]!r} ({chosen}, p {prob:.2f})"
        path = out / f"{stem}-{method}-{file_part(predictor.classes[k])}.png"
        written.append(heat_figure(seen, heat.maps[0], path, title=title, bar_label=bar))
    return written
