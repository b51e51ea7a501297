"""Batched augmentation: per-image randomness, reproducibility, exact geometry, the config string."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.data.augment import (
    AugmentConfig,
    BatchAugment,
    affine_grid,
    augment_batch,
    cutout,
    random_affine,
    random_crop,
    random_flip,
    random_resized_crop,
)
from cnnzoo.errors import CnnzooError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(64, 3, 12, 10, generator=gen(123))  # not square, to catch swapped axes


# --- random crop ----------------------------------------------------------------------------------------


def test_crop_is_a_shifted_window_per_image(batch):
    p = 2
    out = random_crop(batch, p, gen())
    assert out.shape == batch.shape
    padded = F.pad(batch, (p, p, p, p))
    h, w = batch.shape[-2:]
    shifts = []
    for i in range(len(batch)):
        found = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert found, f"image {i} is not a window of its padded self"
        shifts.append(found[0])
    assert len(set(shifts)) > 5  # each image has its own shift


def test_crop_reflect_and_zero_padding():
    x = torch.rand(4, 1, 6, 6, generator=gen())
    assert random_crop(x, 0, gen()) is x
    assert random_crop(x, 1, gen(), mode="reflect").shape == x.shape


# --- flip -------------------------------------------------------------------------------------------------


def test_flip_mirrors_exactly_the_masked_images(batch):
    g = gen(5)
    mask = torch.rand(len(batch), generator=gen(5)) < 0.5  # the draw random_flip makes
    out = random_flip(batch, g)
    assert torch.equal(out[mask], batch[mask].flip(-1))
    assert torch.equal(out[~mask], batch[~mask])
    assert 0 < mask.sum() < len(batch)


# --- affine and resized crop --------------------------------------------------------------------------------


def test_affine_grid_matches_torch():
    theta = torch.randn(7, 2, 3, generator=gen())
    ours = affine_grid(theta, 9, 13)
    ref = F.affine_grid(theta, [7, 1, 9, 13], align_corners=False)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_affine_with_zero_ranges_is_identity(batch):
    out = random_affine(batch, gen(), degrees=0, scale=(1, 1), shear=0, translate=0)
    assert torch.allclose(out, batch, atol=1e-5)


def test_affine_translation_moves_by_whole_pixels_per_image():
    x = torch.zeros(32, 1, 20, 20)
    x[:, :, 10, 10] = 1.0
    out = random_affine(x, gen(), degrees=0, scale=(1, 1), shear=0, translate=0.25)
    assert out.shape == x.shape
    centres = [tuple((o[0] == o[0].max()).nonzero()[0].tolist()) for o in out]
    assert len(set(centres)) > 10
    assert all(abs(r - 10) <= 5 and abs(c - 10) <= 5 for r, c in centres)


def test_affine_rotates_each_image_differently(batch):
    out = random_affine(batch, gen(), degrees=30, scale=(1, 1), shear=0, translate=0)
    diffs = (out - batch).abs().flatten(1).mean(1)
    assert diffs.std() > 0 and (diffs > 1e-3).float().mean() > 0.9


def test_resized_crop_full_box_is_identity_and_resizes(batch):
    same = random_resized_crop(batch, gen(), scale=(1, 1), ratio=(10 / 12, 10 / 12))
    assert torch.allclose(same, batch, atol=1e-5)
    out = random_resized_crop(batch, gen(), out_size=(8, 16))
    assert out.shape == (64, 3, 8, 16)


# --- cutout ---------------------------------------------------------------------------------------------


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(100, 2, 16, 16)
    out = cutout(x, gen(), size=4)
    holes = out[:, 0] == 0
    assert torch.equal(holes, out[:, 1] == 0)  # the same square in every channel
    areas = holes.flatten(1).sum(1)
    assert (areas >= 1).all() and (areas <= 16).all()
    assert (areas == 16).float().mean() > 0.5  # most centres are far enough from the border
    corners = {tuple(h.nonzero()[0].tolist()) for h in holes}
    assert len(corners) > 20


# --- reproducibility and the whole pipeline -------------------------------------------------------------------


ALL = AugmentConfig(crop_padding=2, flip=True, affine=True, resized_crop=True, cutout=4)


def test_same_seed_same_batch_other_seed_other_batch(batch):
    a, b, c = (augment_batch(batch, ALL, gen(s)) for s in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == batch.shape


def test_disabled_config_is_identity(batch):
    assert augment_batch(batch, AugmentConfig(), gen()) is batch
    assert not AugmentConfig().enabled and ALL.enabled
    assert torch.equal(BatchAugment(ALL)(batch, gen(3)), augment_batch(batch, ALL, gen(3)))


def test_generator_is_optional(batch):
    assert augment_batch(batch, ALL).shape == batch.shape


# --- the config string ----------------------------------------------------------------------------------


def test_parse_spec():
    cfg = AugmentConfig.parse("crop=2,flip,affine,cutout=8")
    assert cfg == AugmentConfig(crop_padding=2, flip=True, affine=True, cutout=8)
    assert AugmentConfig.parse("none") == AugmentConfig() == AugmentConfig.parse("")
    assert AugmentConfig.parse("degrees=15, scale=0.8:1.2") == AugmentConfig(
        affine=True, degrees=15, scale=(0.8, 1.2)
    )
    assert AugmentConfig.parse("rrc,flip=0").resized_crop


@pytest.mark.parametrize(
    "cfg", [AugmentConfig(), ALL, AugmentConfig(affine=True, degrees=5, scale=(0.8, 1.25))]
)
def test_spec_round_trips(cfg):
    assert AugmentConfig.parse(cfg.spec()) == cfg


@pytest.mark.parametrize(
    "bad", ["crop=2,mixup", "crop=two", "flip=maybe", "scale=2", "cutout=-1", "scale=1.2:0.8"]
)
def test_parse_rejects_mistakes(bad):
    with pytest.raises(CnnzooError):
        AugmentConfig.parse(bad)
