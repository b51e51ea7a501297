"""`Predictor`: a model in eval mode plus the preprocessing it was trained with.

Preprocessing is the training pipeline's, step for step: the one image decoder (`cnnzoo.data.image`),
centre square resized to the checkpoint's input size, the same `Normalize` multiply-add, batches of
`EVAL_BATCH`, the run's evaluation precision and memory layout. So a test image saved as a PNG gets the
class `cnnzoo evaluate` counted for it.

A model trained on MNIST-like data (digits, letters, glyphs: `framing.FRAMINGS`) first frames a person's
picture as that data was made (polarity, crop to the ink, fit, centre: `cnnzoo.inference.framing`); the
data set's own images are left untouched. `fit=False` (`--no-fit`) turns it off.

`load` takes a run folder, a checkpoint, an export folder (`cnnzoo export`) or a bundled name
(`lenet5:mnist`, `cnnzoo models --pretrained`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..artifacts.source import open_source
from ..data.image import decode_image
from ..data.normalize import Normalize
from ..errors import CnnzooError
from ..runtime import EVAL_BATCH, autocast_dtype, resolve_device, thread_tuner
from .framing import UNCHANGED, Framing, frame_image, framing_for, turned, unchanged_if_framed

__all__ = ["Predictor", "load"]


class Predictor:
    """Call `predict(images)` with paths, encoded bytes, PIL images, (H, W[, C]) arrays or uint8 tensors."""

    def __init__(
        self,
        model: nn.Module,
        meta: dict,
        *,
        device: str | torch.device = "cpu",
        precision: str | None = None,
        source: str = "",
        fit: bool = True,
    ):

        for key in ("classes", "image_size", "in_chans", "mean", "std"):
            if key not in meta:
                raise CnnzooError(f"{source or 'the checkpoint'}: its config lacks {key!r}")
        self.device = resolve_device(str(device)) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.meta, self.source = meta, source
        self.classes: list[str] = list(meta["classes"])
        self.image_size: int = int(meta["image_size"])
        self.channels: int = int(meta["in_chans"])
        for key in ("mean", "std"):  # configs read from disk were checked field by field (models._validate)
            if len(meta[key]) != self.channels:
                raise CnnzooError(
                    f"{source or 'the checkpoint'}: {key} has {len(meta[key])} values for {self.channels} channel(s)"
                )
        self.precision = precision or meta.get("eval_precision", "fp32")
        self._amp = autocast_dtype(self.precision, self.device)
        self._normalize = Normalize(meta["mean"], meta["std"], self.device)
        if meta.get("channels_last"):
            self.model.to(memory_format=torch.channels_last)
        self._channels_last = bool(meta.get("channels_last"))
        self.threads = thread_tuner(self.device, "predict")  # None: the count is fixed (or not the CPU)
        # MNIST-like training data: frame a person's picture as that data was framed (one channel only)
        self.framing: Framing | None = (
            framing_for(meta.get("dataset")) if fit and self.channels == 1 else None
        )

    def __repr__(self) -> str:
        return (
            f"Predictor({self.meta.get('model')}, {len(self.classes)} classes, {self.channels}x{self.image_size}"
            f"x{self.image_size}, {self.precision}, {self.source or 'in memory'})"
        )

    # --- preprocessing -------------------------------------------------------------------------------

    def to_uint8(self, image) -> Tensor:
        """One image as the (C, S, S) uint8 tensor the model reads, before normalisation (framed first
        where the model's training data was framed: see `framing`)."""
        return self._prepare(image)[0]

    def framing_note(self, image) -> str:
        """What framing did to `image` (for the output), or why it did nothing."""
        return self._prepare(image)[1]

    def _prepare(self, image) -> tuple[Tensor, str]:
        if isinstance(image, Tensor):
            return self._prepare(self._tensor_to_array(image))
        if isinstance(image, Image.Image):  # a picture already as the model reads it: no conversions
            fast = self._prepare_as_is(image)
            if fast is not None:
                return fast
        note = "off"
        if self.framing is not None:
            framed = frame_image(image, self.framing)
            image, note = framed.pixels, framed.note
        return torch.from_numpy(decode_image(image, self.image_size, self.channels)), note

    def _prepare_as_is(self, im: Image.Image) -> tuple[Tensor, str] | None:
        """`_prepare`'s result without the generic conversions, for an image that needs none: the input
        size, 8-bit L (one channel) or RGB (three), upright, and for a framing model already framed (the
        server's common case: a 28x28 digit). None otherwise. Bit-identical (tests/inference)."""
        if self.framing is not None:
            if self.framing.canvas != self.image_size:
                return None
            pixels = unchanged_if_framed(im, self.framing)
            return None if pixels is None else (torch.from_numpy(pixels[None]), UNCHANGED)
        mode = {1: "L", 3: "RGB"}.get(self.channels)
        if im.mode != mode or im.size != (self.image_size, self.image_size) or turned(im):
            return None
        pixels = np.asarray(im)  # (S, S) or (S, S, 3)
        chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, S, S)
        return torch.from_numpy(np.array(chw, order="C")), "off"  # a writable copy in C order

    def _tensor_to_array(self, t: Tensor) -> np.ndarray:
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3:
            raise CnnzooError(f"an image tensor is (H, W) or (C, H, W), got shape {tuple(t.shape)}")
        if t.dtype != torch.uint8:
            if not t.dtype.is_floating_point:
                raise CnnzooError(f"an image tensor is uint8 (0..255) or float (0..1), got {t.dtype}")
            t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
        array = t.cpu().numpy()
        return array.transpose(1, 2, 0) if array.shape[0] in (1, 3, 4) else array[0]

    def preprocess(self, images: Sequence) -> Tensor:
        """(B, C, S, S) float batch, normalised as in training, on the predictor's device."""
        return self._preprocess(images)[0]

    def _preprocess(self, images: Sequence) -> tuple[Tensor, list[str]]:
        prepared = [self._prepare(im) for im in images]
        return self.normalized(torch.stack([t for t, _ in prepared])), [note for _, note in prepared]

    def normalized(self, batch: Tensor) -> Tensor:
        """A (B, C, S, S) uint8 batch as `to_uint8` gives it -> the float batch the model reads: on the
        predictor's device, normalised as in training, in the run's memory layout."""
        x = self._normalize(batch.to(self.device).float())
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x

    # --- prediction ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def logits(self, x: Tensor) -> Tensor:
        """Logits (B, classes) of a preprocessed batch, `EVAL_BATCH` images at a time, as float32."""
        out = []
        if self.threads is not None:
            self.threads.begin()
        for start in range(0, len(x), EVAL_BATCH):
            with torch.autocast(self.device.type, dtype=self._amp, enabled=self._amp is not None):
                out.append(self.model(x[start : start + EVAL_BATCH]).float())
            if self.threads is not None:
                self.threads.tick(len(out[-1]))
        return torch.cat(out)

    def logits_of_uint8(self, batch: Tensor) -> Tensor:
        """Logits (B, classes), float32, of a (B, C, S, S) uint8 batch as `to_uint8` gives it: the one
        normalisation, memory layout and forward pass `predict` runs (the server's path)."""
        return self.logits(self.normalized(batch))

    def probabilities(self, images: Sequence) -> Tensor:
        return self.logits(self.preprocess(images)).softmax(1).cpu()

    def predict(self, images, top_k: int = 5) -> list[dict]:
        """Top-k classes with probabilities, one dict per image: {"image", "top": [{"class", "probability"}],
        "framing": what framing did (only where the model frames its input)}."""
        if isinstance(images, str | Path | bytes | np.ndarray | Tensor) or hasattr(images, "getpixel"):
            images = [images]  # one image given alone
        images = list(images)
        if not images:
            raise CnnzooError("no images to predict")
        if top_k < 1:
            raise CnnzooError(f"top_k must be at least 1, got {top_k}")
        probs, notes = [], []
        for i in range(0, len(images), EVAL_BATCH):
            x, batch_notes = self._preprocess(images[i : i + EVAL_BATCH])
            probs.append(self.logits(x).softmax(1).cpu())
            notes += batch_notes
        probs = torch.cat(probs)
        k = min(top_k, probs.shape[1])
        results = []
        for image, p, note in zip(images, probs, notes, strict=True):
            top = p.topk(k)
            result = {
                "image": str(image) if isinstance(image, str | Path) else type(image).__name__,
                "top": [
                    {"class": self.classes[i], "probability": round(v, 6)}
                    for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                ],
            }
            if self.framing is not None:
                result["framing"] = note
            results.append(result)
        return results


def load(
    source: str | Path,
    *,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    fit: bool = True,
) -> Predictor:
    """A ready `Predictor` from any source (`cnnzoo.artifacts.source`): a run folder, a `.safetensors`
    checkpoint (its `.json` beside it), an export folder (`cnnzoo export`), a bundled name such as
    `lenet5:mnist`, a weights file or `torchvision:NAME`. `fit=False`: no framing."""
    model, meta, label = open_model(source)
    return Predictor(model, meta, device=device, precision=precision, source=label, fit=fit)


def open_model(source: str | Path) -> tuple[nn.Module, dict, str]:
    """(model in eval mode, its config, a label) from any source `load` accepts."""
    opened = open_source(source)
    return opened.model, opened.meta, opened.label
