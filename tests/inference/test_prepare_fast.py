"""The shortcut for pictures already as the model reads them (`unchanged_if_framed`, `Predictor._prepare_as_is`,
the server's common case: a 28x28 digit) gives exactly the bytes of the generic path, or steps aside."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.data import load_dataset
from cnnzoo.data.image import decode_image
from cnnzoo.inference.framing import (
    FRAMINGS,
    UNCHANGED,
    _already_framed,
    _already_framed_whole,
    frame_image,
    unchanged_if_framed,
)

N = 200


@pytest.fixture(scope="module")
def pictures() -> dict[str, list[Image.Image]]:
    """28x28 pictures of every kind the shortcut must take or refuse, as the server opens them."""
    rng = np.random.default_rng(0)
    digits = load_dataset("mnist").test.images[:N, 0].numpy()
    noise = rng.integers(0, 40, digits.shape, dtype=np.uint8)  # borders whose median is often x.5
    kinds = {
        "mnist": digits,
        "inverted": 255 - digits,
        "shifted": np.roll(digits, (6, -5), axis=(1, 2)),  # off-centre: framed again
        "on grey": np.maximum(digits, noise),
        "inverted on grey": 255 - np.maximum(digits, noise),
        "grey paper": np.maximum(digits, 20),
        "blank and full": np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)]),
        "noise": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
    }
    return {k: [Image.fromarray(a) for a in v] for k, v in kinds.items()}


def reopened(im: Image.Image, **save) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **save)
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


@pytest.mark.parametrize("dataset", sorted(FRAMINGS))
def test_unchanged_if_framed_gives_frame_images_bytes_or_none(pictures, dataset):
    framing = FRAMINGS[dataset]
    taken = 0
    for kind, ims in pictures.items():
        for im in ims:
            fast = unchanged_if_framed(im, framing)
            generic = frame_image(im, framing)
            if fast is None:  # refused: then the generic path did change the picture, or it could not say
                continue
            taken += 1
            assert generic.note == UNCHANGED, (kind, generic.note)
            assert fast.dtype == np.uint8 and np.array_equal(fast, generic.pixels), kind
            assert fast.flags.writeable
    assert taken > 0


@pytest.mark.parametrize("dataset", sorted(FRAMINGS))
def test_the_integer_decision_is_the_float_decision_at_the_edges(dataset):
    """Digits moved a pixel at a time across the centre limit, scaled across the size band, on backgrounds
    whole and halfway between two levels, with ink at the ink level itself: both say the same."""
    framing = FRAMINGS[dataset]
    digits = load_dataset("mnist").test.images[:20, 0].numpy()
    rng = np.random.default_rng(1)
    cases = []
    for d in digits:
        for dy, dx in ((0, 0), (1, 2), (-2, 1), (3, 0), (0, -3), (2, 2)):
            cases.append(np.roll(d, (dy, dx), axis=(0, 1)))
        side = int(rng.integers(12, 29))  # across 17..23 (MNIST) and the glyphs' bands
        small = np.asarray(Image.fromarray(d[4:24, 4:24]).resize((side, side)))
        canvas = np.zeros((28, 28), np.uint8)
        at = int(rng.integers(0, 29 - side))
        canvas[at : at + side, at : at + side] = small
        cases.append(canvas)
        level = np.where(d > 0, np.maximum(d // 4 * 4, 40), 0).astype(np.uint8)  # ink at exactly 1/4 peak
        level[14, 14] = 160
        cases.append(level)
    decisions = set()
    for pixels in cases:
        for background in (0.0, 0.5, 3.0, 16.5, 32.0, 32.5):
            whole = _already_framed_whole(pixels, background, framing)
            exact = _already_framed(pixels.astype(np.float32), background, framing)
            assert whole == exact, (dataset, background)
            decisions.add(whole)
    assert decisions == {True, False}


def test_lenet_takes_the_shortcut_for_mnist_digits_and_stays_bit_identical(pictures):
    predictor = cnnzoo.load("lenet5:mnist")
    framing = predictor.framing
    taken = {}
    for kind, ims in pictures.items():
        for im in ims:
            fast = predictor._prepare_as_is(im)
            framed = frame_image(im, framing)  # the generic path, step by step
            generic = torch.from_numpy(decode_image(framed.pixels, predictor.image_size, predictor.channels))
            got, note = predictor._prepare(im)
            assert torch.equal(got, generic) and note == framed.note, kind
            taken[kind] = taken.get(kind, 0) + (fast is not None)
    # every MNIST digit, inverted or not, takes it; pictures that get framed again do not
    assert taken["mnist"] == N and taken["inverted"] == N
    assert taken["shifted"] == 0 and taken["noise"] == 0


def test_pictures_the_shortcut_refuses(pictures):
    predictor = cnnzoo.load("lenet5:mnist")
    digit = pictures["mnist"][0]
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees
    turned = reopened(digit, exif=exif)
    assert predictor._prepare_as_is(turned) is None
    assert torch.equal(
        predictor.to_uint8(turned), predictor.to_uint8(digit.transpose(Image.Transpose.ROTATE_270))
    )
    for other in (digit.convert("1"), digit.convert("P"), digit.convert("LA"), digit.convert("RGB"),
                  digit.resize((32, 32))):  # fmt: skip
        assert predictor._prepare_as_is(other) is None, other.mode


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_without_framing_a_picture_of_the_input_size_is_taken_as_is(pictures, mode):
    channels = 1 if mode == "L" else 3
    meta = {"classes": list("0123456789"), "image_size": 28, "in_chans": channels, "mean": [0.5] * channels,
            "std": [0.5] * channels, "dataset": "folder"}  # fmt: skip
    predictor = cnnzoo.inference.Predictor(torch.nn.Identity(), meta)
    assert predictor.framing is None
    for im in pictures["mnist"][:20] + pictures["noise"][:5]:
        im = im.convert(mode) if mode == "L" else Image.merge("RGB", [im, im.transpose(0), im.rotate(90)])
        fast = predictor._prepare_as_is(im)
        assert fast is not None and fast[1] == "off"
        assert torch.equal(fast[0], torch.from_numpy(decode_image(im, 28, channels)))
        assert fast[0].is_contiguous()
    assert predictor._prepare_as_is(pictures["mnist"][0].convert("RGB" if mode == "L" else "L")) is None
