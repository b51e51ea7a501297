"""A user's own images as a dataset: one sub-folder per class, the layout of torchvision's ImageFolder.

    PATH/cat/001.jpg            PATH/train/cat/001.jpg     PATH/val/cat/101.jpg   (or PATH/test/...)
    PATH/dog/002.png     or     PATH/train/dog/002.png     PATH/val/dog/102.png

Without a train/val (or train/test) split on disk, 20% of each class goes to test, chosen by a seeded shuffle
of the sorted file list, so the same folder always gives the same split. Both `val/` and `test/` present:
`val/` is used and `test/` left alone. Class names are the sub-folder names, sorted; a label is the index.

Every image becomes one square size: the short side is resized to `image_size` and the centre cropped
(done as one Pillow resize of the centre square). Without `image_size`, the median short side of the training
images is used, capped at 64 pixels (`MAX_DEFAULT_SIZE`) so that the classic CNNs train fast; pass it to
choose. Grayscale modes (1, L, LA, I;16, I, F) stay one channel, every other mode becomes RGB; transparency
is composited on white; 16-bit values are scaled to 8 bits; EXIF rotation is applied. The dataset has one
channel when every image is grayscale, else three (grayscale images are then repeated over RGB).

Unreadable files (bad header, truncated data) are skipped and listed in one `CorruptImageWarning`;
`strict=True` makes that a `CnnzooError` instead. Files with other extensions (.txt, .csv) and hidden
files are ignored without a word.

When the decoded uint8 tensors would exceed `max_memory_bytes` (2 GiB by default) the splits come back as
`StreamingFolder`s, which decode one image per `__getitem__` (use a torch DataLoader with workers). In that
case only the headers are read up front, so a file whose pixel data is broken raises a `CnnzooError` when
it is reached, and mean/std come from a spread sample of at most 2,000 training images.
"""

from __future__ import annotations

import os
import statistics
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from cnnzoo.data.base import ArrayDataset, DatasetInfo, Splits
from cnnzoo.data.image import GRAY_MODES, decode_image, reason
from cnnzoo.data.stats import channel_stats, stratified_split
from cnnzoo.errors import CnnzooError

__all__ = ["load_folder", "StreamingFolder", "CorruptImageWarning", "MAX_DEFAULT_SIZE", "DEFAULT_MAX_MEMORY"]

MAX_DEFAULT_SIZE = 64  # cap of the default image size: classic CNNs train fast at 32..64 px
DEFAULT_MAX_MEMORY = 2 * 1024**3  # decoded uint8 bytes above which the splits stream from disk
TEST_FRACTION = 0.2  # share of each class held out when the folder has no split of its own
SPLIT_SEED = 0
STATS_SAMPLE = 2000  # images decoded for mean/std when streaming
_MAX_LISTED = 100  # paths spelled out in one warning or error

# Formats worth trying; intersected with what this Pillow can open (no stubs such as .h5 or .grib).
_WANTED_EXTENSIONS = {
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp", ".ppm",
    ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".qoi", ".avif", ".jp2", ".j2k", ".pcx", ".sgi", ".ras",
}  # fmt: skip

T = TypeVar("T")


class CorruptImageWarning(UserWarning):
    """Some files of an image folder could not be read and were skipped."""


class StreamingFolder(torch.utils.data.Dataset):
    """A folder split too large for memory: paths and labels, decoded one image per item.

    `dataset[i]` is `(image, label)`: a (C, H, W) uint8 tensor and an int. `labels`, `paths` and `info` match
    the attributes of `ArrayDataset`, so statistics and class counts work without decoding anything.
    """

    def __init__(self, paths: Sequence[str], labels: Tensor, info: DatasetInfo):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = list(paths)
        self.labels = labels
        self.info = info

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path = self.paths[index]
        try:
            array = _decode(path, self.info.image_size, self.info.channels)
        except Exception as e:  # Pillow raises many kinds; all mean the same thing here
            raise CnnzooError(f"cannot decode image {path}: {e}") from e
        return torch.from_numpy(array), int(self.labels[index])

    def subset(self, index: Tensor) -> StreamingFolder:
        return StreamingFolder([self.paths[i] for i in index.tolist()], self.labels[index], self.info)


def image_extensions() -> set[str]:
    """Lower-case file extensions (with the dot) that are read as images."""
    openable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return _WANTED_EXTENSIONS & openable


