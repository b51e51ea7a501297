"""Where datasets come from: a registry of named datasets, each loaded as train and test `Splits`.

    mnist           vendored in the package (src/cnnzoo/assets/mnist), always there
    fashion-mnist   Debian's dataset-fashion-mnist package, a --data-dir, or the cache
    kmnist          downloaded on request (download=True) into the cache, MD5-checked
    cifar10         the binary release (fixed-size records; never the pickled one), downloaded on request
    cifar100        same, fine labels (100 classes)
    digits          scikit-learn's 8x8 digits, upscaled once to 28x28, split 80/20 per class
    folder:PATH     your images, one sub-folder per class (see `cnnzoo.data.folder`)

The cache is `$CNNZOO_CACHE`, else `$XDG_CACHE_HOME/cnnzoo`, else `~/.cache/cnnzoo`, one sub-folder per
dataset. `data_dir` replaces that sub-folder: files are looked for, and downloaded, there. Downloads go to a
temporary file in the same folder, are checked against the published MD5 and only then renamed into place,
so an interrupted or corrupt download never looks like a finished one. Every `DatasetInfo` carries mean and
std computed exactly from the training split.

Each registry entry also carries what training and inference need to know about the images: `augment`, the
augmentation that keeps their labels (`dataset_augment`: no mirroring of digits and characters), and
`framing`, how the data set framed its images (`dataset_framing`; None for photos), measured on its own
training split. A new data set is one `_register(...)` here: `default_config` and `framing_for` read these.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from cnnzoo.data.base import ArrayDataset, DatasetInfo, Splits
from cnnzoo.data.cache import cache_dir
from cnnzoo.data.folder import DEFAULT_MAX_MEMORY, load_folder
from cnnzoo.data.framing import Framing
from cnnzoo.data.glyphs import load_glyphs
from cnnzoo.data.idx import read_idx
from cnnzoo.data.stats import channel_stats, stratified_split
from cnnzoo.errors import CnnzooError

__all__ = [
    "load_dataset",
    "list_datasets",
    "describe_dataset",
    "dataset_facts",
    "dataset_augment",
    "dataset_framing",
    "dataset_framings",
    "cache_dir",
    "download_file",
    "parse_cifar",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SYSTEM_FASHION_DIR = Path(
    "/usr/share/datasets/fashion-mnist"
)  # Debian: apt-get install dataset-fashion-mnist

DIGITS = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")  # romanised hiragana

_IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_KMNIST_URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
_KMNIST_MD5 = {  # of the .gz files, as published with the dataset
    "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
    "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
    "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
    "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
}


@dataclass(frozen=True)
class _Cifar:
    url: str
    md5: str
    folder: str  # top folder inside the tarball
    train: tuple[str, ...]
    test: str
    names: str  # text file of class names, one a line
    label_bytes: int  # CIFAR-100 records carry (coarse, fine); the fine label is the last byte
    source: str


_CIFAR = {
    "cifar10": _Cifar(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
        folder="cifar-10-batches-bin",
        train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        test="test_batch.bin",
        names="batches.meta.txt",
        label_bytes=1,
        source="CIFAR-10, Alex Krizhevsky, Vinod Nair and Geoffrey Hinton (Krizhevsky, 2009, "
        "Learning Multiple Layers of Features from Tiny Images)",
    ),
    "cifar100": _Cifar(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        md5="03b5dce01913d631647c71ecab9e9e88",
        folder="cifar-100-binary",
        train=("train.bin",),
        test="test.bin",
        names="fine_label_names.txt",
        label_bytes=2,
        source="CIFAR-100, Alex Krizhevsky, Vinod Nair and Geoffrey Hinton (Krizhevsky, 2009, "
        "Learning Multiple Layers of Features from Tiny Images)",
    ),
}


# --- registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    description: str
    image_size: int
    loader: Callable[[Path | None, bool, bool], Splits]  # (data_dir, download, progress) -> Splits
    augment: str  # the training augmentation that keeps the labels (a TrainConfig.augment value)
    framing: Framing | None  # how the data set framed its images, for pictures given to its models


_REGISTRY: dict[str, _Entry] = {}
_FOLDER_AUGMENT = "rrc,flip"  # a folder holds photos of any size and framing


def _register(name: str, description: str, image_size: int, *, augment: str, framing: Framing | None):
    """Add a data set: `augment` and `framing` are asked for every time, so that a new MNIST-like data set
    cannot silently train with the wrong augmentation or predict without its framing."""

    def add(loader):
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} registered twice")
        _REGISTRY[name] = _Entry(description, image_size, loader, augment, framing)
        return loader

    return add


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`, besides the `folder:PATH` form."""
    return sorted(_REGISTRY)


