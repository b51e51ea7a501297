"""Batches straight from a uint8 tensor on the training device: the airbench way to feed a small CNN.

`InMemoryLoader` moves the images to the device once (resized and channel-adapted once, if asked), and each
epoch cuts batches out of a seeded `torch.randperm`. Per batch it only gathers uint8 rows, converts them to
float, augments the whole batch with `cnnzoo.data.augment` and normalises: no per-sample `__getitem__`, no
worker processes, no PIL. On 2 CPU cores an MNIST epoch of pure iteration takes a fraction of a second.

Order of the data, and resuming: epoch e's order depends only on (seed, e), so `set_epoch(e)` followed by
iteration reproduces epoch e exactly; there is no other loader state to save. Iterating without calling
`set_epoch` moves on to the next epoch by itself.

Distributed training: with `world_size` N, `batch_size` is per rank and one step consumes a global batch of
`batch_size * N` samples. All ranks draw the same permutation (same seed and epoch) and rank r takes the
r-th contiguous slice of each global batch, so N ranks together see exactly the batches one process with
`batch_size * N` would see. A last, partial global batch is split as evenly as possible (sizes differ by at
most one); if it has fewer samples than ranks it is dropped so that no rank gets an empty batch and every
rank takes the same number of steps. Augmentation draws its random numbers per rank, from (seed, epoch,
rank), so augmented pixels are reproducible but not identical to the single-process run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnzoo.data.augment import AugmentConfig, augment_batch
from cnnzoo.data.base import ArrayDataset
from cnnzoo.data.normalize import Normalize
from cnnzoo.data.stats import channel_stats
from cnnzoo.errors import CnnzooError

__all__ = ["BatchLoader", "InMemoryLoader", "LUMA", "prepare_images"]

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, what PIL's convert("L") uses
_CHUNK = 4096  # images resized per step when preparing, to bound the float copy's memory


def _mix(*values: int) -> int:
    """Fold integers into one 63-bit seed (splitmix64 steps), so (seed, epoch) pairs never collide simply."""
    z = 0x9E3779B97F4A7C15
    for v in values:
        z = (z ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
    return z & 0x7FFFFFFFFFFFFFFF


def prepare_images(images: Tensor, size: int | None, channels: int | None, resize_mode: str) -> Tensor:
    """Resize and convert 3 channels to 1 once, chunk by chunk, keeping uint8. 1 -> 3 stays a view per
    batch (see `InMemoryLoader`), so it costs no memory here."""
    n, c, h, w = images.shape
    to_gray = channels == 1 and c == 3
    if (size is None or (h, w) == (size, size)) and not to_gray:
        return images
    if size is not None and resize_mode == "pad" and (size < h or size < w):
        raise CnnzooError(f"cannot pad {h}x{w} images to {size}x{size}; use resize_mode='bilinear'")
    out = []
    luma = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
    for start in range(0, n, _CHUNK):
        x = images[start : start + _CHUNK].float()
        if to_gray:
            x = (x * luma).sum(1, keepdim=True)
        if size is not None and (h, w) != (size, size):
            if resize_mode == "pad":  # LeCun's 28 -> 32 for LeNet-5: the digit keeps its pixels
                top, left = (size - h) // 2, (size - w) // 2
                x = F.pad(x, (left, size - w - left, top, size - h - top))
            else:
                x = F.interpolate(
                    x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < h
                )
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


class BatchLoader:
    """What every cnnzoo loader shares: the order of an epoch, sharding across ranks, augmentation draws and
    normalisation. A subclass fills `self.labels` (anything with a length) and implements `__iter__`.

    batch_size   images per step on this rank (the engine divides the global batch by the world size)
    channels     what the model takes: 1 -> 3 repeats the gray channel (a view per batch); 3 -> 1 converts
                 by luminance (`LUMA`)
    mean, std    per-channel normalisation on the 0..1 scale; default the dataset's (repeated to 3
                 channels, or recomputed after a 3 -> 1 conversion). Pass a pretrained model's own values
                 when fine-tuning it.
    augment      applied to each batch before normalising (on the 0..255 scale), so borders fill with black.
                 Use it for the training loader only.
    rank, world_size   distributed sharding (see the module docstring)
    """

    labels: Sequence | Tensor  # set by the subclass; only its length is read here

    def __init__(
        self,
        stored_channels: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        resize_mode: str = "bilinear",
        channels: int | None = None,
        augment: AugmentConfig | None = None,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """The settings every loader checks and keeps; a subclass calls this first, with the channels its
        images are stored with."""
        if batch_size < 1:
            raise CnnzooError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise CnnzooError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
        if resize_mode not in ("bilinear", "pad"):
            raise CnnzooError(f"resize_mode must be 'bilinear' or 'pad', got {resize_mode!r}")
        stored = stored_channels
        if channels is not None and channels != stored and (stored, channels) not in ((1, 3), (3, 1)):
            raise CnnzooError(f"cannot adapt {stored}-channel images to {channels} channels (only 1<->3)")
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
        self.augment = augment if augment is not None and augment.enabled else None
        self.channels_last = channels_last
        self.resize_mode = resize_mode
        self.epoch = 0
        self.channels = channels or stored
        self._expand = self.channels == 3 and stored == 1  # 1 -> 3 is a view per batch
        self._converted = self.channels == 1 and stored == 3  # the dataset's RGB statistics do not apply
        cfg = self.augment
        self._exact_on_uint8 = cfg is not None and not (cfg.affine or cfg.resized_crop)

    def _set_normalisation(self, mean, std, dataset_stats: tuple | None) -> None:
        """Check and keep mean/std (the dataset's when not given) as one multiply-add (`Normalize`)."""
        if mean is None or std is None:
            if dataset_stats is None:
                raise CnnzooError("mean and std are needed: the dataset has no statistics of its own")
            mean = dataset_stats[0] if mean is None else mean
            std = dataset_stats[1] if std is None else std
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(mean) == 1 and self.channels == 3:
            mean, std = mean * 3, std * 3
        if len(mean) != self.channels or len(std) != self.channels:
            raise CnnzooError(f"mean and std need {self.channels} values, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise CnnzooError(f"std must be positive, got {std}")
        self.mean, self.std = mean, std
        self.normalize = Normalize(mean, std, self.device)

    # --- size ---------------------------------------------------------------------------------------------

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def _global_batches(self) -> int:
        n, g = len(self.labels), self.global_batch_size
        full, rest = divmod(n, g)
        return full + (0 if self.drop_last or rest < self.world_size else 1)

    def __len__(self) -> int:
        """Batches per epoch; the same on every rank."""
        return self._global_batches()

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return sum(len(b) for b in self._batch_indices(torch.arange(len(self.labels))))

    # --- order ------------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Use epoch `epoch`'s order (and augmentation draws) on the next iteration."""
        self.epoch = epoch

    def _next_epoch(self) -> int:
        """The epoch an iteration starting now reads; the one after moves on unless `set_epoch` says otherwise."""
        epoch = self.epoch
        self.epoch += 1
        return epoch

    def order(self, epoch: int | None = None) -> Tensor:
        """All sample indices of an epoch, in the order the global batches take them (on the CPU)."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return torch.arange(len(self.labels))
        gen = torch.Generator().manual_seed(_mix(self.seed, epoch))
        return torch.randperm(len(self.labels), generator=gen)

    def _batch_indices(self, order: Tensor) -> list[Tensor]:
        g = self.global_batch_size
        return [
            torch.tensor_split(order[i * g : (i + 1) * g], self.world_size)[self.rank]
            for i in range(self._global_batches())
        ]

    def _augment_generator(self, epoch: int) -> torch.Generator | None:
        """The random numbers of epoch `epoch`'s augmentation on this rank (None without augmentation)."""
        if self.augment is None:
            return None
        return torch.Generator(self.device).manual_seed(_mix(self.seed, epoch, self.rank, 1))

    # --- one batch --------------------------------------------------------------------------------------

    def finish_batch(self, x: Tensor, gen: torch.Generator | None = None) -> Tensor:
        """A prepared (B, C, H, W) uint8 batch on the device -> augmented (when configured), normalised float."""
        if self.augment is not None and self._exact_on_uint8:
            x = augment_batch(x, self.augment, gen)  # crop, flip, cutout only move or zero pixels
        x = x.float()
        if self.augment is not None and not self._exact_on_uint8:
            x = augment_batch(x, self.augment, gen)  # zero fill: the 0..255 scale does not matter
        x = self.normalize(x, expand=self._expand)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _describe(self) -> str:
        aug = self.augment.spec() if self.augment else "none"
        return f"batch {self.batch_size}x{self.world_size}, shuffle={self.shuffle}, augment={aug}"


class InMemoryLoader(BatchLoader):
    """Iterate `(x, y)` batches of an `ArrayDataset` held on `device`: x float32 (B, C, H, W) normalised,
    y int64 (B,). `image_size` resizes the stored images once to this side ("bilinear", or "pad" with black
    borders); `mean`/`std` default to the dataset's; `options` are `BatchLoader`'s (shuffle, seed, device,
    resize_mode, channels, augment, channels_last, rank, world_size...).
    """

    def __init__(
        self,
        data: ArrayDataset,
        batch_size: int,
        *,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **options,
    ):
        super().__init__(data.images.shape[1], batch_size, **options)
        self.info = data.info
        # once: to the device, resized, 3 -> 1 converted (all still uint8)
        self.images = prepare_images(data.images.to(self.device), image_size, self.channels, self.resize_mode)
        self.labels = data.labels.to(self.device, torch.int64)
        stats = None
        if mean is None or std is None:
            stats = channel_stats(self.images.cpu()) if self._converted else (self.info.mean, self.info.std)
        self._set_normalisation(mean, std, stats)

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self._next_epoch()
        order = self.order(epoch).to(self.device)
        gen = self._augment_generator(epoch)
        for index in self._batch_indices(order):
            yield self._batch(index, gen)

    def _batch(self, index: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        x = self.images.index_select(0, index)  # (B, C, H, W) uint8; index_select beats x[index] by ~20x
        return self.finish_batch(x, gen), self.labels.index_select(0, index)

    def __repr__(self) -> str:
        return (
            f"InMemoryLoader({self.info.name}, {len(self.labels)} images {tuple(self.images.shape[1:])} on "
            f"{self.device}, {self._describe()})"
        )