def load_folder(
    path: str | Path,
    *,
    image_size: int | None = None,
    strict: bool = False,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY,
    workers: int | None = None,
    progress: bool = True,
) -> Splits:
    """Load an image folder (see the module docstring for the layouts and rules) as train and test splits."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise CnnzooError(f"image folder {root} does not exist or is not a directory")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise CnnzooError(f"image_size must be a positive integer, got {image_size!r}")
    classes, train_items, test_items = _scan(root)
    split_on_disk = bool(test_items)
    workers = workers or min(32, (os.cpu_count() or 1) + 4)

    # 1. headers only: size and mode of every file, cheap, and catches files that are not images at all
    paths = [p for p, _ in train_items + test_items]
    headers = dict(zip(paths, _parallel(_read_header, paths, workers, None), strict=True))
    bad = {p: h for p, h in headers.items() if isinstance(h, str)}
    train_items = [(p, y) for p, y in train_items if p not in bad]
    test_items = [(p, y) for p, y in test_items if p not in bad]
    if not train_items or (split_on_disk and not test_items):
        _report(bad, strict=True, root=root)  # nothing usable left: an error, listing the files
    channels = 1 if all(headers[p][1] for p, _ in train_items + test_items) else 3
    if image_size is None:
        median = statistics.median_low(min(headers[p][0]) for p, _ in train_items)
        image_size = max(1, min(MAX_DEFAULT_SIZE, median))

    # 2. split (when the folder has none) before decoding, so decode failures do not move the split
    if not split_on_disk:
        labels = torch.tensor([y for _, y in train_items], dtype=torch.int64)
        train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
        test_items = [train_items[i] for i in test_idx.tolist()]
        train_items = [train_items[i] for i in train_idx.tolist()]
        if not test_items:
            raise CnnzooError(f"too few images in {root} to hold out a test split: give each class 2 or more")

    info_args = {"name": f"folder:{root}", "classes": classes, "image_size": image_size, "channels": channels}
    info_args.update(flip=True, source=f"image folder {root}")
    n = len(train_items) + len(test_items)
    if n * channels * image_size * image_size > max_memory_bytes:
        return _streaming_splits(train_items, test_items, info_args, bad, strict, root, workers)

    # 3. decode everything, several files at once (Pillow releases the GIL while decoding)
    train, train_bad = _decode_all(train_items, image_size, channels, workers, progress)
    test, test_bad = _decode_all(test_items, image_size, channels, workers, progress)
    bad.update(train_bad)
    bad.update(test_bad)
    _report(bad, strict=strict, root=root)
    if len(train[1]) == 0 or len(test[1]) == 0:
        raise CnnzooError(f"no readable images left in the {'train' if len(train[1]) == 0 else 'test'} split")
    mean, std = channel_stats(train[0])
    info = DatasetInfo(mean=mean, std=std, **info_args)
    return Splits(
        ArrayDataset(train[0], train[1], info, train[2]), ArrayDataset(test[0], test[1], info, test[2])
    )


def _scan(root: Path) -> tuple[tuple[str, ...], list[tuple[str, int]], list[tuple[str, int]]]:
    """Find the classes and the (path, label) items of train and, when on disk, test."""
    extensions = image_extensions()
    train_dir = root / "train"
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if train_dir.is_dir():
        # a lone train/ is the class root; the split is then made here
        base = train_dir
    else:
        base, test_dir = root, None
    found = {d.name: _images_under(d, extensions) for d in _subdirs(base)}
    classes = tuple(sorted(name for name, files in found.items() if files))
    if not classes:
        loose = _images_under(base, extensions)
        if loose:
            raise CnnzooError(f"{base} has images but no class sub-folders: put each class in its own folder")
        raise CnnzooError(f"no images found in {base} (looked for {', '.join(sorted(extensions))})")
    if len(classes) < 2:
        raise CnnzooError(f"{base} has only one class ({classes[0]}): a classifier needs two or more")
    train = [(f, y) for y, name in enumerate(classes) for f in found[name]]
    test: list[tuple[str, int]] = []
    if test_dir is not None:
        index = {name: y for y, name in enumerate(classes)}
        for d in _subdirs(test_dir):
            files = _images_under(d, extensions)
            if files and d.name not in index:
                raise CnnzooError(f"class {d.name!r} is in {test_dir} but not in {train_dir}")
            test.extend((f, index[d.name]) for f in files)
        if not test:
            raise CnnzooError(f"{test_dir} has no images in class sub-folders")
    return classes, train, test


def _subdirs(directory: Path) -> list[Path]:
    return sorted(d for d in directory.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_under(directory: Path, extensions: set[str]) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                files.append(os.path.join(dirpath, name))
    return sorted(files)


def _read_header(path: str) -> tuple[tuple[int, int], bool] | str:
    """((width, height), is_grayscale), or a message saying why the file cannot be opened."""
    try:
        with Image.open(path) as im:
            return im.size, im.mode in GRAY_MODES
    except Exception as e:  # UnidentifiedImageError, OSError, DecompressionBombError, SyntaxError...
        return reason(e, path)


def _decode(path: str, size: int, channels: int) -> np.ndarray:
    """Decode one file to a (channels, size, size) uint8 array (the decoder `cnnzoo predict` uses too)."""
    return decode_image(path, size, channels)


def _decode_all(
    items: list[tuple[str, int]], size: int, channels: int, workers: int, progress: bool
) -> tuple[tuple[Tensor, Tensor, list[str]], dict[str, str]]:
    """Decode into one preallocated (N, C, S, S) tensor; returns ((images, labels, paths), {bad path: why})."""
    images = torch.empty((len(items), channels, size, size), dtype=torch.uint8)

    def fill(i: int) -> str | None:
        try:
            images[i] = torch.from_numpy(_decode(items[i][0], size, channels))
        except Exception as e:
            return reason(e, items[i][0])
        return None

    errors = _parallel(fill, list(range(len(items))), workers, "decoding" if progress else None)
    bad = {items[i][0]: e for i, e in enumerate(errors) if e is not None}
    keep = [i for i, e in enumerate(errors) if e is None]
    if bad:
        images = images[torch.tensor(keep, dtype=torch.int64)]
    labels = torch.tensor([items[i][1] for i in keep], dtype=torch.int64)
    return (images, labels, [items[i][0] for i in keep]), bad


def _streaming_splits(
    train_items: list[tuple[str, int]],
    test_items: list[tuple[str, int]],
    info_args: dict,
    bad: dict[str, str],
    strict: bool,
    root: Path,
    workers: int,
) -> Splits:
    """Statistics from a spread sample of the training images; everything else stays on disk."""
    step = max(1, len(train_items) // STATS_SAMPLE)
    sample = train_items[::step][:STATS_SAMPLE]
    size, channels = info_args["image_size"], info_args["channels"]
    (images, _, _), sample_bad = _decode_all(sample, size, channels, workers, progress=False)
    bad.update(sample_bad)
    _report(bad, strict=strict, root=root)
    if len(images) == 0:
        raise CnnzooError(f"none of the sampled training images in {root} could be decoded")
    mean, std = channel_stats(images)
    info = DatasetInfo(mean=mean, std=std, **info_args)

    def make(items):
        items = [(p, y) for p, y in items if p not in bad]
        return StreamingFolder(
            [p for p, _ in items], torch.tensor([y for _, y in items], dtype=torch.int64), info
        )

    return Splits(make(train_items), make(test_items))


def _report(bad: dict[str, str], *, strict: bool, root: Path) -> None:
    """One warning (or, when strict, one error) listing every unreadable file."""
    if not bad:
        return
    paths = sorted(bad)
    listed = "; ".join(f"{p} ({bad[p]})" for p in paths[:_MAX_LISTED])
    if len(paths) > _MAX_LISTED:
        listed += f"; and {len(paths) - _MAX_LISTED} more"
    head = f"{len(paths)} unreadable image file(s) in {root}"
    if strict:
        raise CnnzooError(f"{head}: {listed}")
    warnings.warn(f"skipped {head}: {listed}", CorruptImageWarning, stacklevel=3)


def _parallel(fn: Callable[[T], object], args: list[T], workers: int, desc: str | None) -> list:
    """`[fn(a) for a in args]` on a thread pool, in order, with a progress bar when `desc` is given."""
    if len(args) < 64 or workers <= 1:
        return [fn(a) for a in args]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(fn, args)
        return list(
            tqdm(results, total=len(args), desc=desc, unit="img", disable=True if desc is None else None)
        )
