"""Frame a person's picture the way an MNIST-like data set framed its images, before the model sees it.

A person's digit is dark ink on light paper, anywhere in a larger picture; an MNIST digit is light ink on
black, its longest side scaled to 20 px keeping the aspect ratio, and placed in a 28x28 field so that its
centre of mass is at the centre (LeCun, Cortes, Burges: the MNIST page). A network trained on one reads the
other badly: a LeNet-5 trained to 99.25% read 3 of 10 inverted MNIST digits. `frame_image` redoes what the
data set's makers did, in order:

1. polarity: the background is the median of the picture's border; a light one is inverted
   (the data sets here are all light ink on black)
2. the background level is subtracted and the ink stretched to 0..255 (grey pencil, a photo's grey paper)
3. crop to the ink: the bounding box of the pixels above a quarter of the darkest ink
4. fit into a `box` x `box` square keeping the aspect ratio (antialiased)
5. place in the `canvas` x `canvas` field with the centre of mass (or of the box) at `at`

Each data set's framing was measured on its own training images (box: the median longest side of the ink;
`at`: the mean centre) and is stated by its registry entry (`framing=` in `cnnzoo.data.sources`; `FRAMINGS`
lists them). An image that already looks framed (the canvas size, a dark background, the ink's size and
centre where the data set puts them) is left exactly as it is, so the data set's own test images give the
very numbers `cnnzoo evaluate` counted. `Predictor(fit=False)` / `--no-fit` turn framing off.

`unchanged_if_framed` answers the common case of a server cheaply: an 8-bit grayscale image of the canvas size
that is already framed gives its own pixels (inverted where its background is light), the same bytes
`frame_image` gives, in about a fifth of the time; anything else is left to `frame_image`.
"""

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from ..data.framing import Framing
from ..data.image import open_image, to_l_or_rgb
from ..data.sources import dataset_framing, dataset_framings

__all__ = ["FRAMINGS", "Framing", "frame_image", "framing_for", "unchanged_if_framed"]

_RESAMPLE = getattr(Image, "Resampling", Image).BILINEAR  # antialiased when shrinking
UNCHANGED = "already framed as the data set's images: unchanged"  # the note of a picture left as it is
INK_LEVEL = 0.25  # a pixel is ink above this fraction of the darkest ink (after background subtraction)


class _Framings(Mapping[str, Framing]):
    """`FRAMINGS`: each registered data set's framing, read from the data registry when asked (so a data set
    registered later is in it too). Read-only: a framing belongs in the data set's registry entry."""

    def __getitem__(self, dataset: str) -> Framing:
        return dataset_framings()[dataset]

    def __iter__(self) -> Iterator[str]:
        return iter(dataset_framings())

    def __len__(self) -> int:
        return len(dataset_framings())

    def __repr__(self) -> str:
        return repr(dataset_framings())


FRAMINGS: Mapping[str, Framing] = _Framings()


def framing_for(dataset: str | None) -> Framing | None:
    """The framing of a data set's images, or None for photos and folders (which are not framed)."""
    return dataset_framing(dataset)


@dataclass(frozen=True)
class Framed:
    pixels: np.ndarray  # (canvas, canvas) uint8, light ink on black
    note: str  # what was done, for the output


def frame_image(source, framing: Framing) -> Framed:
    """A picture (path, bytes, PIL image or array; any size, either polarity) framed as the data set's."""
    im = to_l_or_rgb(ImageOps.exif_transpose(open_image(source)))
    gray = np.asarray(im.convert("L"), dtype=np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    inverted = background > 127
    if inverted:
        gray, background = 255.0 - gray, 255.0 - background
    if _already_framed(gray, background, framing):
        return Framed(gray.astype(np.uint8), UNCHANGED)
    ink = np.clip(gray - background, 0, None)
    peak = float(ink.max())
    if peak <= 0:
        return Framed(np.zeros((framing.canvas, framing.canvas), np.uint8), "blank: no ink found")
    rows, cols = _ink_box(ink, peak)
    crop = ink[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] * (255.0 / peak)
    patch = _fit(crop, framing.box)
    canvas = _place(patch, framing)
    note = ("inverted (light background), " if inverted else "") + framing.describe()
    return Framed(canvas, note)


def unchanged_if_framed(im: Image.Image, framing: Framing) -> np.ndarray | None:
    """The (canvas, canvas) uint8 pixels `frame_image(im, framing)` gives when `im` is an 8-bit grayscale
    picture of the canvas size, upright, that already looks framed; None for anything else (then call
    `frame_image`). Bit-identical to it (tests/inference/test_framing.py), without its conversions."""
    n = framing.canvas
    if im.mode != "L" or im.size != (n, n) or turned(im):
        return None
    pixels = np.asarray(im)  # (n, n) uint8; loads a lazy image
    border = np.sort(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]))
    mid = len(border) // 2  # the median as np.median takes it: exact, the values are whole numbers
    background = float(border[mid]) if len(border) % 2 else (int(border[mid - 1]) + int(border[mid])) / 2
    if background > 127:
        pixels, background = 255 - pixels, 255.0 - background
    if not _already_framed_whole(pixels, background, framing):
        return None
    return np.array(pixels)  # a writable copy


def turned(im: Image.Image) -> bool:
    """Whether EXIF says to turn or mirror `im` (Orientation 2..8), as `ImageOps.exif_transpose` reads it."""
    return im.getexif().get(0x0112, 1) in _TURNED


_TURNED = frozenset(range(2, 9))


