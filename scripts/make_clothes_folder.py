"""Write a small folder of clothes pictures, as a user would bring: 1,500 Fashion-MNIST images in mixed formats.

    python scripts/make_clothes_folder.py /tmp/clothes          # 150 a class: 120 train, 30 test
    cnnzoo train lenet5 --data folder:/tmp/clothes

The images come from Debian's `dataset-fashion-mnist` (the training split; cnnzoo reads it as
`fashion-mnist`), 150 a class drawn with a seeded generator. Each file gets, in turn, one of PNG, JPEG, GIF,
BMP, WebP and TIFF, a random side of 28-90 pixels (resized from 28x28 with Lanczos), and about one in three
is RGB (the garment tinted with a random colour). The layout is the one `folder:` reads
(`cnnzoo.data.folder`): OUT/train/CLASS/*.EXT and OUT/test/CLASS/*.EXT. The same seed writes the same
pictures (the encoders are deterministic too).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from PIL import Image

from cnnzoo.data.idx import read_idx
from cnnzoo.data.sources import FASHION_CLASSES, SYSTEM_FASHION_DIR

# Pillow format name -> file extension, in the order files take them
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
MIN_SIDE, MAX_SIDE = 28, 90
RGB_SHARE = 1 / 3


def folder_name(label: str) -> str:
    """A class name as a folder name ("T-shirt/top" -> "T-shirt-top")."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", label)


def picture(gray: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One 28x28 uint8 image as a picture of a random side, gray or tinted RGB."""
    side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    image = Image.fromarray(gray, mode="L").resize((side, side), Image.Resampling.LANCZOS)
    if rng.random() < RGB_SHARE:
        tint = rng.uniform(0.45, 1.0, size=3)
        rgb = np.asarray(image, dtype=np.float32)[..., None] * tint
        image = Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8), mode="RGB")
    return image


def save(image: Image.Image, path: Path, fmt: str) -> None:
    if fmt == "GIF" and image.mode == "RGB":
        image = image.quantize(colors=256, dither=Image.Dither.NONE)  # a palette, as GIFs hold
    options = {"JPEG": {"quality": 90}, "WEBP": {"quality": 90, "method": 4}}.get(fmt, {})
    image.save(path, format=fmt, **options)


def make_folder(
    out: str | Path,
    *,
    per_class: int = 150,
    test_per_class: int = 30,
    seed: int = 0,
    source: str | Path = SYSTEM_FASHION_DIR,
) -> dict[str, int]:
    """Write the folder; returns how many files of each format were written."""
    source, out = Path(source), Path(out)
    images = read_idx(source / "train-images-idx3-ubyte.gz")
    labels = read_idx(source / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(FORMATS, 0)
    formats = list(FORMATS)
    n = 0
    for label, name in enumerate(FASHION_CLASSES):
        chosen = rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False)
        for k, index in enumerate(chosen):
            split = "test" if k >= per_class - test_per_class else "train"
            fmt = formats[n % len(formats)]
            folder = out / split / folder_name(name)
            folder.mkdir(parents=True, exist_ok=True)
            save(picture(images[index], rng), folder / f"{int(index):05d}{FORMATS[fmt]}", fmt)
            counts[fmt] += 1
            n += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder to write (train/ and test/ below it)")
    parser.add_argument("--per-class", type=int, default=150, help="images per class (default 150)")
    parser.add_argument("--test-per-class", type=int, default=30, help="of which in test/ (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 < args.test_per_class < args.per_class:
        parser.error("--test-per-class must be between 1 and --per-class - 1")
    counts = make_folder(
        args.out, per_class=args.per_class, test_per_class=args.test_per_class, seed=args.seed
    )
    total = sum(counts.values())
    shown = ", ".join(f"{n} {fmt}" for fmt, n in counts.items())
    print(f"wrote {total} images to {args.out} ({shown})")


if __name__ == "__main__":
    main()
