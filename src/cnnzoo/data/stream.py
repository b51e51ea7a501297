"""Batches of images read from disk while training: `InMemoryLoader` for folders too large for memory.

`StreamingLoader` takes a `StreamingFolder` (or any map-style dataset of `(uint8 (C, H, W) tensor, label)`
pairs). Worker processes of a torch DataLoader decode the images, already sized by `load_folder`, and stack
them into uint8 batches; the main process moves each batch to the device and does there what
`InMemoryLoader` does: resize (only when `image_size` differs from the stored size), 3 -> 1 by luminance,
augmentation, 1 -> 3 repeat, normalisation, channels-last.

Order, resuming, distributed sharding and normalising are `BatchLoader`'s, shared with `InMemoryLoader`
(see `cnnzoo.data.loader`): epoch e's permutation depends only on (seed, e), so `set_epoch(e)` reproduces it;
`batch_size` is per rank and rank r takes the r-th slice of each global batch; augmentation draws from
(seed, epoch, rank). Over the same images the two loaders yield the same batches, bit for bit.

An image that cannot be decoded when its batch is read raises a `CnnzooError` naming the file, with the
dataset's own message rather than the worker's traceback.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from cnnzoo.data.loader import BatchLoader, prepare_images
from cnnzoo.data.stats import channel_stats
from cnnzoo.errors import CnnzooError

__all__ = ["StreamingLoader"]

STATS_SAMPLE = 2000  # images decoded for mean/std when they are not given and the dataset has none


class StreamingLoader(BatchLoader):
    """Iterate `(x, y)` batches of images decoded from disk by `num_workers` processes: x float32
    (B, C, H, W) normalised, y int64 (B,), both on `device`.

    Arguments as `InMemoryLoader`'s (`options` are `BatchLoader`'s), plus:
    num_workers  decoding processes, kept alive across epochs (default min(4, CPU count); 0 decodes in
                 this process). Page-locked batches when `device` is a CUDA GPU.
    A dataset without `info` needs no `mean`/`std`: they are then measured on a spread sample of its images.
    """

    def __init__(
        self,
        data: Dataset,
        batch_size: int,
        *,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_workers: int | None = None,
        **options,
    ):
        self.data = data
        self.info = getattr(data, "info", None)
        if self.info is not None:
            stored, stored_size = self.info.channels, self.info.image_size
        else:
            first = data[0][0]
            stored, stored_size = first.shape[0], first.shape[-1]
        super().__init__(stored, batch_size, **options)
        if self.resize_mode == "pad" and image_size is not None and image_size < stored_size:
            raise CnnzooError(
                f"cannot pad {stored_size}x{stored_size} images to {image_size}x{image_size}; use resize_mode='bilinear'"
            )
        if num_workers is not None and num_workers < 0:
            raise CnnzooError(f"num_workers must be 0 or more, got {num_workers}")
        self._size = image_size if image_size is not None else stored_size
        # the inherited order and shard methods count samples with len(self.labels)
        self.labels = getattr(data, "labels", None)
        if self.labels is None:
            self.labels = range(len(data))
        self._set_normalisation(mean, std, self._dataset_stats() if mean is None or std is None else None)
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self._batches = _EpochBatches(len(self))
        self._loader = DataLoader(
            _BatchReader(data),
            batch_sampler=self._batches,
            collate_fn=_as_is,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.device.type == "cuda",
        )
        # A finalizer holds the DataLoader too, so that it is never garbage in a reference cycle with this
        # loader (a traceback, say): torch's queues would be closed before its shutdown told the workers to
        # stop, and collecting the cycle would wait 5 s per worker. This way it goes right after this loader.
        weakref.finalize(self, _release, self._loader).atexit = False

    def _dataset_stats(self) -> tuple:
        if self.info is not None and not self._converted:
            return self.info.mean, self.info.std
        # no statistics on hand for what the model sees: measure them on a spread sample
        step = max(1, len(self.data) // STATS_SAMPLE)
        sample = torch.stack([self.data[i][0] for i in range(0, len(self.data), step)[:STATS_SAMPLE]])
        return channel_stats(prepare_images(sample, self._size, self.channels, self.resize_mode))

    @property
    def image_size(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self._next_epoch()
        self._batches.batches = [index.tolist() for index in self._batch_indices(self.order(epoch))]
        gen = self._augment_generator(epoch)
        for batch in self._loader:  # the sampler is read here, when the DataLoader starts the epoch
            if isinstance(batch, _Failure):
                raise CnnzooError(batch.message)
            x, y = batch
            x = x.to(self.device, non_blocking=True)
            x = prepare_images(x, self._size, self.channels, self.resize_mode)  # no-op when already sized
            yield self.finish_batch(x, gen), y.to(self.device, torch.int64, non_blocking=True)

    def __repr__(self) -> str:
        name = self.info.name if self.info is not None else type(self.data).__name__
        return (
            f"StreamingLoader({name}, {len(self.labels)} images from disk by {self.num_workers} workers to "
            f"{self.device} as {self.channels}x{self._size}x{self._size}, {self._describe()})"
        )


class _EpochBatches(Sampler):
    """The batch sampler: this rank's index lists of the epoch being read, set by `StreamingLoader.__iter__`
    (in the main process; workers only ever see the indices)."""

    def __init__(self, length: int):
        self.length = length
        self.batches: list[list[int]] = []

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


class _Failure:
    """A batch that could not be read, sent back from a worker in place of the batch."""

    def __init__(self, message: str):
        self.message = message


class _BatchReader(Dataset):
    """Reads a whole batch in a worker: `(images (B, C, H, W) uint8, labels (B,))`, or a `_Failure`."""

    def __init__(self, data: Dataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor] | _Failure:
        try:
            items = [self.data[i] for i in indices]
        except CnnzooError as e:  # a user's broken file: one line, not a worker traceback
            return _Failure(str(e))
        images, labels = default_collate(items)  # in shared memory, so no copy on the way back
        return images, labels


def _as_is(batch):
    return batch


def _release(loader: DataLoader) -> None:
    """Called once the `StreamingLoader` is gone; dropping the last reference to `loader` then stops its
    workers (torch's own shutdown, in its iterator's `__del__`)."""