def describe_dataset(name: str) -> str:
    """One line saying what the dataset is and where it comes from."""
    if name.startswith("folder:"):
        return "your images, one sub-folder per class (train/ and val/ or test/ optional)"
    return _entry(name).description


def dataset_augment(name: str) -> str:
    """The augmentation that preserves the labels of data set `name` ("none" for a name not registered).

    The name is matched exactly, as the training recipe always has (`load_dataset` also takes other cases)."""
    if name.startswith("folder:"):
        return _FOLDER_AUGMENT
    entry = _REGISTRY.get(name)
    return entry.augment if entry is not None else "none"


def dataset_framing(name: str | None) -> Framing | None:
    """How data set `name` framed its images, or None for photos, folders and names not registered."""
    entry = _REGISTRY.get(name or "")
    return entry.framing if entry is not None else None


def dataset_framings() -> dict[str, Framing]:
    """Every registered data set that has a framing, with it."""
    return {name: e.framing for name, e in _REGISTRY.items() if e.framing is not None}


def dataset_facts(name: str, *, data_dir: str | Path | None = None, download: bool = False) -> dict:
    """`cnnzoo datasets NAME`: classes, size, channels, statistics and split sizes (loads the dataset)."""
    splits = load_dataset(name, data_dir=data_dir, download=download)
    info = splits.info
    return {"name": info.name, "classes": list(info.classes), "image_size": info.image_size,
            "channels": info.channels, "mean": list(info.mean), "std": list(info.std), "flip": info.flip,
            "train": len(splits.train), "test": len(splits.test), "source": info.source}  # fmt: skip


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    strict: bool = False,
    image_size: int | None = None,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY,
    progress: bool = True,
) -> Splits:
    """Load a named dataset (see `list_datasets`) or `folder:PATH` as train and test splits.

    `data_dir` is where to look for (and download) a dataset's files instead of the cache. `download` fetches
    missing files (kmnist, cifar10, cifar100). `strict`, `image_size` and `max_memory_bytes` apply to
    folders (see `cnnzoo.data.folder.load_folder`); a folder too large for `max_memory_bytes` comes back as
    `StreamingFolder` splits. The built-in datasets have one size: asking for another is an error.
    """
    if name.startswith("folder:"):
        path = name[len("folder:") :]
        if not path:
            raise CnnzooError("folder: needs a path, as in folder:/data/my-images")
        return load_folder(
            path, image_size=image_size, strict=strict, max_memory_bytes=max_memory_bytes, progress=progress
        )
    entry = _entry(name)
    if image_size is not None and image_size != entry.image_size:
        raise CnnzooError(
            f"{name} images are {entry.image_size}x{entry.image_size}; image_size={image_size} is for folders"
        )
    return entry.loader(Path(data_dir).expanduser() if data_dir is not None else None, download, progress)


def _entry(name: str) -> _Entry:
    entry = _REGISTRY.get(name.lower())
    if entry is None:
        close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CnnzooError(
            f"unknown dataset {name!r}; known: {', '.join(list_datasets())}, folder:PATH.{hint}"
        )
    return entry


# --- MNIST and its look-alikes (IDX files) -------------------------------------------------------------


