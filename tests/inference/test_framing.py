"""A person's digit is framed as MNIST's were, so the bundled LeNet-5 reads it (tests/README: the figures).

The goals: the inverted MNIST test set read within 0.5 points of the original; inverted digits enlarged to
280 px and small digits off-centre on a white 200 px canvas read at least 97%. Measured here on the first
`N` test images with the bundled `lenet5:mnist`; the whole test set's figures are in tests/README.md.
"""

import json

import numpy as np
import pytest
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.inference.framing import FRAMINGS, frame_image, unchanged_if_framed

N = 400


@pytest.fixture(scope="module")
def mnist():
    test = load_dataset("mnist").test
    return test.images[:N, 0].numpy(), test.labels[:N].numpy()


@pytest.fixture(scope="module")
def predictor():
    return cnnzoo.load("lenet5:mnist")


def accuracy(predictor, images, labels) -> float:
    probs = predictor.probabilities(list(images))
    return float((probs.argmax(1).numpy() == labels).mean() * 100)


def enlarged(a: np.ndarray) -> np.ndarray:  # dark ink on white, 10x larger
    return np.asarray(Image.fromarray(255 - a).resize((280, 280), Image.BILINEAR))


def off_centre(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # small, anywhere on white paper
    canvas = np.full((200, 200), 255, np.uint8)
    y, x = rng.integers(0, 200 - 28, 2)
    canvas[y : y + 28, x : x + 28] = 255 - a
    return canvas


def test_mnist_test_images_are_left_exactly_as_they_are(mnist, predictor):
    images, _ = mnist
    untouched = [frame_image(a, FRAMINGS["mnist"]) for a in images]
    assert all(f.note.startswith("already framed") for f in untouched)
    assert all(np.array_equal(f.pixels, a) for f, a in zip(untouched, images, strict=True))


def test_every_mnist_image_counts_as_framed():
    """All 70,000, with the server's quick check: among them 10 digits of faint strokes (test image 7921)
    whose ink above INK_LEVEL spans only 14 px, though every pixel's box is 20 px as MNIST made it."""
    splits = load_dataset("mnist")
    for split in (splits.train, splits.test):
        for a in split.images.numpy().reshape(-1, 28, 28):
            assert unchanged_if_framed(Image.fromarray(a), FRAMINGS["mnist"]) is not None
    faint = splits.test.images[7921].numpy().reshape(28, 28)
    assert frame_image(faint, FRAMINGS["mnist"]).note.startswith("already framed")


def test_goals_inverted_enlarged_and_off_centre(mnist, predictor):
    images, labels = mnist
    rng = np.random.default_rng(0)
    original = accuracy(predictor, images, labels)
    inverted = accuracy(predictor, 255 - images, labels)
    assert abs(original - inverted) <= 0.5
    assert accuracy(predictor, [enlarged(a) for a in images], labels) >= 97.0
    assert accuracy(predictor, [off_centre(a, rng) for a in images], labels) >= 97.0


def test_without_framing_the_same_pictures_are_misread(mnist):
    images, labels = mnist
    raw = cnnzoo.load("lenet5:mnist", fit=False)
    assert raw.framing is None
    assert accuracy(raw, 255 - images[:200], labels[:200]) < 60.0  # what a new user saw: 3 of 10


def test_a_photo_like_rgb_picture_of_a_digit(mnist, predictor):
    """Grey pencil on off-white, tinted paper, not square, the digit away from the centre."""
    images, labels = mnist
    i = 1
    ink = np.asarray(Image.fromarray(images[i]).resize((84, 84), Image.BILINEAR)).astype(np.float32) / 255
    paper = np.empty((150, 220, 3), np.float32)
    paper[:] = (235, 228, 210)  # warm off-white
    patch = paper[30:114, 20:104]
    paper[30:114, 20:104] = patch * (1 - 0.6 * ink[..., None])  # grey ink
    noisy = np.clip(paper + np.random.default_rng(0).normal(0, 3, paper.shape), 0, 255).astype(np.uint8)
    result = predictor.predict(noisy, top_k=1)[0]
    assert result["top"][0]["class"] == str(labels[i])
    assert result["framing"].startswith("inverted")


def test_blank_and_tiny_inputs_do_not_crash(predictor):
    blank = frame_image(np.full((50, 50), 255, np.uint8), FRAMINGS["mnist"])
    assert blank.note.startswith("blank") and blank.pixels.max() == 0
    dot = np.full((40, 60), 255, np.uint8)
    dot[10, 20] = 0
    assert frame_image(dot, FRAMINGS["mnist"]).pixels.shape == (28, 28)


def test_framing_keeps_the_aspect_ratio_of_a_one():
    one = np.zeros((100, 100), np.uint8)
    one[10:90, 48:53] = 255  # a tall thin stroke
    framed = frame_image(one, FRAMINGS["mnist"]).pixels
    rows, cols = np.flatnonzero(framed.any(1)), np.flatnonzero(framed.any(0))
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 <= 3  # fitted by its height, still thin


def test_only_models_of_mnist_like_data_frame():
    p = cnnzoo.load("lenet5:fashion-mnist")
    assert p.framing == FRAMINGS["fashion-mnist"]
    from cnnzoo.inference import Predictor

    folder = Predictor(cnnzoo.create_model("lenet5"), {**p.meta, "dataset": "folder:photos"})
    assert folder.framing is None  # photos are not framed


def test_cli_says_it_frames_and_no_fit_turns_it_off(mnist, tmp_path, capsys):
    images, labels = mnist
    path = tmp_path / "digit.png"
    Image.fromarray(enlarged(images[0])).save(path)
    assert main(["predict", "lenet5:mnist", str(path), "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "--no-fit turns it off" in out and f": {labels[0]} " in out and "inverted" in out
    assert main(["predict", "lenet5:mnist", str(path), "--top-k", "1", "--no-fit"]) == 0
    out = capsys.readouterr().out
    assert "framing" not in out and "inverted" not in out
    assert main(["predict", "lenet5:mnist", str(path), "--json"]) == 0
    assert "framing" in json.loads(capsys.readouterr().out)[0]


def test_glyph_test_images_pass_unchanged():
    """Letters keep each font's scale and baseline (o vs O): their own images are never re-framed."""
    test = load_dataset("glyphs-latin").test
    images = test.images[::60, 0].numpy()[:300]
    assert all(frame_image(a, FRAMINGS["glyphs-latin"]).note.startswith("already") for a in images)
