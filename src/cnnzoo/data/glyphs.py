"""Typed characters rendered from the fonts installed on the machine: a data set you build, not download.

    glyphs-latin      52 classes, A-Z then a-z (case matters: o/O, s/S, x/X differ only in size and place,
                      so every font keeps one scale and one baseline for all its characters)
    glyphs-cyrillic   33 classes, the Russian capitals А-Я with Ё
    glyphs-greek      24 classes, the Greek capitals Α-Ω
    glyphs-digits     10 classes, 0-9 (typed MNIST)

Eleven Cyrillic capitals (А В Е К М Н О Р С Т Х) and fourteen Greek ones (Α Β Ε Ζ Η Ι Κ Μ Ν Ο Ρ Τ Υ Χ) look
like Latin letters: natural source/target pairs for transfer learning.

How one font becomes images:
  1. the font is kept only if it has a real glyph for every character (not the .notdef box it draws for an
     unassigned code point, and not blank);
  2. each character is drawn once per stroke width (regular and two bolder) at 64 px, and every drawing
     is scaled down (Lanczos) by one factor per font onto a 28x28 canvas: centred horizontally on its own
     box, vertically on the box that holds the whole alphabet, so the baseline is shared;
  3. each sample picks a stroke width, a rotation (±8°), a scale (0.85-1.1) and a shift (±1.5 px), applied
     to all samples of a font with one `grid_sample` (bilinear): white on black, as in MNIST.
The random draws of a font depend only on (seed, font file name, alphabet), so adding a font never changes
the others' images.

Train and test are split BY TYPEFACE. Fonts that draw (nearly) the same glyphs, a mean difference under
2% at 28x28, are kept once: Noto copies Noto Sans's Latin and digits into many of its script fonts, with
other hinting. (Distinct designs measured 2.3% and up: Liberation Sans and FreeSans are the closest pair.)
The rest are grouped by the first two words of their family name: DejaVu Sans with its bold, oblique,
condensed and mono cuts; PT Sans with PT Sans Caption and Narrow; Noto Sans with the Noto Sans <script>
fonts. Whole groups, chosen by seed, form the test split until it holds 20% of the fonts (it ends up with
20-30%), so test accuracy is accuracy on typefaces never seen in training. `ArrayDataset.paths` holds the font file of every image.

Fonts come from /usr/share/fonts. Debian's (CI installs the same list):
    apt-get install fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf fonts-paratype fonts-noto-core
The result is cached in `<cache>/glyphs/` ($CNNZOO_CACHE, else $XDG_CACHE_HOME/cnnzoo, else
~/.cache/cnnzoo), keyed by a hash of the alphabet, the font files (path and size), the seed, the number of
samples, the renderer version and Pillow's and FreeType's versions.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from cnnzoo._io import progress as _progress
from cnnzoo.data.augment import affine_grid
from cnnzoo.data.base import ArrayDataset, DatasetInfo, Splits
from cnnzoo.data.cache import cache_dir as cache_root
from cnnzoo.data.stats import channel_stats
from cnnzoo.errors import CnnzooError

__all__ = ["GLYPH_ALPHABETS", "APT_FONT_PACKAGES", "FONT_DIRS", "load_glyphs", "find_fonts", "usable_fonts"]

GLYPH_ALPHABETS: dict[str, str] = {
    "glyphs-latin": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "glyphs-cyrillic": "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ",
    "glyphs-greek": "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
    "glyphs-digits": "0123456789",
}
APT_FONT_PACKAGES = (
    "fonts-dejavu-core",
    "fonts-liberation2",
    "fonts-freefont-ttf",
    "fonts-paratype",
    "fonts-noto-core",
)
FONT_DIRS = ("/usr/share/fonts",)

RENDERER_VERSION = 1  # bump whenever the images would change: old caches then stop matching
IMAGE_SIZE = 28
TEST_FRACTION = 0.2  # share of the fonts (whole typeface groups) kept for the test split
_RENDER_PX = 64  # font size of the first drawing; scaled down afterwards, so hinting matters little
_BOX = 22  # the alphabet's box fills 22 of the 28 pixels, leaving room for rotation and shift
_STROKES = (0, 1, 2)  # extra outline in pixels at _RENDER_PX: regular, bolder, boldest
_DEGREES, _SCALE, _SHIFT = 8.0, (0.85, 1.1), 1.5  # per-sample rotation, scale, shift (final pixels)
_NEAR = 0.02  # mean |difference| (0..1) under which two fonts draw the same glyphs: keep one of them
_UNASSIGNED = "\u0378"  # no character there: a font draws its .notdef glyph for it


@dataclass
class _Rendered:
    path: str
    family: str
    images: np.ndarray  # (len(alphabet) * samples, 28, 28) uint8, character-major
    canonical: np.ndarray  # (len(alphabet), 28, 28) float32 0..1, regular stroke, no jitter


# --- fonts ----------------------------------------------------------------------------------------------


def find_fonts(dirs: tuple[str, ...] = FONT_DIRS) -> list[str]:
    """Every .ttf/.otf file under `dirs`, sorted, so the list (and what is built from it) is deterministic."""
    found = set()
    for d in dirs:
        root = Path(d)
        if root.is_dir():
            found.update(
                str(p) for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf") and p.is_file()
            )
    return sorted(found)


def _open(path: str) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(path, _RENDER_PX, layout_engine=ImageFont.Layout.BASIC)
    except (OSError, ValueError):  # not a font FreeType can read, or a bitmap font without this size
        return None


def _covers(font: ImageFont.FreeTypeFont, alphabet: str) -> bool:
    """True if the font draws every character itself: with ink, and unlike its .notdef glyph."""
    missing = font.getmask(_UNASSIGNED)
    missing = (missing.size, bytes(missing))
    for ch in alphabet:
        mask = font.getmask(ch)
        drawn = (mask.size, bytes(mask))
        if drawn == missing or not any(drawn[1]):
            return False
    return True


def usable_fonts(alphabet: str, fonts: list[str] | None = None) -> list[str]:
    """The fonts (of `fonts`, default all installed) that have a glyph for every character of `alphabet`."""
    paths = find_fonts() if fonts is None else fonts
    return [p for p in paths if (f := _open(p)) is not None and _covers(f, alphabet)]


def _family(font: ImageFont.FreeTypeFont) -> str:
    return font.getname()[0] or Path(font.path).stem


def _superfamily(family: str) -> str:
    """The first two words of the family name: 'Noto Sans Bengali' and 'Noto Sans Display' -> 'noto sans',
    'PT Sans Narrow' -> 'pt sans', 'DejaVu Sans Mono' -> 'dejavu sans', 'FreeMono' -> 'freemono'."""
    return " ".join(family.lower().split()[:2])


# --- rendering ------------------------------------------------------------------------------------------


def _draw(font: ImageFont.FreeTypeFont, ch: str, stroke: int) -> tuple[Image.Image, int]:
    """The character in white on black, cropped to its box, and the box's top relative to the baseline."""
    left, top, right, bottom = font.getbbox(ch, anchor="ls", stroke_width=stroke)
    im = Image.new("L", (max(right - left, 1), max(bottom - top, 1)))
    ImageDraw.Draw(im).text(
        (-left, -top), ch, font=font, fill=255, anchor="ls", stroke_width=stroke, stroke_fill=255
    )
    return im, top