@_register(
    "mnist",
    "MNIST handwritten digits, 60k/10k, 28x28 gray (vendored, always available)",
    28,
    augment="none",  # a mirrored digit is another digit, or none
    framing=Framing(20, (14.0, 14.0), "mass"),  # measured: every training digit 20 px, mass at (13.99, 14.00)
)
def _load_mnist(data_dir: Path | None, download: bool, progress: bool) -> Splits:
    source = "MNIST database, Yann LeCun, Corinna Cortes and Christopher J.C. Burges (CC BY-SA 3.0)"
    folder = data_dir if data_dir is not None else ASSETS / "mnist"
    files = _find_idx(folder)
    if files is None:
        raise CnnzooError(f"no MNIST IDX files ({', '.join(_IDX_STEMS)}) in {folder}")
    return _idx_splits("mnist", files, DIGITS, flip=False, source=source)


@_register(
    "fashion-mnist",
    "Zalando's Fashion-MNIST, 60k/10k clothing images, 28x28 gray",
    28,
    augment="crop=2,flip",  # clothing is mirror-symmetric
    framing=Framing(27, (13.5, 13.8), "box"),  # median 27, box centre (13.48, 13.76)
)
def _load_fashion(data_dir: Path | None, download: bool, progress: bool) -> Splits:
    source = "Fashion-MNIST, Han Xiao, Kashif Rasul and Roland Vollgraf, Zalando Research (MIT license)"
    looked = [data_dir] if data_dir is not None else [SYSTEM_FASHION_DIR, cache_dir() / "fashion-mnist"]
    for folder in looked:
        files = _find_idx(folder)
        if files is not None:
            # clothes keep their class in a mirror
            return _idx_splits("fashion-mnist", files, FASHION_CLASSES, flip=True, source=source)
    raise CnnzooError(
        f"Fashion-MNIST not found in {' or '.join(map(str, looked))}: on Debian/Ubuntu run "
        "`apt-get install dataset-fashion-mnist`, or put its four IDX .gz files in a folder and pass --data-dir"
    )


@_register(
    "kmnist",
    "Kuzushiji-MNIST, 60k/10k cursive hiragana, 28x28 gray (download)",
    28,
    augment="none",  # a mirrored character is another character
    framing=None,  # not measured
)
def _load_kmnist(data_dir: Path | None, download: bool, progress: bool) -> Splits:
    source = (
        "KMNIST Dataset (created by CODH), adapted from Kuzushiji Dataset (created by NIJL and others), "
        "doi:10.20676/00000341 (CC BY-SA 4.0)"
    )
    folder = data_dir if data_dir is not None else cache_dir() / "kmnist"
    files = _find_idx(folder)
    if files is None:
        if not download:
            raise CnnzooError(
                f"KMNIST is not in {folder}: pass --download (download=True) to fetch it (~20 MB)"
            )
        for filename, md5 in _KMNIST_MD5.items():
            download_file(_KMNIST_URL + filename, folder / filename, md5, progress=progress)
        files = _find_idx(folder)
        assert files is not None
    return _idx_splits("kmnist", files, KMNIST_CLASSES, flip=False, source=source)


def _find_idx(folder: Path) -> tuple[Path, ...] | None:
    """The four IDX files in `folder` (gzipped or not, `-idx` or `.idx` spelling), or None if any is missing."""
    found = []
    for stem in _IDX_STEMS:
        spellings = (stem, stem.replace("-idx", ".idx"))
        candidates = [folder / (s + ext) for s in spellings for ext in (".gz", "")]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return tuple(found)


