"""Image folders: layouts, image modes, one size, corrupt files, and streaming when memory runs short."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data.base import ArrayDataset
from cnnzoo.data.folder import CorruptImageWarning, StreamingFolder, load_folder
from cnnzoo.data.sources import load_dataset
from cnnzoo.errors import CnnzooError


def save(path: Path, image: Image.Image, **kwargs) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return str(path)


def gray(size=(20, 20), value=100) -> Image.Image:
    return Image.new("L", size, value)


def mixed_folder(root: Path) -> Path:
    """Two classes, every common mode: L, RGB (PNG and JPEG), RGBA, P, 1, I;16."""
    save(root / "cat" / "l.png", gray())
    save(root / "cat" / "rgb.png", Image.new("RGB", (20, 30), (200, 10, 10)))
    save(root / "cat" / "photo.jpg", Image.new("RGB", (40, 20), (10, 200, 10)), quality=95)
    save(root / "cat" / "bits.png", Image.new("1", (20, 20), 1))
    rgba = Image.new("RGBA", (20, 20), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 10, 20))  # left half fully transparent
    save(root / "dog" / "rgba.png", rgba)
    save(root / "dog" / "palette.gif", Image.new("RGB", (24, 20), (10, 10, 200)).convert("P"))
    save(root / "dog" / "deep.png", Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16)))
    save(root / "dog" / "gray.jpg", gray((30, 20), 50))
    (root / "dog" / "notes.txt").write_text("not an image, ignored")
    save(root / "dog" / ".hidden.png", gray())
    return root


def by_name(split: ArrayDataset) -> dict[str, torch.Tensor]:
    return {Path(p).name: img for p, img in zip(split.paths, split.images, strict=True)}


def test_mixed_modes(tmp_path):
    splits = load_folder(mixed_folder(tmp_path / "pets"), image_size=16, progress=False)
    info = splits.info
    assert info.classes == ("cat", "dog") and info.channels == 3 and info.image_size == 16 and info.flip
    assert info.name == f"folder:{tmp_path / 'pets'}" and len(info.mean) == 3
    assert len(splits.train) + len(splits.test) == 8  # .txt and hidden file ignored
    images = {**by_name(splits.train), **by_name(splits.test)}
    assert all(img.shape == (3, 16, 16) and img.dtype == torch.uint8 for img in images.values())
    assert images["l.png"].eq(100).all()  # gray repeated over RGB
    assert images["rgb.png"][:, 8, 8].tolist() == [200, 10, 10]
    assert abs(images["photo.jpg"][:, 8, 8].int() - torch.tensor([10, 200, 10])).max() <= 4
    assert images["bits.png"].eq(255).all()
    assert images["deep.png"].eq(255).all()  # 16-bit full scale -> 255
    assert abs(images["palette.gif"][:, 8, 8].int() - torch.tensor([10, 10, 200])).max() <= 4  # quantised
    rgba = images["rgba.png"]
    assert rgba[:, 8, 0].tolist() == [255, 255, 255] and rgba[:, 8, 15].tolist() == [0, 0, 255]  # on white


def test_all_gray_gives_one_channel_and_median_size(tmp_path):
    for i, side in enumerate([20, 24, 28, 30, 200]):
        save(tmp_path / "a" / f"{i}.png", gray((side, side + 5)))
        save(tmp_path / "b" / f"{i}.png", Image.fromarray(np.full((side, side), 4000, dtype=np.uint16)))
    splits = load_folder(tmp_path, progress=False)
    assert splits.info.channels == 1 and splits.info.image_size == 28  # median short side of train images
    assert splits.train.images.shape[1:] == (1, 28, 28)


def test_default_size_is_capped(tmp_path):
    for c in "ab":
        for i in range(3):
            save(tmp_path / c / f"{i}.png", gray((300, 200)))
    assert load_folder(tmp_path, progress=False).info.image_size == 64


def test_centre_crop(tmp_path):
    wide = Image.new("RGB", (90, 30), (255, 0, 0))
    wide.paste((0, 255, 0), (30, 0, 60, 30))  # green centre square, red bands either side
    for c in "ab":
        for i in range(2):
            save(tmp_path / c / f"{i}.png", wide)
    splits = load_folder(tmp_path, image_size=10, progress=False)
    image = splits.train.images[0]
    assert image[1].min() >= 250 and image[0].max() <= 5


def test_corrupt_files_warn_once_and_are_skipped(tmp_path):
    mixed_folder(tmp_path)
    (tmp_path / "cat" / "garbage.png").write_bytes(b"definitely not a png")
    good = (tmp_path / "dog" / "rgba.png").read_bytes()
    (tmp_path / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_folder(tmp_path, image_size=8, progress=False)
    ours = [w for w in caught if issubclass(w.category, CorruptImageWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "2 unreadable" in message and "garbage.png" in message and "truncated.png" in message
    assert len(splits.train) + len(splits.test) == 8
    with pytest.raises(CnnzooError, match="2 unreadable image file.*garbage.png.*truncated.png"):
        load_folder(tmp_path, image_size=8, strict=True, progress=False)


def test_split_is_stratified_and_deterministic(tmp_path):
    for c in "abc":
        for i in range(10):
            save(tmp_path / c / f"{i:02d}.png", gray((8, 8), 20 * i))
    first = load_folder(tmp_path, progress=False)
    assert torch.bincount(first.test.labels).tolist() == [2, 2, 2]
    assert torch.bincount(first.train.labels).tolist() == [8, 8, 8]
    second = load_dataset(f"folder:{tmp_path}", progress=False)
    assert first.test.paths == second.test.paths
    assert not set(first.train.paths) & set(first.test.paths)


def test_train_val_layout(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for c in ("x", "y"):
            for i in range(n):
                save(tmp_path / split / c / f"{i}.png", gray((8, 8)))
    splits = load_folder(tmp_path, progress=False)
    assert (len(splits.train), len(splits.test)) == (6, 4)
    assert all("/val/" in p for p in splits.test.paths)
    save(tmp_path / "val" / "z" / "0.png", gray((8, 8)))
    with pytest.raises(CnnzooError, match="class 'z' is in .*val but not in .*train"):
        load_folder(tmp_path, progress=False)


def test_train_test_layout_and_nested_files(tmp_path):
    for split in ("train", "test"):
        for c in ("x", "y"):
            save(tmp_path / split / c / "deeper" / "0.png", gray((8, 8)))
    splits = load_folder(tmp_path, progress=False)
    assert (len(splits.train), len(splits.test)) == (2, 2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no images found in"),
        (lambda root: save(root / "only" / "0.png", gray()), r"only one class \(only\)"),
        (lambda root: save(root / "0.png", gray()), "has images but no class sub-folders"),
        (
            lambda root: [save(root / c / "0.png", gray()) for c in "ab"],
            "too few images .* to hold out a test",
        ),
    ],
)
def test_unusable_folders(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(CnnzooError, match=message):
        load_folder(tmp_path, progress=False)


def test_missing_folder_and_bad_size(tmp_path):
    with pytest.raises(CnnzooError, match="does not exist"):
        load_folder(tmp_path / "nope")
    with pytest.raises(CnnzooError, match="image_size must be a positive integer"):
        load_folder(tmp_path, image_size=0)


def test_all_files_corrupt_is_an_error_even_without_strict(tmp_path):
    for c in "ab":
        (tmp_path / c).mkdir()
        (tmp_path / c / "0.png").write_bytes(b"junk")
    with pytest.raises(CnnzooError, match="2 unreadable"):
        load_folder(tmp_path, progress=False)


def test_streaming_when_over_memory_budget(tmp_path):
    mixed_folder(tmp_path)
    (tmp_path / "cat" / "garbage.png").write_bytes(b"junk")
    with pytest.warns(CorruptImageWarning, match="garbage.png"):
        splits = load_dataset(f"folder:{tmp_path}", image_size=12, max_memory_bytes=1000, progress=False)
    assert isinstance(splits.train, StreamingFolder) and isinstance(splits.test, StreamingFolder)
    assert len(splits.train) + len(splits.test) == 8
    image, label = splits.train[0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.uint8 and label in (0, 1)
    assert splits.info.channels == 3 and len(splits.info.mean) == 3
    part = splits.train.subset(torch.tensor([0]))
    assert len(part) == 1 and torch.equal(part[0][0], image)
    with pytest.warns(CorruptImageWarning):
        in_memory = load_folder(tmp_path, image_size=12, progress=False)
    assert splits.train.paths == in_memory.train.paths
    assert torch.equal(
        torch.stack([splits.train[i][0] for i in range(len(splits.train))]), in_memory.train.images
    )


def test_streaming_item_that_breaks_later(tmp_path):
    for c in "ab":
        for i in range(3):
            save(tmp_path / c / f"{i}.png", gray((8, 8)))
    splits = load_folder(tmp_path, max_memory_bytes=1, progress=False)
    Path(splits.test.paths[0]).write_bytes(b"junk")
    with pytest.raises(CnnzooError, match=f"cannot decode image {splits.test.paths[0]}"):
        splits.test[0]


def test_many_files_use_the_thread_pool(tmp_path):
    for c in "ab":
        for i in range(40):
            save(tmp_path / c / f"{i}.png", gray((10, 10), i))
    splits = load_folder(tmp_path, workers=4, progress=False)
    assert len(splits.train) + len(splits.test) == 80
    assert splits.info.image_size == 10 and splits.train.images.shape[1:] == (1, 10, 10)
