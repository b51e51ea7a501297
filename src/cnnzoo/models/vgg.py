"""VGG: configurations A, B, D, E (VGG-11/13/16/19), with and without batch normalisation.

K. Simonyan, A. Zisserman, "Very deep convolutional networks for large-scale image recognition",
ICLR 2015 (arXiv:1409.1556). Module names and shapes match torchvision's `vgg*` so its weights load
with strict=True; the `_bn` variants (a BatchNorm after every convolution) are not in the paper.
"""

import torch
from torch import Tensor, nn

from ._base import ZooModel, pool_stages
from ._registry import register_model

__all__ = [
    "CONFIGS",
    "VGG",
    "block_indices",
    "make_layers",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
]

PAPER = "Simonyan, Zisserman 2015, Very deep convolutional networks for large-scale image recognition"

# Table 1 of the paper: an int is a 3x3 convolution (padding 1) with that many output channels, then
# ReLU; "M" is a 2x2 max-pool with stride 2. Five pools halve the side five times: 224 -> 7.
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}  # fmt: skip

# Five 2x2/2 pools need a side of at least 2**5 = 32 (31 -> 15 -> 7 -> 3 -> 1 -> 0 fails).
MIN_SIZE = 32


def make_layers(cfg: list[int | str], batch_norm: bool, in_chans: int = 3) -> nn.Sequential:
    """The convolutional part of a configuration: conv[, BN], ReLU per int; max-pool per "M"."""
    layers: list[nn.Module] = []
    channels = in_chans
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(channels, v, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU())
        channels = v
    return nn.Sequential(*layers)


def block_indices(cfg: list[int | str], batch_norm: bool) -> list[list[int]]:
    """Per block (the convs between two pools), the `features` indices of its modules with parameters.

    Walks `cfg` exactly as `make_layers` lays it out: each conv takes 2 slots (3 with BN), each pool 1.
    """
    blocks: list[list[int]] = [[]]
    index = 0
    for v in cfg:
        if v == "M":
            blocks.append([])
            index += 1
            continue
        blocks[-1] += [index, index + 1] if batch_norm else [index]
        index += 3 if batch_norm else 2
    return [b for b in blocks if b]


class VGG(ZooModel):
    """`features` (from a `CONFIGS` entry) -> `avgpool` to 7x7 -> 25088 -> 4096 -> 4096 -> num_classes.

    Dropout follows each hidden fully connected layer, as in the paper (section 3.1). Initialised like
    torchvision: Kaiming-normal convolutions (fan-out, ReLU gain), N(0, 0.01) linear weights, zero
    biases, BatchNorm weight 1. (The paper drew N(0, 0.01) too, but started the deeper nets' first four
    convolutions and three fc layers from the trained net A.)
    """

    classifier_path = "classifier.6"
    first_conv = "features.0"

    def __init__(
        self,
        cfg: list[int | str],
        batch_norm: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.cfg, self.batch_norm = list(cfg), batch_norm
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 512, 4096
        self.features = make_layers(self.cfg, batch_norm, in_chans)  # (B, 512, 7, 7) at 224
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )  # fmt: skip
        self.set_feature_info(pool_stages(self.features, "features"))  # block1..block5, after each pool
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, 25088)
        for i, layer in enumerate(self.classifier):  # the hidden layers (B, 4096), then the classifier
            if i < 6 or not pre_logits:
                x = layer(x)
        return x

    def group_matcher(self) -> dict[str, list[str]]:
        """block1..block5 (the convs between pools, from the configuration), fc1, fc2, head."""
        blocks = block_indices(self.cfg, self.batch_norm)
        groups = {f"block{n}": [f"features.{i}" for i in idx] for n, idx in enumerate(blocks, 1)}
        return groups | {"fc1": ["classifier.0"], "fc2": ["classifier.3"], "head": ["classifier.6"]}


def _vgg(cfg: str, batch_norm: bool, **kw) -> VGG:
    return VGG(CONFIGS[cfg], batch_norm=batch_norm, **kw)


@register_model(family="vgg", input_size=224, min_size=MIN_SIZE, paper=PAPER)
def vgg11(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A): 132,863,336 parameters at 1000 classes."""
    return _vgg("A", False, num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(family="vgg", input_size=224, min_size=MIN_SIZE, paper=PAPER)
def vgg13(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B): 133,047,848 parameters at 1000 classes."""
    return _vgg("B", False, num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(family="vgg", input_size=224, min_size=MIN_SIZE, paper=PAPER)
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D): 138,357,544 parameters at 1000 classes."""
    return _vgg("D", False, num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(family="vgg", input_size=224, min_size=MIN_SIZE, paper=PAPER)
def vgg19(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E): 143,667,240 parameters at 1000 classes."""
    return _vgg("E", False, num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(family="vgg", input_size=224, min_size=MIN_SIZE, paper=PAPER)
def vgg11_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 with BatchNorm after every convolution: 132,868,840 parameters at 1000 classes."""
    return _vgg("A", True, num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(family="vgg", input_size=224, min_size=MIN_SIZE, paper=PAPER)
def vgg13_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 with BatchNorm after every convolution: 133,053,736 parameters at 1000 classes."""
    return _vgg("B", True, num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(family="vgg", input_size=224, min_size=MIN_SIZE, paper=PAPER)
def vgg16_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 with BatchNorm after every convolution: 138,365,992 parameters at 1000 classes."""
    return _vgg("D", True, num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(family="vgg", input_size=224, min_size=MIN_SIZE, paper=PAPER)
def vgg19_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 with BatchNorm after every convolution: 143,678,248 parameters at 1000 classes."""
    return _vgg("E", True, num_classes=num_classes, in_chans=in_chans, dropout=dropout)
