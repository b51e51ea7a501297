"""One served model: a `Predictor`, its micro-batcher, and what the routes ask of it.

Decoding is the predictor's (`Predictor.to_uint8`: the one image decoder, and for a model trained on
MNIST-like data the framing of `cnnzoo.inference.framing`, so a drawing is cropped to the ink, fitted to
20x20 and centred by mass in 28x28 as MNIST's digits were); normalisation, memory layout and the forward
pass are `Predictor.normalized` and `Predictor.logits` (under `torch.inference_mode()`), the very code
`cnnzoo predict` runs. So a PNG posted to the server gets the class `cnnzoo predict` gives it.

A micro-batch may mix requests of both kinds the protocols send: uint8 images as `decode` gives them
(`/v1`, and `/v2`'s `image` input), normalised on the worker, and float batches already normalised
(`/v2`'s `input`, the exported ONNX model's input), taken as they are (`model_input`). Each forward gives
`Scores`: logits, probabilities and each row ranked, which every route slices what it needs from.
"""

from __future__ import annotations

import base64
import functools
import io
import re
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..artifacts.source import provenance
from ..errors import CnnzooError
from ..explain import dense_activations, feature_layers, feature_maps, gradcam
from ..explain.render import map_grid, overlay, png_bytes, upscale
from ..summary import summarize
from .batcher import MicroBatcher

