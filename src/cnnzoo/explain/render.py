"""Arrays as pictures: feature-map and filter grids, heat maps laid over the image, PNG bytes and files.

Pure numpy and Pillow (no matplotlib), so the HTTP server renders a reply in well under a millisecond.
Colours come from two small look-up tables: `inferno`-like for activations (dark is low), `jet`-like for
heat maps (blue is cold, red is hot), as Grad-CAM's paper shows them.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["colorize", "map_grid", "filter_grid", "overlay", "upscale", "png_bytes", "save_png"]

_ANCHORS = {
    "inferno": [(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
                (250, 193, 39), (252, 255, 164)],
    "jet": [(0, 0, 128), (0, 0, 255), (0, 128, 255), (0, 255, 255), (128, 255, 128), (255, 255, 0),
            (255, 128, 0), (255, 0, 0), (128, 0, 0)],
}  # fmt: skip
_LUTS: dict[str, np.ndarray] = {}


def _lut(name: str) -> np.ndarray:
    if name not in _LUTS:
        anchors = np.array(_ANCHORS[name], dtype=np.float64)
        pos = np.linspace(0, 1, len(anchors))
        t = np.linspace(0, 1, 256)
        _LUTS[name] = (
            np.stack([np.interp(t, pos, anchors[:, c]) for c in range(3)], 1).round().astype(np.uint8)
        )
    return _LUTS[name]


def _unit(a: np.ndarray) -> np.ndarray:
    """Min-max scaled to 0..1 (a constant array gives zeros)."""
    a = np.nan_to_num(np.asarray(a, dtype=np.float32))
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def colorize(a: np.ndarray, cmap: str = "inferno", *, scaled: bool = False) -> np.ndarray:
    """(H, W) values as (H, W, 3) uint8 colours; `scaled=True` when `a` is already in 0..1."""
    unit = np.clip(a, 0, 1) if scaled else _unit(a)
    return _lut(cmap)[(unit * 255 + 0.5).astype(np.uint8)]


def _columns(n: int) -> int:
    return n if n <= 8 else math.ceil(math.sqrt(n))


def _tile(tiles: list[np.ndarray], cols: int, pad: int, fill: int) -> np.ndarray:
    """Equal-sized (h, w[, 3]) tiles in rows of `cols`, `pad` pixels of `fill` between them."""
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / cols)
    shape = (rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, *tiles[0].shape[2:])
    grid = np.full(shape, fill, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = tile
    return grid


def map_grid(maps: np.ndarray, *, cmap: str = "inferno", pad: int = 1) -> np.ndarray:
    """One layer's (C, H, W) maps as a grid of coloured tiles, each channel scaled to its own range."""
    return _tile([colorize(m, cmap) for m in maps], _columns(len(maps)), pad, 255)


def filter_grid(weights: np.ndarray, *, pad: int = 1) -> np.ndarray:
    """(O, I, k, k) kernels as a grid: RGB where I is 3 (AlexNet's Fig. 3), gray otherwise (the mean over
    input channels), all on one scale centred on zero, so mid-gray is 0 and contrast compares filters."""
    w = np.asarray(weights, dtype=np.float32)
    w = w if w.shape[1] == 3 else w.mean(1, keepdims=True)
    peak = float(np.abs(w).max()) or 1.0
    unit = (w / peak + 1) / 2  # -peak..peak -> 0..1
    tiles = [(np.clip(k.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8) for k in unit]
    if tiles[0].shape[-1] == 1:
        tiles = [t[..., 0] for t in tiles]
    return _tile(tiles, _columns(len(tiles)), pad, 255)


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """A (C, H, W) or (H, W) uint8 image in gray with a 0..1 (H, W) heat map blended over it: (H, W, 3)."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img.mean(0) if img.shape[0] in (1, 3) else img.mean(-1)
    gray = np.repeat(img.astype(np.float32)[..., None], 3, axis=2)
    hot = colorize(heat, cmap, scaled=True).astype(np.float32)
    return (gray * (1 - alpha) + hot * alpha).round().clip(0, 255).astype(np.uint8)


def upscale(array: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel as a factor x factor block (nearest neighbour: the pixels stay visible)."""
    if factor <= 1:
        return array
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def _image(array: np.ndarray) -> Image.Image:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = (_unit(a) * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))


def png_bytes(array: np.ndarray) -> bytes:
    """A (H, W), (H, W, 3) or (C, H, W) array as PNG bytes (non-uint8 arrays are min-max scaled)."""
    buf = io.BytesIO()
    _image(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def save_png(array: np.ndarray, path: str | Path, *, min_side: int = 0) -> Path:
    """Write `array` as a PNG, enlarged by a whole factor (nearest) until its short side is >= min_side."""
    a = np.asarray(array)
    side = min(a.shape[:2]) if not (a.ndim == 3 and a.shape[0] in (1, 3)) else min(a.shape[1:])
    if min_side and side < min_side:
        im = _image(a)
        factor = math.ceil(min_side / side)
        im = im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
    else:
        im = _image(a)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")
    return path
