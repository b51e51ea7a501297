"""Small helpers every dataset loader shares: exact per-channel statistics and a seeded stratified split."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["channel_stats", "stratified_split"]

_CHUNK = 1 << 20


def channel_stats(images: Tensor, decimals: int = 4) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) on the 0..1 scale.

    Counted with a 256-bin histogram per channel, so the result is exact, needs no float copy of the
    data, and takes a fraction of a second for CIFAR-10. The std is the population std (divide by N).
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    if images.numel() == 0:
        raise ValueError("no pixels to compute statistics from")
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        flat = images[:, c].numpy().reshape(-1)
        # in chunks: bincount widens its input to int64, which for the whole of CIFAR-10 is 400 MB
        counts = sum(np.bincount(flat[i : i + _CHUNK], minlength=256) for i in range(0, len(flat), _CHUNK))
        counts = np.asarray(counts, dtype=np.float64)
        n = counts.sum()
        mean = float(counts @ values / n)
        var = float(counts @ (values - mean) ** 2 / n)
        means.append(round(mean, decimals))
        stds.append(round(var**0.5, decimals))
    return tuple(means), tuple(stds)


def stratified_split(labels: Tensor, test_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Split indices into (train, test) so that each class keeps about `test_fraction` of its items in test.

    Deterministic for a given `labels` order and `seed`. A class with one item stays in train; a class with
    two or more puts at least one in test. Both index tensors come back sorted.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = 0 if len(members) < 2 else max(1, round(len(members) * test_fraction))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values
