"""One decoder for every path: the pixels a person sees, whatever the file holds."""

import io

import numpy as np
import pytest
from PIL import Image

from cnnzoo.data.image import MAX_PIXELS, decode_image
from cnnzoo.errors import CnnzooError


def digit() -> np.ndarray:
    a = np.zeros((28, 28), np.uint8)
    a[6:22, 12:16] = 255  # a "1"
    return a


def encoded(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_16_bit_grayscale_is_scaled_not_clipped():
    wide = Image.fromarray(digit().astype(np.uint16) * 257)  # 0..65535
    out = decode_image(encoded(wide), 28, 1)
    assert out.max() == 255 and (out[0] == digit()).all()


@pytest.mark.parametrize("mode", ["P", "CMYK", "RGBA", "LA", "RGB"])
def test_modes_give_the_same_gray_pixels(mode):
    rgb = Image.fromarray(digit()).convert("RGB")
    im = rgb.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode_image(encoded(im, fmt, **({"quality": 100} if fmt == "JPEG" else {})), 28, 1)
    assert np.abs(out[0].astype(int) - digit()).max() <= (12 if fmt == "JPEG" else 0)


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (28, 28), (0, 0, 0, 0))  # fully transparent black
    assert decode_image(encoded(rgba), 28, 1).min() == 255


def test_exif_orientation_is_applied():
    a = np.zeros((20, 40), np.uint8)
    a[:, :20] = 255  # left half white
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(encoded(im, "JPEG", exif=exif, quality=100), 20, 1, crop=False)
    top, bottom = out[0, :10].mean(), out[0, 10:].mean()
    assert top > 200 and bottom < 50  # the white half is on top once upright


def test_animation_gives_its_first_frame():
    frames = [Image.fromarray(digit()), Image.fromarray(255 - digit())]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert (decode_image(buf.getvalue(), 28, 1)[0] == digit()).all()


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    side = int(MAX_PIXELS**0.5) + 100
    bomb = Image.new("1", (side, side))  # 1-bit: a small file declaring ~90 megapixels
    path = tmp_path / "bomb.png"
    bomb.save(path, optimize=True)
    with pytest.raises(CnnzooError, match="decompression bomb"):
        decode_image(path, 28, 1)


@pytest.mark.parametrize(
    "data, message", [(b"", "not a readable image"), (b"hello world", "not a readable image")]
)
def test_not_an_image(data, message):
    with pytest.raises(CnnzooError, match=message):
        decode_image(data, 28, 1)


def test_truncated_png_is_one_clear_error():
    data = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(CnnzooError, match="not a readable image"):
        decode_image(data[: len(data) // 2], 28, 1)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CnnzooError, match="not found"):
        decode_image(tmp_path / "nope.png", 28, 1)
    with pytest.raises(CnnzooError, match="folder"):
        decode_image(tmp_path, 28, 1)
