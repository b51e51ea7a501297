"""One image decoder for every path that reads a picture: folder datasets, `cnnzoo predict`, the server.

`decode_image(source, size, channels)` gives the pixels a person sees, as a (channels, size, size) uint8
array, whatever the file holds:

- EXIF orientation is applied (a phone's portrait photo stands upright);
- 16-bit and 32-bit grayscale are scaled to 8 bits (not clipped: a 16-bit digit stays a digit);
- transparency (RGBA, LA, palette with a transparent colour) is composited on white, as a viewer shows it;
- palette, CMYK, YCbCr, LAB and HSV become RGB; an animation gives its first frame;
- the centre square is cropped and resized to `size` (antialiased when shrinking).

Decompression bombs (a small file declaring billions of pixels) are refused before any pixel is decoded:
more than `MAX_PIXELS` is an error, not Pillow's warning.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import CnnzooError

__all__ = ["decode_image", "open_image", "to_l_or_rgb", "GRAY_MODES", "MAX_PIXELS", "reason"]

GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
MAX_PIXELS = 89_478_485  # Pillow's own warning threshold (about 0.25 GB of RGBA), made an error


def open_image(source) -> Image.Image:
    """A path, encoded bytes, a PIL image or an (H, W[, C]) uint8 array as a loaded PIL image (first frame).

    Raises `CnnzooError` with one line for anything that is not a readable image.
    """
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    name = "image" if isinstance(source, bytes | bytearray) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source)
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise CnnzooError(
                    f"{name}: {w}x{h} pixels is more than the {MAX_PIXELS:,} allowed (a decompression bomb?)"
                )
            im.seek(0)  # an animation: its first frame
            im.load()
            return im
    except CnnzooError:
        raise
    except FileNotFoundError:
        raise CnnzooError(f"image not found: {name}") from None
    except IsADirectoryError:
        raise CnnzooError(f"{name} is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise CnnzooError(f"{name}: refused, too many pixels (a decompression bomb?): {e}") from None
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), SyntaxError, ValueError...
        raise CnnzooError(f"{name}: not a readable image ({reason(e, name)})") from None


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise CnnzooError(f"an image array is (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):  # 0..1 floats, as matplotlib and many tutorials hold them
            a = np.clip(np.nan_to_num(a) * 255 + 0.5, 0, 255).astype(np.uint8)
        elif a.dtype == np.uint16:
            a = ((a.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
        else:
            a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))


def reason(error: Exception, path: str) -> str:
    """Why a file failed, without the path that Pillow often repeats in its message."""
    return str(error).replace(f"'{path}'", "").replace(path, "").strip(" :") or type(error).__name__


def to_l_or_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit L (grayscale modes) or RGB (everything else), as a person sees it."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (or 32-bit int) gray: assume the 16-bit range and scale to 8 bits, rounding
        wide = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    if mode in ("1", "F"):
        return im.convert("L")  # F is clipped to 0..255
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L" if mode in GRAY_MODES else "RGB")
    return im.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV...


def decode_image(source, size: int, channels: int, *, crop: bool = True) -> np.ndarray:
    """Decode to a (channels, size, size) uint8 array: upright, 8-bit, centre square resized to `size`.

    `crop=False` resizes the whole picture to the square instead (its aspect ratio is then lost).
    """
    im = open_image(source)
    try:
        if im.format == "JPEG":
            im.draft(im.mode, (size, size))  # let libjpeg decode at a reduced scale, still >= size
        im = to_l_or_rgb(ImageOps.exif_transpose(im))
        w, h = im.size
        if crop:
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
            # crop first: resize(box=...) would blend in pixels from outside the box at its edges
            im = im.crop(box)
        if im.size != (size, size):
            im = im.resize((size, size), _BILINEAR)  # antialiased when shrinking
        array = np.asarray(im)
    except CnnzooError:
        raise
    except Exception as e:  # truncated pixel data shows up here, after the header was fine
        raise CnnzooError(f"{_name(source)}: not a readable image ({e})") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (C, H, W)
    if array.shape[0] != channels:
        if channels == 1:  # RGB to gray by luminance, as PIL's convert("L")
            array = np.asarray(Image.fromarray(array.transpose(1, 2, 0)).convert("L"))[None]
        else:
            array = np.repeat(array, channels, axis=0)
    return np.array(array, order="C")  # a writable copy: np.asarray(image) is read-only


def _name(source) -> str:
    return str(source) if isinstance(source, str | Path) else "image"