def _idx_splits(
    name: str, files: tuple[Path, ...], classes: tuple[str, ...], flip: bool, source: str
) -> Splits:
    train_x, train_y, test_x, test_y = (read_idx(f) for f in files)
    parts = []
    for images, labels, image_file, label_file in (
        (train_x, train_y, *files[:2]),
        (test_x, test_y, *files[2:]),
    ):
        if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
            raise CnnzooError(
                f"{image_file}: expected (N, H, H) uint8 images, got {images.shape} {images.dtype}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise CnnzooError(f"{label_file}: {labels.shape} labels for {len(images)} images in {image_file}")
        if len(labels) and int(labels.max()) >= len(classes):
            raise CnnzooError(
                f"{label_file}: label {int(labels.max())} but {name} has {len(classes)} classes"
            )
        parts.append((torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
    return _splits(name, classes, parts[0], parts[1], flip, source)


def _splits(name, classes, train: tuple, test: tuple, flip: bool, source: str) -> Splits:
    mean, std = channel_stats(train[0])
    size, channels = train[0].shape[-1], train[0].shape[1]
    info = DatasetInfo(name, tuple(classes), size, channels, mean, std, flip=flip, source=source)
    return Splits(ArrayDataset(*train, info), ArrayDataset(*test, info))


# --- CIFAR (binary release) ---------------------------------------------------------------------------


@_register(
    "cifar10",
    "CIFAR-10, 50k/10k photos, 32x32 RGB, 10 classes (download, 163 MB)",
    32,
    augment="crop=4,flip",
    framing=None,  # photos are not framed
)
def _load_cifar10(data_dir: Path | None, download: bool, progress: bool) -> Splits:
    return _load_cifar("cifar10", data_dir, download, progress)


@_register(
    "cifar100",
    "CIFAR-100, 50k/10k photos, 32x32 RGB, 100 fine classes (download, 161 MB)",
    32,
    augment="crop=4,flip",
    framing=None,  # photos are not framed
)
def _load_cifar100(data_dir: Path | None, download: bool, progress: bool) -> Splits:
    return _load_cifar("cifar100", data_dir, download, progress)


def _load_cifar(name: str, data_dir: Path | None, download: bool, progress: bool) -> Splits:
    spec = _CIFAR[name]
    folder = data_dir if data_dir is not None else cache_dir() / name
    tarball = folder / spec.url.rsplit("/", 1)[1]
    extracted = folder / spec.folder
    if not tarball.is_file() and not extracted.is_dir():
        if not download:
            raise CnnzooError(f"{name} is not in {folder}: pass --download (download=True) to fetch it")
        download_file(spec.url, tarball, spec.md5, progress=progress)
    wanted = (spec.names, *spec.train, spec.test)
    if tarball.is_file():
        files = _read_members(tarball, [f"{spec.folder}/{m}" for m in wanted])
        files = {m.rsplit("/", 1)[1]: data for m, data in files.items()}
    else:
        files = {m: _read_plain(extracted / m) for m in wanted}
    classes = tuple(line.strip() for line in files[spec.names].decode().splitlines() if line.strip())
    train = [parse_cifar(files[f], label_bytes=spec.label_bytes, source=f) for f in spec.train]
    test = parse_cifar(files[spec.test], label_bytes=spec.label_bytes, source=spec.test)
    train_x, train_y = torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])
    for labels in (train_y, test[1]):
        if len(labels) and int(labels.max()) >= len(classes):
            raise CnnzooError(
                f"{name}: label {int(labels.max())} but {spec.names} names {len(classes)} classes"
            )
    return _splits(name, classes, (train_x, train_y), test, flip=True, source=spec.source)


def parse_cifar(
    data: bytes, *, label_bytes: int = 1, source: str = "<bytes>"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode CIFAR binary records: `label_bytes` label bytes (the last one is used), then 3x32x32 pixels.

    Returns images (N, 3, 32, 32) uint8 (planes R, G, B, rows top to bottom) and labels (N,) int64.
    """
    record = label_bytes + 3 * 32 * 32
    if len(data) == 0 or len(data) % record:
        raise CnnzooError(f"{source}: {len(data)} bytes is not a whole number of {record}-byte CIFAR records")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    images = torch.from_numpy(rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy())
    labels = torch.from_numpy(rows[:, label_bytes - 1].astype(np.int64))
    return images, labels


def _read_members(tarball: Path, members: list[str]) -> dict[str, bytes]:
    """The bytes of the named regular files in a tarball; nothing is extracted to disk."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            found = {m.name: m for m in tar.getmembers() if m.isfile()}
            missing = [m for m in members if m not in found]
            if missing:
                raise CnnzooError(f"{tarball} lacks {', '.join(missing)}: not the expected archive")
            return {m: tar.extractfile(found[m]).read() for m in members}
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CnnzooError(f"corrupt archive {tarball}: {e}; delete it and download again") from e


def _read_plain(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CnnzooError(f"cannot read {path}: {e.strerror or e}") from e


# --- scikit-learn digits -------------------------------------------------------------------------------


@_register(
    "digits",
    "scikit-learn's 1,797 8x8 digits upscaled to 28x28 gray, split 80/20 (needs scikit-learn)",
    28,
    augment="none",
    framing=Framing(28, (13.5, 13.9), "box"),  # scikit-learn's 8x8 digits fill the frame
)
def _load_digits(data_dir: Path | None, download: bool, progress: bool) -> Splits:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise CnnzooError("the digits dataset needs scikit-learn: pip install scikit-learn") from e
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)  # (N, 1, 8, 8)
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = stratified_split(labels, 0.2, seed=0)
    source = (
        "scikit-learn digits: UCI Optical Recognition of Handwritten Digits (E. Alpaydin, C. Kaynak), "
        "8x8 upscaled to 28x28"
    )
    return _splits(
        "digits", DIGITS, (images[train], labels[train]), (images[test], labels[test]), False, source
    )


# --- downloads -----------------------------------------------------------------------------------------


def _open_url(url: str) -> tuple[BinaryIO, int | None]:
    """Open `url` for reading; returns the stream and its length when the server says (tests replace this)."""
    response = urllib.request.urlopen(url, timeout=60)
    length = response.headers.get("Content-Length")
    return response, int(length) if length else None


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str, *, progress: bool = True) -> Path:
    """Download `url` to `dest` unless a file with the right MD5 is already there.

    Written to a temporary file beside `dest`, hashed on the way, renamed over `dest` only when the MD5
    matches; a mismatch or a network failure is a `CnnzooError` and leaves no file behind.
    """
    dest = Path(dest)
    if dest.is_file() and md5_of(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            stream, total = _open_url(url)
            bar = tqdm(
                total=total, unit="B", unit_scale=True, desc=dest.name, disable=None if progress else True
            )
            with stream, bar:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise CnnzooError(
                f"checksum mismatch for {url}: got md5 {digest.hexdigest()}, expected {md5}; "
                "the download is corrupt or the file changed upstream"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise CnnzooError(f"cannot download {url}: {reason}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _glyph_loader(name: str):
    def load(data_dir: Path | None, download: bool, progress: bool) -> Splits:
        return load_glyphs(name, cache_dir=data_dir, progress=progress)

    return load


# Typed characters: never mirrored. Framing: the median longest side of the ink, and its box centre.
for _name, _what, _framing in (
    (
        "glyphs-latin",
        "typed Latin letters A-Z a-z (52 classes) rendered from installed fonts, split by font",
        Framing(15, (12.5, 13.5), "box"),  # median 15 (lower case is smaller), (12.47, 13.49)
    ),
    (
        "glyphs-cyrillic",
        "typed Cyrillic capitals (33 classes) rendered from installed fonts, split by font",
        Framing(15, (14.3, 13.5), "box"),  # median 15, (14.30, 13.47)
    ),
    (
        "glyphs-greek",
        "typed Greek capitals (24 classes) rendered from installed fonts, split by font",
        Framing(19, (13.5, 13.6), "box"),  # median 19, (13.53, 13.56)
    ),
    (
        "glyphs-digits",
        "typed digits 0-9 rendered from installed fonts, split by font",
        Framing(22, (13.5, 13.6), "box"),  # median side 22, box centre (13.51, 13.57)
    ),
):
    _register(_name, _what, 28, augment="none", framing=_framing)(_glyph_loader(_name))