def _canvases(font: ImageFont.FreeTypeFont, alphabet: str) -> tuple[np.ndarray, np.ndarray]:
    """Every character at every stroke, laid out as the font: (len(alphabet), len(_STROKES), 28, 28) uint8,
    and (len(alphabet), len(_STROKES), 2) float, the sub-pixel (x, y) offset the placement rounded away.

    One scale for the whole font (the alphabet's tallest extent, or its widest glyph, fills `_BOX`), glyphs
    centred horizontally on their own box and vertically on the alphabet's box (a shared baseline).
    """
    drawn = [[_draw(font, ch, s) for s in _STROKES] for ch in alphabet]
    boxes = [font.getbbox(ch, anchor="ls") for ch in alphabet]
    top, bottom = min(b[1] for b in boxes), max(b[3] for b in boxes)
    widest = max(b[2] - b[0] for b in boxes)
    k = _BOX / max(bottom - top, widest, 1)
    middle = (top + bottom) / 2
    out = np.zeros((len(alphabet), len(_STROKES), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    residual = np.zeros((len(alphabet), len(_STROKES), 2), np.float32)
    for i, row in enumerate(drawn):
        for j, (im, im_top) in enumerate(row):
            w, h = max(round(im.width * k), 1), max(round(im.height * k), 1)
            small = np.asarray(im.resize((w, h), Image.Resampling.LANCZOS))
            x, y = (IMAGE_SIZE - w) / 2, IMAGE_SIZE / 2 + (im_top - middle) * k
            x0, y0 = round(x), round(y)
            residual[i, j] = x - x0, y - y0
            # clip whatever would fall off the canvas (only possible for freakishly tall accents)
            ys, xs = slice(max(y0, 0), min(y0 + h, IMAGE_SIZE)), slice(max(x0, 0), min(x0 + w, IMAGE_SIZE))
            out[i, j, ys, xs] = small[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out, residual


def _rng(seed: int, path: str, alphabet: str) -> np.random.Generator:
    """A generator that depends on the seed, the font's file name and the alphabet, nothing else."""
    digest = hashlib.sha256(f"{seed}|{Path(path).name}|{alphabet}".encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, np.uint32))


def _jitter(canvases: np.ndarray, residual: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """`samples` variations of every character: stroke, rotation, scale, shift. (C*samples, 28, 28) uint8."""
    n_chars, n_strokes = canvases.shape[:2]
    n = n_chars * samples
    char = np.repeat(np.arange(n_chars), samples)
    stroke = rng.integers(0, n_strokes, n)
    angle = np.deg2rad(rng.uniform(-_DEGREES, _DEGREES, n))
    scale = rng.uniform(*_SCALE, n)
    shift = rng.uniform(-_SHIFT, _SHIFT, (n, 2)) + residual[char, stroke]  # pixels
    shift /= IMAGE_SIZE / 2  # -> normalised coordinates
    # the grid maps output coordinates to input ones: the inverse of "rotate, scale, then shift"
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.empty((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, sin, -sin, cos
    theta[:, 0, 2] = -(cos * shift[:, 0] + sin * shift[:, 1])
    theta[:, 1, 2] = -(-sin * shift[:, 0] + cos * shift[:, 1])
    src = torch.from_numpy(canvases[char, stroke]).unsqueeze(1).float()  # (n, 1, 28, 28)
    grid = affine_grid(torch.from_numpy(theta), IMAGE_SIZE, IMAGE_SIZE)
    out = F.grid_sample(src, grid, mode="bilinear", align_corners=False)  # (n, 1, 28, 28)
    return out.squeeze(1).round_().clamp_(0, 255).to(torch.uint8).numpy()


def _draw_font(path: str, alphabet: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Step 1 and 2 for one font (runs on a worker thread): its canvases and family, or None if unusable."""
    font = _open(path)
    if font is None or not _covers(font, alphabet):
        return None
    return *_canvases(font, alphabet), _family(font)


def _render_all(paths: list[str], alphabet: str, seed: int, samples: int, progress: bool) -> list[_Rendered]:
    """Draw every font on a thread pool (FreeType and Pillow release the GIL), then jitter them one font at a
    time in torch on the main thread, so torch's own threads do not fight the pool's."""
    workers = max(1, min(len(paths), os.cpu_count() or 1))
    out = []
    with ThreadPoolExecutor(workers) as pool, torch.inference_mode():
        drawn = pool.map(lambda p: _draw_font(p, alphabet), paths)
        for path, result in _progress(
            zip(paths, drawn, strict=True),
            total=len(paths),
            desc="rendering fonts",
            unit="font",
            enabled=progress,
        ):  # a bar on a terminal; in a log file, one final line
            if result is None:
                continue
            canvases, residual, family = result
            canonical = canvases[:, 0].astype(np.float32) / 255
            images = _jitter(canvases, residual, samples, _rng(seed, path, alphabet))
            out.append(_Rendered(path, family, images, canonical))
    return out


# --- typeface groups and the split ------------------------------------------------------------------------


def _group(fonts: list[_Rendered]) -> tuple[list[_Rendered], list[int]]:
    """Keep one of every set of near-identical fonts; number the rest by superfamily (the split's unit)."""
    canon = torch.from_numpy(np.stack([f.canonical.reshape(-1) for f in fonts])).double()  # (F, chars*784)
    dist = (torch.cdist(canon[None], canon[None], p=1)[0] / canon.shape[1]).numpy()  # mean |a - b|, 0..1
    keep: list[int] = []
    for i in range(len(fonts)):  # greedy in path order, so the result does not depend on the seed
        if all(dist[i, k] >= _NEAR for k in keep):
            keep.append(i)
    names = [_superfamily(fonts[i].family) for i in keep]
    numbers = {n: g for g, n in enumerate(dict.fromkeys(names))}
    return [fonts[i] for i in keep], [numbers[n] for n in names]


def _test_groups(groups: list[int], seed: int) -> set[int]:
    """Whole groups, in a seeded order, until about TEST_FRACTION of the fonts are in. A group that would
    take the test split past twice that is passed over (Noto's clones make one huge group), and there is
    at least one group on each side."""
    n_groups = max(groups) + 1
    sizes = np.bincount(groups, minlength=n_groups)
    order = torch.randperm(n_groups, generator=torch.Generator().manual_seed(seed)).tolist()
    target = TEST_FRACTION * len(groups)
    chosen: set[int] = set()
    taken = 0
    for g in order:
        if taken >= target or len(chosen) == n_groups - 1:
            break
        if taken + sizes[g] <= 2 * target:
            chosen.add(g)
            taken += sizes[g]
    if not chosen:  # every group is huge: hold out the smallest
        chosen.add(min(order, key=lambda g: sizes[g]))
    return chosen


# --- cache --------------------------------------------------------------------------------------------


def _cache_key(alphabet: str, fonts: list[str], seed: int, samples: int) -> str:
    h = hashlib.sha256()
    ft = getattr(ImageFont.core, "freetype2_version", "?")
    h.update(
        f"{RENDERER_VERSION}|{PIL.__version__}|{ft}|{torch.__version__}|{seed}|{samples}|{alphabet}".encode()
    )
    for p in fonts:
        h.update(f"|{p}:{os.path.getsize(p)}".encode())
    return h.hexdigest()[:16]


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz atomically: to a temporary file beside it, then rename, so no reader sees half a file.

    Deflate at level 1: glyph images are mostly black, so it shrinks them ~5x at a fifth of numpy's
    default compression time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for key, value in arrays.items():
                with z.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the data set -------------------------------------------------------------------------------------


def _build(alphabet: str, fonts: list[str], seed: int, samples: int, progress: bool) -> dict[str, np.ndarray]:
    rendered = _render_all(fonts, alphabet, seed, samples, progress)
    kept, groups = _group(rendered) if rendered else ([], [])
    if len(kept) < 2:
        raise CnnzooError(
            f"{len(kept)} distinct font(s) draw all of {alphabet[:3]}...{alphabet[-1]}; need 2 or more: "
            f"apt-get install {' '.join(APT_FONT_PACKAGES)}"
        )
    if len(set(groups)) < 2:
        groups = list(range(len(kept)))  # one typeface only: fall back to splitting by file
    test = _test_groups(groups, seed)
    per_font = len(alphabet) * samples
    return {
        "images": np.concatenate([f.images for f in kept]),
        "labels": np.tile(np.repeat(np.arange(len(alphabet), dtype=np.int64), samples), len(kept)),
        "font": np.repeat(np.arange(len(kept), dtype=np.int32), per_font),
        "font_paths": np.array([f.path for f in kept]),
        "families": np.array([f.family for f in kept]),
        "test_font": np.array([g in test for g in groups]),
    }


def _splits(name: str, arrays: dict[str, np.ndarray]) -> Splits:
    alphabet = GLYPH_ALPHABETS[name]
    images = torch.from_numpy(arrays["images"]).unsqueeze(1)  # (N, 1, 28, 28)
    labels = torch.from_numpy(arrays["labels"]).long()
    font = torch.from_numpy(arrays["font"]).long()
    paths, families, test_font = (
        arrays["font_paths"].tolist(),
        arrays["families"].tolist(),
        arrays["test_font"],
    )
    is_test = torch.from_numpy(test_font)[font]
    train_idx, test_idx = torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()
    mean, std = channel_stats(images[train_idx])

    def names(test: bool) -> str:
        return ", ".join(sorted({fam for fam, t in zip(families, test_font, strict=True) if t == test}))

    info = DatasetInfo(
        name=name,
        classes=tuple(alphabet),
        image_size=IMAGE_SIZE,
        channels=1,
        mean=mean,
        std=std,
        flip=False,
        source=(
            f"rendered with Pillow from {len(paths)} fonts in {', '.join(FONT_DIRS)} "
            f"({int((~test_font).sum())} train, {int(test_font.sum())} test). "
            f"Train families: {names(False)}. Test families: {names(True)}"
        ),
    )

    def split(index: torch.Tensor) -> ArrayDataset:
        return ArrayDataset(images[index], labels[index], info, [paths[i] for i in font[index].tolist()])

    return Splits(split(train_idx), split(test_idx))


def load_glyphs(
    name: str,
    *,
    seed: int = 0,
    samples_per_font: int = 20,
    cache: bool = True,
    fonts: list[str] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Splits:
    """Build (or read from the cache) one of `GLYPH_ALPHABETS`, split into train and test by typeface.

    `samples_per_font` renderings of every character per font (about 80 fonts draw Latin, so 20 gives
    ~80k images). `seed` drives the jitter and which typefaces are held out. `fonts` replaces the scan of
    /usr/share/fonts with an explicit list of font files. `cache_dir` replaces `<cache>/glyphs` (the
    registry's data_dir). Raises CnnzooError naming the apt packages to install when fewer than two
    distinct fonts draw the whole alphabet.
    """
    if name not in GLYPH_ALPHABETS:
        raise CnnzooError(f"unknown glyph set {name!r}; known: {', '.join(GLYPH_ALPHABETS)}")
    if samples_per_font < 1:
        raise CnnzooError(f"samples_per_font must be at least 1, got {samples_per_font}")
    alphabet = GLYPH_ALPHABETS[name]
    paths = find_fonts() if fonts is None else sorted({str(Path(p)) for p in fonts})
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise CnnzooError(f"no such font file: {missing[0]}")
    if len(paths) < 2:
        raise CnnzooError(
            f"found {len(paths)} font file(s){'' if fonts else ' in ' + ', '.join(FONT_DIRS)}; need 2 or more: "
            f"apt-get install {' '.join(APT_FONT_PACKAGES)}"
        )
    folder = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "glyphs"
    target = folder / f"{name}-{_cache_key(alphabet, paths, seed, samples_per_font)}.npz"
    if cache and target.is_file():
        try:
            with np.load(target) as data:
                return _splits(name, {k: data[k] for k in data.files})
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable cache file: build again and replace it
    arrays = _build(alphabet, paths, seed, samples_per_font, progress)
    if cache:
        _save(target, arrays)
    return _splits(name, arrays)
