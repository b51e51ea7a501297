"""What every dataset hands the training engine: images as one uint8 tensor, plus the facts about them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["DatasetInfo", "ArrayDataset", "Splits"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    image_size: int  # side of the (square) images as stored
    channels: int  # 1 grayscale, 3 RGB
    mean: tuple[float, ...]  # per-channel, on the 0..1 scale, from the training split
    std: tuple[float, ...]
    flip: bool = False  # whether horizontal flips are label-preserving (not for characters and digits)
    source: str = ""  # where it came from / attribution

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class ArrayDataset:
    """A split held in memory: `images` (N, C, H, W) uint8, `labels` (N,) int64."""

    images: Tensor
    labels: Tensor
    info: DatasetInfo
    paths: list[str] = field(default_factory=list)  # per-image source paths, for folder datasets

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> ArrayDataset:
        paths = [self.paths[i] for i in index.tolist()] if self.paths else []
        return ArrayDataset(self.images[index], self.labels[index], self.info, paths)


@dataclass
class Splits:
    train: ArrayDataset
    test: ArrayDataset

    @property
    def info(self) -> DatasetInfo:
        return self.train.info


def take_per_class(data: ArrayDataset, n: int, seed: int = 0) -> ArrayDataset:
    """At most `n` images of each class, drawn at random (seeded): the "little data" of transfer studies."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen)
    labels = data.labels[order]
    # rank of each image among those of its class, in the random order
    keep = torch.zeros(len(data), dtype=torch.bool)
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        keep[members[:n]] = True
    return data.subset(order[keep].sort().values)