def _ink_box(ink: np.ndarray, peak: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """(first, last) row and column holding a pixel above the ink level."""
    row_peak, col_peak = ink.max(1), ink.max(0)
    return _span(row_peak, INK_LEVEL * peak), _span(col_peak, INK_LEVEL * peak)


def _span(peaks: np.ndarray, level: float) -> tuple[int, int]:
    """The first and last index whose peak is above `level`."""
    idx = np.flatnonzero(peaks > level)
    return int(idx[0]), int(idx[-1])


def _side(rows: tuple[int, int], cols: tuple[int, int]) -> int:
    """The longest side of the box spanning `rows` x `cols`."""
    return max(rows[1] - rows[0], cols[1] - cols[0]) + 1


def _already_framed(gray: np.ndarray, background: float, framing: Framing) -> bool:
    """The canvas size, a dark background, and ink of the data set's size where it puts its centre."""
    h, w = gray.shape
    if (h, w) != (framing.canvas, framing.canvas) or background > 32:
        return False
    ink = np.clip(gray - background, 0, None)
    peak = float(ink.max())
    if peak <= 0:
        return True
    row_peak, col_peak = ink.max(1), ink.max(0)
    rows, cols = _span(row_peak, INK_LEVEL * peak), _span(col_peak, INK_LEVEL * peak)
    any_ink = _side(_span(row_peak, 0), _span(col_peak, 0))
    return _sized_and_centred(rows, cols, any_ink, lambda: _centre(ink, rows, cols, framing.centre), framing)


def _sized_and_centred(
    rows, cols, any_ink: int, centre: Callable[[], tuple[float, float]], framing: Framing
) -> bool:
    """The rest of `_already_framed`, once the ink's box is known: its size, then `centre()`'s place.
    `any_ink`: the side of the box of every pixel above the background, which is what MNIST's makers fitted
    to 20 px (a digit of faint strokes has a smaller box of ink above INK_LEVEL: 10 of MNIST's 70,000)."""
    side = _side(rows, cols)
    if framing.centre == "box" and side > framing.canvas - 1:  # fills the frame, as those data sets do
        return True
    # MNIST: every digit's longest side is 20 and its mass at the centre; glyphs keep each font's scale and
    # baseline, so letters vary in size (o and O) and height: a wider band, measured on their test images
    lo, hi, limit = (
        (framing.box - 3, framing.box + 3, 2.0) if framing.centre == "mass" else (4, framing.canvas, 6.0)
    )
    if not (lo <= side <= hi or lo <= any_ink <= hi):
        return False
    cy, cx = centre()
    return abs(cy - framing.at[0]) <= limit and abs(cx - framing.at[1]) <= limit


def _already_framed_whole(pixels: np.ndarray, background: float, framing: Framing) -> bool:
    """`_already_framed` for a (canvas, canvas) uint8 picture, in integers and about half the time: twice
    the ink, so that a background halfway between two levels stays exact. The same decision: every sum
    here and there is exact, so the centres are the same quotients, rounded once."""
    if background > 32:
        return False
    ink2 = pixels.astype(np.int32) * 2 - int(2 * background)  # 2 * (gray - background), whole numbers
    np.maximum(ink2, 0, out=ink2)
    row_peak, col_peak = ink2.max(1), ink2.max(0)
    peak2 = int(row_peak.max())
    if peak2 <= 0:
        return True
    rows, cols = _span(row_peak, INK_LEVEL * peak2), _span(col_peak, INK_LEVEL * peak2)
    any_ink = _side(_span(row_peak, 0), _span(col_peak, 0))

    def centre() -> tuple[float, float]:
        if framing.centre == "box":
            return _centre(ink2, rows, cols, "box")
        by_row, by_col = ink2.sum(1), ink2.sum(0)  # (canvas,) int64
        total, at = int(by_row.sum()), np.arange(len(by_row))
        return int(by_row @ at) / total, int(by_col @ at) / total

    return _sized_and_centred(rows, cols, any_ink, centre, framing)


def _centre(ink: np.ndarray, rows, cols, how: str) -> tuple[float, float]:
    if how == "box":
        return (rows[0] + rows[1]) / 2, (cols[0] + cols[1]) / 2
    total = float(ink.sum())
    ys, xs = _indices(ink.shape)
    return float((ink * ys).sum() / total), float((ink * xs).sum() / total)


@functools.lru_cache(maxsize=16)
def _indices(shape: tuple[int, ...]) -> np.ndarray:
    """np.indices(shape), made once per shape (read-only): the pictures here come in a few sizes."""
    grid = np.indices(shape)
    grid.flags.writeable = False
    return grid


def _fit(crop: np.ndarray, box: int) -> np.ndarray:
    """Scale so the longest side is `box`, keeping the aspect ratio (a thin "1" stays thin)."""
    h, w = crop.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = Image.fromarray(crop.astype(np.float32), mode="F").resize(size, _RESAMPLE)
    return np.clip(np.asarray(resized), 0, 255)


def _place(patch: np.ndarray, framing: Framing) -> np.ndarray:
    """Paste `patch` into the canvas with its centre at `framing.at` (whole-pixel shift, clipped)."""
    h, w = patch.shape
    full = ((0, h - 1), (0, w - 1))
    cy, cx = _centre(patch, *full, framing.centre)
    top, left = round(framing.at[0] - cy), round(framing.at[1] - cx)
    n = framing.canvas
    canvas = np.zeros((n, n), np.float32)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(n, top + h), min(n, left + w)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.round(canvas).astype(np.uint8)
