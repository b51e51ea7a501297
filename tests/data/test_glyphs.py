"""Glyph data sets rendered from the installed fonts: deterministic, split by typeface, cached.

Builds glyphs-digits (the smallest alphabet) with 2 samples per font into a temporary cache. Needs the
Debian font packages listed in `cnnzoo.data.glyphs.APT_FONT_PACKAGES`; skipped on a machine with fewer than
two fonts installed.
"""

from __future__ import annotations

import time

import pytest
import torch

from cnnzoo.data.glyphs import (
    APT_FONT_PACKAGES,
    GLYPH_ALPHABETS,
    _superfamily,
    find_fonts,
    load_glyphs,
    usable_fonts,
)
from cnnzoo.errors import CnnzooError

FONTS = find_fonts()
pytestmark = pytest.mark.skipif(
    len(FONTS) < 2, reason=f"needs fonts: apt-get install {' '.join(APT_FONT_PACKAGES)}"
)
DIGITS = "glyphs-digits"
SAMPLES = 2


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNZOO_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def built(cache):
    start = time.perf_counter()
    splits = load_glyphs(DIGITS, samples_per_font=SAMPLES, progress=False)
    return splits, time.perf_counter() - start


def test_shapes_and_info(built):
    splits, _ = built
    info = splits.info
    assert info.name == DIGITS and info.classes == tuple("0123456789")
    assert info.image_size == 28 and info.channels == 1 and not info.flip
    assert 0 < info.mean[0] < 0.5 and 0 < info.std[0] < 0.5
    for part in (splits.train, splits.test):
        assert part.images.dtype == torch.uint8 and part.images.shape[1:] == (1, 28, 28)
        assert len(part.paths) == len(part)
        assert (part.images.flatten(1).amax(1) > 100).all()  # every image has a glyph in it
        # every font contributes every class equally
        assert torch.equal(torch.bincount(part.labels), torch.full((10,), len(part) // 10))
    assert "fonts" in info.source


def test_train_and_test_typefaces_are_disjoint(built):
    splits, _ = built
    train, test = set(splits.train.paths), set(splits.test.paths)
    assert train and test and not train & test
    n = len(train) + len(test)
    assert 0.1 <= len(test) / n <= 0.4
    from PIL import ImageFont

    def families(paths):
        return {_superfamily(ImageFont.truetype(p, 10).getname()[0]) for p in paths}

    assert not families(train) & families(test)


def test_every_font_used_has_every_glyph(built):
    splits, _ = built
    used = sorted(set(splits.train.paths) | set(splits.test.paths))
    assert set(used) <= set(usable_fonts(GLYPH_ALPHABETS[DIGITS]))


def test_missing_glyphs_are_detected():
    dejavu = [p for p in FONTS if p.endswith("DejaVuSans.ttf")]
    if not dejavu:
        pytest.skip("fonts-dejavu-core not installed")
    assert usable_fonts("0123", dejavu) == dejavu
    assert usable_fonts("0\u0378", dejavu) == []  # unassigned code point: the .notdef glyph
    assert usable_fonts("0\U00013000", dejavu) == []  # Egyptian hieroglyph: not in DejaVu


def test_deterministic_and_cache_hit_is_fast_and_equal(built, cache):
    splits, build_time = built
    files = list((cache / "glyphs").glob("glyphs-digits-*.npz"))
    assert len(files) == 1
    start = time.perf_counter()
    again = load_glyphs(DIGITS, samples_per_font=SAMPLES, progress=False)
    hit_time = time.perf_counter() - start
    assert hit_time < build_time / 2
    rebuilt = load_glyphs(DIGITS, samples_per_font=SAMPLES, progress=False, cache=False)
    for other in (again, rebuilt):
        assert torch.equal(other.train.images, splits.train.images)
        assert torch.equal(other.test.labels, splits.test.labels)
        assert other.train.paths == splits.train.paths and other.info == splits.info
    assert not list((cache / "glyphs").glob("*.tmp"))


def few_fonts() -> list[str]:
    return sorted(p for p in FONTS if "DejaVuSans" in p)[:4] or FONTS[:4]


def test_damaged_cache_file_is_rebuilt(tmp_path):
    first = load_glyphs(
        DIGITS, samples_per_font=SAMPLES, fonts=few_fonts(), cache_dir=tmp_path, progress=False
    )
    (file,) = tmp_path.glob("glyphs-digits-*.npz")
    file.write_bytes(b"not a zip")
    again = load_glyphs(
        DIGITS, samples_per_font=SAMPLES, fonts=few_fonts(), cache_dir=tmp_path, progress=False
    )
    assert torch.equal(again.train.images, first.train.images)


def test_seed_changes_the_jitter():
    dejavu = few_fonts()
    a = load_glyphs(DIGITS, samples_per_font=SAMPLES, fonts=dejavu, cache=False, progress=False)
    b = load_glyphs(DIGITS, samples_per_font=SAMPLES, fonts=dejavu, cache=False, progress=False, seed=1)
    assert not torch.equal(
        torch.cat([a.train.images, a.test.images]), torch.cat([b.train.images, b.test.images])
    )


def test_user_mistakes():
    with pytest.raises(CnnzooError, match="fonts-dejavu-core"):
        load_glyphs(DIGITS, fonts=FONTS[:1], cache=False, progress=False)
    no_greek = [p for p in FONTS if not usable_fonts("Ω", [p])][:3]
    with pytest.raises(CnnzooError, match="need 2 or more"):
        load_glyphs("glyphs-greek", fonts=no_greek, cache=False, progress=False)
    with pytest.raises(CnnzooError, match="need 2 or more"):  # the same font twice is one font
        load_glyphs(DIGITS, fonts=[FONTS[0], FONTS[0]], cache=False, progress=False)
    with pytest.raises(CnnzooError, match="known"):
        load_glyphs("glyphs-klingon")
    with pytest.raises(CnnzooError):
        load_glyphs(DIGITS, fonts=["/no/such/font.ttf", "/no/other.ttf"], cache=False)
