"""What a run needs before its first step: the data, its image size, the loaders, its folder and metadata.

1. `load_splits`: the dataset, loaded once into memory (folders decoded straight to a size the model takes),
   with `--train-subset` applied
2. `resolve_image_size`: --image-size, else the dataset's own size, else the model's native input when it
   has a maximum; `check_image_size` refuses an impossible --image-size before any work, `check_memory` a
   dataset that would not fit on the device at that size
3. `make_loaders`: the shuffled, augmented, sharded train loader and the in-order test loader
4. `checkpoint_meta`: what every checkpoint records to rebuild the model and its preprocessing;
   `default_run_dir`: the folder a run writes when no --out is given
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from ..data import load_dataset
from ..data.augment import AugmentConfig
from ..data.base import ArrayDataset, DatasetInfo, Splits, take_per_class
from ..data.folder import MAX_DEFAULT_SIZE
from ..data.loader import InMemoryLoader
from ..data.stream import StreamingLoader
from ..errors import CnnzooError
from ..models import model_info
from ..models._builder import check_input_size
from ..runtime import EVAL_BATCH, available_memory, format_bytes
from ..summary.probe import probe_input
from .config import TrainConfig
from .distributed import DistEnv

__all__ = [
    "RunContext",
    "make_loaders",
    "run_loaders",
    "load_splits",
    "dataset_options",
    "apply_train_subset",
    "target_splits",
    "check_image_size",
    "resolve_image_size",
    "check_memory",
    "checkpoint_meta",
    "default_run_dir",
]


@dataclass
class RunContext:
    """Where and how a run writes: its folder, its checkpoint metadata, whether this rank prints."""

    run_dir: Path
    meta: dict  # written into every checkpoint's JSON
    quiet: bool = False
    dist_env: DistEnv = field(default_factory=DistEnv)
    save: bool = True  # False: keep nothing on disk (studies that run hundreds of short fits)
    hparams: dict = field(default_factory=dict)  # recorded beside the config's (fine-tuning: its strategy)
    # TensorBoard events here even when nothing else is saved (a study's fits); None: RUN/tensorboard/
    # where the run saves, no events where it does not
    tensorboard_dir: Path | None = None
    resume_command: str = "cnnzoo train --resume"  # what continues this run (Ctrl-C's hint names it)

    @property
    def writes(self) -> bool:
        return self.save and self.dist_env.is_main

    @property
    def events_dir(self) -> Path | None:
        """Where this rank writes TensorBoard events (when the config and the installed package allow)."""
        if not self.dist_env.is_main:
            return None
        if self.tensorboard_dir is not None:
            return Path(self.tensorboard_dir)
        return Path(self.run_dir) / "tensorboard" if self.save else None


def make_loaders(
    splits: Splits,
    *,
    batch_size: int,
    image_size: int,
    channels: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    augment: str,
    device: torch.device,
    seed: int,
    channels_last: bool = False,
    dist_env: DistEnv | None = None,
):
    """Train loader (shuffled, augmented, sharded across ranks) and test loader (in order, whole set).

    `batch_size` is the global batch: under torchrun each of N ranks takes `batch_size / N` of every step's
    images, so N processes take the same steps on the same batches as one process would (and the recipe's
    learning rate stays right). A batch that N does not divide is rounded up to a multiple of N.
    """

    def loader_for(data, *args, **kwargs):  # in memory, or read from disk by worker processes
        return (InMemoryLoader if isinstance(data, ArrayDataset) else StreamingLoader)(data, *args, **kwargs)

    dist_env = dist_env or DistEnv()
    per_rank = -(-batch_size // dist_env.world_size)
    common = dict(image_size=image_size, channels=channels, mean=mean, std=std, device=device)
    train = loader_for(
        splits.train,
        per_rank,
        shuffle=True,
        seed=seed,
        augment=AugmentConfig.parse(augment),
        channels_last=channels_last,
        rank=dist_env.rank,
        world_size=dist_env.world_size,
        **common,
    )
    test = loader_for(splits.test, EVAL_BATCH, shuffle=False, channels_last=channels_last, **common)
    return train, test


def run_loaders(splits: Splits, cfg: TrainConfig, image_size: int, device, dist_env: DistEnv | None = None):
    """`make_loaders` for a run of `cfg` on `splits`, in the data's own channels and normalisation."""
    info = splits.info
    return make_loaders(
        splits,
        batch_size=cfg.batch_size,
        image_size=image_size,
        channels=info.channels,
        mean=info.mean,
        std=info.std,
        augment=cfg.augment,
        device=device,
        seed=cfg.seed,
        channels_last=cfg.channels_last,
        dist_env=dist_env,
    )


def load_splits(cfg: TrainConfig) -> Splits:
    """`cfg.data` with `cfg.train_subset` applied; a folder without --image-size is decoded straight to a
    size the model takes (its native input when it has a maximum)."""
    options = dataset_options(cfg)
    if cfg.data.startswith("folder:") and not cfg.image_size:
        native = _native_if_bounded(cfg, MAX_DEFAULT_SIZE)
        if native is not None:
            options["image_size"] = native
    return apply_train_subset(load_dataset(cfg.data, **options), cfg)


