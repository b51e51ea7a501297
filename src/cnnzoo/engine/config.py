"""The training configuration: one frozen dataclass, saved with every run, and the defaults per model and data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ..errors import CnnzooError

__all__ = ["TrainConfig", "default_config"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    model: str
    data: str = "mnist"
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # SGD + Nesterov momentum: the classic recipe for these networks
    lr: float = 0.05  # peak learning rate (the one-cycle maximum)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # warm up then anneal: reaches a good optimum in few epochs
    warmup_epochs: float = 1.0
    step_size: int = 30  # epochs between x0.1 decays, for schedule=step
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 disables
    precision: str = "auto"  # bf16 autocast where the CPU/GPU computes it natively, else fp32
    channels_last: bool = False
    compile: bool = False  # torch.compile: pays off on GPUs and long runs, costs start-up time
    device: str = "auto"
    seed: int = 0
    augment: str = "none"  # e.g. "crop=2,affine" (see cnnzoo.data.augment.AugmentConfig.parse)
    image_size: int = (
        0  # resize the data once to this side; 0 = the dataset's own, at least the model's minimum
    )
    tta: bool = False  # evaluate with a horizontally flipped copy too
    eval_every: int = 1  # evaluate the test split every N epochs (and always after the last)
    data_dir: str = ""
    strict: bool = False  # folders: a corrupt image is an error instead of a warning and a skip
    download: bool = False  # fetch a downloadable dataset (kmnist, cifar) into the cache if missing
    train_subset: int = 0  # use only the first N shuffled training images (quick runs and tests); 0 = all
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        checks = [
            (self.epochs > 0, f"epochs must be positive, got {self.epochs}"),
            (self.eval_every > 0, f"eval_every must be positive, got {self.eval_every}"),
            (self.batch_size > 0, f"batch size must be positive, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (0 <= self.ema < 1, f"ema decay must be in [0, 1), got {self.ema}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.image_size >= 0, f"image size must be positive, got {self.image_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CnnzooError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Recipes measured to reach their targets (README's table); anything not listed gets the generic one.
_RECIPES: dict[tuple[str, str], dict] = {
    # 8 one-cycle epochs of batch 256: 99.30-99.34% over seeds (bench/bench_train.py); 6 epochs gave 99.17-99.34%
    ("lenet5", "mnist"): dict(epochs=8, batch_size=256, lr=0.2, weight_decay=5e-4, augment="none"),
}
# Per model, on any data. LeNet-5 (1998)'s logits are minus squared distances to fixed prototypes (up to
# hundreds): SGD at the lecture net's rates stalls or diverges; AdamW at 3e-3 without decay trains it
# (94.6% after 2 epochs on 10,000 MNIST images).
_MODEL_DEFAULTS: dict[str, dict] = {
    "lenet5_1998": dict(optimizer="adamw", lr=3e-3, weight_decay=0.0),
}
_FAMILY_DEFAULTS: dict[str, dict] = {
    "lenet": dict(epochs=10, batch_size=128, lr=0.08),
    "resnet": dict(epochs=30, batch_size=128, lr=0.1, weight_decay=5e-4),
    "vgg": dict(epochs=30, batch_size=128, lr=0.02, weight_decay=5e-4),
    "alexnet": dict(epochs=30, batch_size=128, lr=0.01, weight_decay=5e-4),
    "inception": dict(epochs=30, batch_size=128, lr=0.05, weight_decay=1e-4),
}


def default_augment(data: str) -> str:
    """Augmentation that preserves the labels of `data`: no flips for digits and characters."""
    if data.startswith("folder:"):
        return "rrc,flip"  # photos of any size and framing
    if data in ("cifar10", "cifar100"):
        return "crop=4,flip"
    if data == "fashion-mnist":
        return "crop=2,flip"  # clothing is mirror-symmetric
    return "none"  # mnist, kmnist, digits, glyphs-*: a mirrored character is another character


def default_config(model: str, data: str, **overrides) -> TrainConfig:
    """The recipe for (model, data): family defaults, the dataset's augmentation, a measured recipe where
    there is one, then `overrides` (only the ones not None)."""
    from ..models import model_info

    family = model_info(model).family
    base = {
        **_FAMILY_DEFAULTS.get(family, {}),
        "augment": default_augment(data),
        **_MODEL_DEFAULTS.get(model, {}),
        **_RECIPES.get((model, data), {}),
    }
    cfg = TrainConfig(model=model, data=data, **base)
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