__all__ = ["ServedModel", "Scores", "model_name", "NAME_PATTERN"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # safe in a URL path
MAX_CHANNELS_SHOWN = 64  # feature maps beyond this many channels per layer are left out of /explain
MAX_UNITS_SHOWN = 512  # fully connected layers wider than this (AlexNet's, VGG's 4096) give no bars


def model_name(predictor) -> str:
    """A default route name: model and dataset, e.g. `lenet5-mnist`."""
    meta = predictor.meta
    name = "-".join(str(p) for p in (meta.get("model"), meta.get("dataset")) if p)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def ranked(probs: Tensor) -> list[tuple[list[float], list[int]]]:
    """Each row of (B, classes) probabilities sorted, highest first: [(values, class indices)]."""
    values, indices = probs.sort(1, descending=True)
    return list(zip(values.tolist(), indices.tolist(), strict=True))


@dataclass(frozen=True)
class Scores:
    """What one forward pass gives, for its B images: a request takes its rows with `scores[start:end]`."""

    logits: Tensor  # (B, classes) float32, on the CPU
    probabilities: Tensor  # (B, classes) their softmax
    ranked: list[tuple[list[float], list[int]]]  # each row's probabilities sorted, highest first

    def __getitem__(self, rows: slice) -> Scores:
        return Scores(self.logits[rows], self.probabilities[rows], self.ranked[rows])

    def __len__(self) -> int:
        return len(self.ranked)


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class ServedModel:
    def __init__(
        self,
        name: str,
        predictor,
        executor: Executor,
        *,
        max_batch_size: int,
        max_delay_s: float,
        timeout_s: float,
        max_pixels: int,
        metrics=None,
    ):
        if not NAME_PATTERN.match(name):
            raise CnnzooError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        self.name, self.predictor, self.executor = name, predictor, executor
        self.max_pixels = max_pixels
        self.batcher = MicroBatcher(
            self.run_scores,
            executor,
            max_batch_size=max_batch_size,
            max_delay_s=max_delay_s,
            timeout_s=timeout_s,
            on_batch=metrics.batch_observer(name) if metrics else None,
            on_depth=metrics.depth_setter(name) if metrics else None,
            combine=self.model_input,
        )

    @functools.cached_property
    def provenance(self) -> dict:
        """What the source records about its training (read once: the folder may go away later)."""
        return provenance(self.predictor.source, self.predictor.meta)

    def info(self) -> dict:
        """What `/v1/models` lists: name, classes, input size, accuracy, source."""
        p, meta = self.predictor, self.predictor.meta
        accuracy = self.provenance["accuracy"]
        return {
            "name": self.name,
            "model": meta.get("model"),
            "dataset": meta.get("dataset"),
            "classes": p.classes,
            "input_size": [p.channels, p.image_size, p.image_size],
            "accuracy": accuracy,  # test accuracy in %, as the checkpoint recorded it
            "source": p.source,
            # how a picture is framed before the model reads it (MNIST-like training data), or None
            "framing": framing.describe() if (framing := getattr(p, "framing", None)) is not None else None,
        }

    # --- decoding ------------------------------------------------------------------------------

    def decode(self, data: bytes) -> Tensor:
        """Encoded image bytes as the (C, S, S) uint8 tensor the model reads. Raises `CnnzooError`."""
        if not data:
            raise CnnzooError("empty image: the body (or file part) has no bytes")
        try:  # the header alone: refuse a decompression bomb before any pixel is decoded
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise CnnzooError(
                f"not an image: {len(data):,} bytes in no image format this server reads (PNG, JPEG, GIF, "
                "BMP, TIFF, WebP, ...)"
            ) from None
        except Exception:
            im = None  # a damaged header: the decoder says what is wrong, below
        if im is not None and im.size[0] * im.size[1] > self.max_pixels:
            w, h = im.size
            raise CnnzooError(
                f"image declares {w}x{h} pixels, more than the {self.max_pixels:,} this server decodes "
                "(a decompression bomb?)"
            )
        try:
            im.load()  # as the decoder's own `open_image` does, so the pixels are the ones `predict` sees
        except Exception:
            return self.predictor.to_uint8(data)  # truncated or damaged: its error message, from the bytes
        return self.predictor.to_uint8(im)  # the image opened once, not twice

    # --- prediction ----------------------------------------------------------------------------

    def model_input(self, parts: list[Tensor]) -> Tensor:
        """The float batch the model reads, from the parts of one micro-batch (runs on the worker):
        uint8 images (as `decode` gives them) normalised as `cnnzoo predict` does, float ones (already
        normalised: `/v2`'s `input`) as they are; on the predictor's device, in its memory layout."""
        p = self.predictor
        if all(t.dtype == torch.uint8 for t in parts):  # the common case: one normalisation
            return p.normalized(parts[0] if len(parts) == 1 else torch.cat(parts))
        x = torch.cat([p.normalized(t) if t.dtype == torch.uint8 else t.to(p.device) for t in parts])
        return x.contiguous(memory_format=torch.channels_last) if p.meta.get("channels_last") else x

    def run_scores(self, x: Tensor) -> Scores:
        """A `model_input` batch -> its `Scores`: the forward, the softmax and each row sorted once per
        batch on the worker, so a request's handler only slices (runs on the worker)."""
        logits = self.predictor.logits(x)
        probs = logits.softmax(1).cpu()
        return Scores(logits.cpu(), probs, ranked(probs))

    def run_batch(self, images: Tensor) -> Tensor:
        """(B, C, S, S) uint8 -> (B, classes) probabilities, float32 on the CPU (runs on the worker)."""
        return self.predictor.logits_of_uint8(images).softmax(1).cpu()

    def run_ranked(self, images: Tensor) -> list[tuple[list[float], list[int]]]:
        """`run_batch`, then each row's probabilities sorted, as Python lists."""
        return ranked(self.run_batch(images))

    def top(self, row: tuple[list[float], list[int]], k: int) -> list[dict]:
        """The first k classes of a `ranked` row, with probabilities rounded to 6 decimals."""
        values, indices = row
        classes = self.predictor.classes
        return [
            {"class": classes[i], "probability": round(v, 6)}
            for v, i in zip(values[:k], indices[:k], strict=True)
        ]

    # --- explanation ---------------------------------------------------------------------------

    @functools.cached_property
    def architecture(self) -> list[dict]:
        """The layers as the page lists them, in forward order: the name the lecture gives each (the model's
        `layer_names`: C1, S2, ..., F6, output; else its module name), its type, output shape, parameters
        and their arithmetic ("6 x (1x5x5 + 1) = 156"), all read off `summarize`'s rows. Without
        lecture names: every convolution, pooling and fully connected layer. Computed once, at warm-up."""
        p = self.predictor
        names = getattr(p.model, "layer_names", {})  # ZooModel's; a model of another kind has none
        shown = set(names) or {n for n, _ in feature_layers(p.model)} | {
            n for n, m in p.model.named_modules() if isinstance(m, torch.nn.Linear)
        }
        rows = summarize(p.model, (p.channels, p.image_size, p.image_size)).rows
        return [
            {
                "name": r.name,
                "label": names.get(r.name, r.name),
                "type": r.type,
                "shape": list(r.output_shape or ()),
                "params": r.params,
                "arithmetic": r.param_formula,
            }
            for r in rows
            if r.name in shown and r.output_shape is not None
        ]

    def explain(self, image: Tensor, top_k: int) -> dict:
        """The input as the model sees it, every conv/pool layer's maps, the fully connected layers'
        activations, the layers as the lecture names them and Grad-CAM (runs on the worker)."""
        model = self.predictor.model
        names = getattr(model, "layer_names", {})
        x = self.predictor.normalized(image[None])  # as `cnnzoo explain` gives it to the model
        seen = image.numpy()
        layers = []
        for lm in feature_maps(model, x):
            maps = lm.maps[0][:MAX_CHANNELS_SHOWN]
            layers.append(
                {
                    "name": lm.name,
                    "label": names.get(lm.name, lm.name),
                    "kind": lm.kind,
                    "shape": list(lm.maps.shape[1:]),
                    "image": data_url(png_bytes(map_grid(maps))),
                }
            )
        activations = [
            {
                "name": a.name,
                "label": names.get(a.name, a.name),
                "values": np.round(a.values[0].astype(np.float64), 4).tolist(),
            }
            for a in dense_activations(model, x)
            if a.values.shape[1] <= MAX_UNITS_SHOWN
        ]
        cam = gradcam(model, x)
        probs = torch.from_numpy(cam.logits).softmax(1)
        scale = max(1, 112 // max(seen.shape[-2:]))  # small inputs drawn at least 112 pixels wide
        return {
            "model": self.name,
            "top": self.top(ranked(probs)[0], top_k),
            "input": data_url(png_bytes(seen)),
            "input_size": list(seen.shape),
            "architecture": self.architecture,
            "layers": layers,
            "activations": activations,
            "gradcam": {
                "layer": cam.layer,
                "class": self.predictor.classes[cam.target[0]],
                "overlay": data_url(png_bytes(upscale(overlay(seen, cam.maps[0]), scale))),
                "heatmap": np.round(cam.maps[0], 3).tolist(),
            },
        }

    def warm_up(self) -> None:
        """One forward at batch 1 and at the largest batch, and one explanation (runs on the worker)."""
        p = self.predictor
        zeros = torch.zeros(
            (self.batcher.max_batch_size, p.channels, p.image_size, p.image_size), dtype=torch.uint8
        )
        self.run_scores(self.model_input([zeros[:1]]))
        self.run_scores(self.model_input([zeros]))
        self.architecture  # noqa: B018 (computed now, on the worker, not in a request)
        self.explain(zeros[0], 1)