def dataset_options(cfg: TrainConfig) -> dict:
    """`load_dataset` keywords from a config: folders are decoded straight to `--image-size`."""
    options = {"data_dir": cfg.data_dir or None, "download": cfg.download}
    if cfg.data.startswith("folder:"):
        options["strict"] = cfg.strict
        if cfg.image_size:
            options["image_size"] = cfg.image_size
    return options


def apply_train_subset(splits: Splits, cfg: TrainConfig) -> Splits:
    """Keep `cfg.train_subset` training images drawn at random (seeded); the test split stays whole."""
    if not cfg.train_subset:
        return splits
    gen = torch.Generator().manual_seed(cfg.seed)
    keep = torch.randperm(len(splits.train), generator=gen)[: cfg.train_subset]
    return Splits(splits.train.subset(keep), splits.test)


def check_image_size(cfg: TrainConfig) -> None:
    """Refuse, before any work, an --image-size the model cannot take (below its minimum, above a maximum)."""
    if not cfg.image_size:
        return
    try:
        check_input_size(cfg.model, cfg.image_size)
    except CnnzooError as e:
        raise CnnzooError(f"--image-size {cfg.image_size}: {e}") from None
    problem = probe_input(cfg.model, cfg.image_size, **cfg.model_kwargs).problem
    if problem:
        native = model_info(cfg.model).input_size
        raise CnnzooError(
            f"--image-size {cfg.image_size}: {cfg.model} cannot take it ({problem}); its native input is {native}"
        )


def _native_if_bounded(cfg: TrainConfig, size: int) -> int | None:
    """The model's native input size when it cannot take `size` (a model with a maximum), else None."""
    native = model_info(cfg.model).input_size
    if size == native or not probe_input(cfg.model, size, **cfg.model_kwargs).problem:
        return None
    return native


def resolve_image_size(cfg: TrainConfig, info: DatasetInfo, quiet: bool = False) -> int:
    """--image-size, else the dataset's own size (at least the model's minimum), else, when the model has
    a maximum below it (LeNet-5 pads to at most 32), the model's native input."""
    if cfg.image_size:
        return cfg.image_size
    size = max(info.image_size, model_info(cfg.model).min_size)
    native = _native_if_bounded(cfg, size)
    if native is None:
        return size
    if not quiet:
        print(
            f"{cfg.model} cannot take {info.name}'s {size}x{size} images: resizing them to its native {native}x{native}"
        )
    return native


def check_memory(cfg: TrainConfig, splits: Splits, image_size: int, device: torch.device) -> None:
    """Refuse a dataset that, resized to `image_size`, would not fit in memory on the training device."""
    pixels = splits.info.channels * image_size * image_size
    in_memory = sum(len(s) for s in (splits.train, splits.test) if isinstance(s, ArrayDataset))
    need = in_memory * pixels + cfg.batch_size * pixels * 4 * 2  # uint8 images, a float batch and its copy
    available = available_memory(device)
    if available is not None and need > available:
        raise CnnzooError(
            f"{len(splits.train) + len(splits.test):,} images of {splits.info.name} at {image_size}x{image_size} "
            f"need {format_bytes(need)} of memory on {device}, {format_bytes(available)} is available: choose a "
            "smaller --image-size"
        )


def checkpoint_meta(model_name, model_kwargs, info: DatasetInfo, image_size, in_chans, mean, std) -> dict:
    return {
        "format": "cnnzoo-checkpoint/1",
        "model": model_name,
        "model_kwargs": dict(model_kwargs),
        "classes": list(info.classes),
        "in_chans": in_chans,
        "image_size": image_size,
        "mean": list(mean),
        "std": list(std),
        "dataset": info.name,
    }


def default_run_dir(model: str, data: str, *, prefix: str = "") -> Path:
    """runs/{prefix}MODEL-DATA-YYYYmmdd-HHMMSS (':' and '/' in DATA become '_'), with -2, -3... appended
    when a run started in the same second already has that folder."""
    base = f"{prefix}{model}-{data.replace(':', '_').replace('/', '_')}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = Path("runs") / base, 1
    while run_dir.exists():  # two runs started in the same second get their own folders
        n += 1
        run_dir = Path("runs") / f"{base}-{n}"
    return run_dir


def target_splits(splits: Splits, cfg: TrainConfig, samples_per_class: int = 0) -> Splits:
    """The training images a run sees: `cfg.train_subset` drawn at random, then at most `samples_per_class`
    per class (both seeded by `cfg.seed`); the test split stays whole."""
    splits = apply_train_subset(splits, cfg)
    if samples_per_class:
        splits = Splits(take_per_class(splits.train, samples_per_class, cfg.seed), splits.test)
    return splits
