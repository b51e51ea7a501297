"""InMemoryLoader: every sample once per epoch, seeded order, rank shards, normalisation, one-off resizing."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.data.augment import AugmentConfig
from cnnzoo.data.base import ArrayDataset, DatasetInfo
from cnnzoo.data.loader import LUMA, InMemoryLoader
from cnnzoo.errors import CnnzooError


def dataset(n: int = 1000, channels: int = 1, size: int = 8, seed: int = 0) -> ArrayDataset:
    """Random images whose label is their index, so a batch's labels say exactly which samples it holds."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    info = DatasetInfo(
        "synthetic", tuple(str(i) for i in range(10)), size, channels, (0.5,) * channels, (0.25,) * channels
    )
    return ArrayDataset(images, torch.arange(n), info)


def epoch_ids(loader: InMemoryLoader) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


# --- order ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_once_per_epoch(drop_last):
    loader = InMemoryLoader(dataset(1000), 64, drop_last=drop_last)
    batches = list(loader)
    ids = torch.cat([y for _, y in batches])
    assert len(batches) == len(loader) == (15 if drop_last else 16)
    assert len(ids.unique()) == len(ids) == (960 if drop_last else 1000)
    assert all(len(y) == 64 for _, y in batches[:15])
    if not drop_last:
        assert torch.equal(ids.sort().values, torch.arange(1000))
    assert loader.num_samples == len(ids)


def test_shuffle_changes_across_epochs_and_seed_fixes_it():
    a = InMemoryLoader(dataset(), 100, seed=3)
    first, second = epoch_ids(a), epoch_ids(a)
    assert not torch.equal(first, second)
    b = InMemoryLoader(dataset(), 100, seed=3)
    assert torch.equal(epoch_ids(b), first)
    c = InMemoryLoader(dataset(), 100, seed=3)
    c.set_epoch(1)  # resume: epoch 1 alone reproduces the second epoch
    assert torch.equal(epoch_ids(c), second)
    assert not torch.equal(epoch_ids(InMemoryLoader(dataset(), 100, seed=4)), first)


def test_no_shuffle_keeps_order():
    loader = InMemoryLoader(dataset(50), 16, shuffle=False)
    assert torch.equal(epoch_ids(loader), torch.arange(50))
    assert [len(y) for _, y in loader] == [16, 16, 16, 2]


@pytest.mark.parametrize(("n", "world"), [(1000, 2), (1000, 3), (65, 2)])
def test_rank_shards_make_up_the_global_batches(n, world):
    per_rank = 16
    ranks = [InMemoryLoader(dataset(n), per_rank, seed=7, rank=r, world_size=world) for r in range(world)]
    single = InMemoryLoader(dataset(n), per_rank * world, seed=7)
    assert len({len(r) for r in ranks}) == 1  # every rank takes the same number of steps
    shards = [list(r) for r in ranks]
    whole = list(single)
    for step in range(len(ranks[0])):
        together = torch.cat([shards[r][step][1] for r in range(world)])
        assert torch.equal(together, whole[step][1])
        sizes = [len(shards[r][step][1]) for r in range(world)]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) > 0
    if n == 65:  # one sample left over for two ranks: dropped rather than leave a rank empty
        assert len(ranks[0]) == 2 and len(single) == 3


def test_rank_checks():
    with pytest.raises(CnnzooError):
        InMemoryLoader(dataset(10), 4, rank=2, world_size=2)
    with pytest.raises(CnnzooError):
        InMemoryLoader(dataset(10), 0)


# --- values ---------------------------------------------------------------------------------------------


def test_normalisation_uses_given_or_dataset_stats():
    data = dataset(40, channels=3)
    x, y = next(iter(InMemoryLoader(data, 40, shuffle=False)))
    expected = (data.images.float() / 255 - 0.5) / 0.25
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x, expected, atol=1e-5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x, _ = next(iter(InMemoryLoader(data, 40, shuffle=False, mean=mean, std=std)))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(x, (data.images.float() / 255 - m) / s, atol=1e-5)
    with pytest.raises(CnnzooError):
        InMemoryLoader(data, 8, mean=(0.5, 0.5), std=(0.2, 0.2))


def test_resize_happens_once():
    data = dataset(20, size=8)
    loader = InMemoryLoader(data, 5, image_size=12)
    assert loader.images.shape == (20, 1, 12, 12) and loader.images.dtype == torch.uint8
    assert loader.image_size == 12
    assert all(x.shape[-2:] == (12, 12) for x, _ in loader)
    padded = InMemoryLoader(data, 20, image_size=12, resize_mode="pad", shuffle=False)
    assert torch.equal(padded.images[:, :, 2:10, 2:10], data.images)
    assert padded.images[:, :, :2].sum() == 0
    with pytest.raises(CnnzooError):
        InMemoryLoader(data, 5, image_size=6, resize_mode="pad")


def test_gray_to_rgb_repeats_the_channel():
    data = dataset(10, channels=1)
    loader = InMemoryLoader(data, 10, channels=3, shuffle=False)
    assert loader.images.shape[1] == 1  # stored once, repeated per batch
    x, _ = next(iter(loader))
    assert x.shape == (10, 3, 8, 8)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert loader.mean == (0.5,) * 3


def test_rgb_to_gray_by_luminance():
    images = torch.zeros(4, 3, 6, 6, dtype=torch.uint8)
    images[:, 0, :3], images[:, 1, :3], images[:, 2, :3] = 200, 100, 50  # top half orange, bottom black
    info = DatasetInfo("rgb", ("a",), 6, 3, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    loader = InMemoryLoader(ArrayDataset(images, torch.zeros(4, dtype=torch.long), info), 4, channels=1)
    gray = round(200 * LUMA[0] + 100 * LUMA[1] + 50 * LUMA[2])
    assert loader.images.shape == (4, 1, 6, 6)
    assert (loader.images[:, :, :3] == gray).all() and (loader.images[:, :, 3:] == 0).all()
    # statistics recomputed for the gray images: half the pixels gray, half black
    assert len(loader.mean) == 1 and abs(loader.mean[0] - gray / 255 / 2) < 1e-3
    assert abs(loader.std[0] - gray / 255 / 2) < 1e-3


def test_channels_last():
    x, _ = next(iter(InMemoryLoader(dataset(8, channels=3), 8, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_augmentation_is_seeded_and_keeps_labels():
    data = dataset(200)
    cfg = AugmentConfig(crop_padding=2, cutout=3)
    a, b = (InMemoryLoader(data, 50, seed=1, augment=cfg) for _ in range(2))
    plain = InMemoryLoader(data, 50, seed=1)
    for (xa, ya), (xb, yb), (xp, yp) in zip(a, b, plain, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ya, yp)
        assert not torch.equal(xa, xp)
    assert InMemoryLoader(data, 50, augment=AugmentConfig()).augment is None


def test_mnist_epoch_if_available():
    sources = pytest.importorskip("cnnzoo.data.sources")
    try:
        splits = sources.load_dataset("mnist", progress=False)
    except Exception as e:  # the vendored copy missing is another test's failure
        pytest.skip(f"mnist unavailable: {e}")
    loader = InMemoryLoader(splits.test, 128, augment=AugmentConfig(crop_padding=2), image_size=32)
    counts = torch.zeros(10, dtype=torch.long)
    for x, y in loader:
        assert x.shape[1:] == (1, 32, 32)
        counts += torch.bincount(y, minlength=10)
    assert torch.equal(counts, torch.bincount(splits.test.labels, minlength=10))
    assert len(loader) == 79
