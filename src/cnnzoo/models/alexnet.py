"""AlexNet: torchvision's single-tower layout and Krizhevsky et al. 2012 as published.

A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet classification with deep convolutional neural
networks", NeurIPS 2012.
A. Krizhevsky, "One weird trick for parallelizing convolutional neural networks", arXiv:1404.5997, 2014
(the one-tower variant with 64-192-384-256-256 channels that torchvision ships as `alexnet`).
"""

import torch
from torch import Tensor, nn

from ._base import ZooModel, pool_stages
from ._registry import register_model

__all__ = ["AlexNet", "AlexNet2012", "alexnet", "alexnet2012"]

PAPER = "Krizhevsky, Sutskever, Hinton 2012, ImageNet classification with deep convolutional neural networks"
PAPER_2014 = "Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks"

# Spatial sizes at 224: conv1 (k11 s4 p2) -> 55, pool -> 27, pool -> 13, pool -> 6.
# The smallest side that runs is 63: conv1 -> 15, pool -> 7, pool -> 3, pool -> 1 (62 gives 14, 6, 2, fail).
MIN_SIZE = 63


class _AlexNetBase(ZooModel):
    """What both AlexNets share: `features` -> `avgpool` (to 6x6) -> 7-module `classifier`, last at 6."""

    classifier_path = "classifier.6"
    first_conv = "features.0"  # subclasses set `features`, `avgpool` (to 6x6) and `classifier`

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)  # (B, 256, 6, 6) at 224

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, 9216)
        for i, layer in enumerate(self.classifier):  # the hidden layers (B, 4096), then the classifier
            if i < 6 or not pre_logits:
                x = layer(x)
        return x

    def group_matcher(self) -> dict[str, list[str]]:
        """conv1..conv5 (each conv layer), fc1, fc2, head: read off the layers, so no index is typed twice."""
        convs = [f"features.{i}" for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        fcs = [f"classifier.{i}" for i, m in enumerate(self.classifier) if isinstance(m, nn.Linear)]
        groups = {f"conv{n}": [name] for n, name in enumerate(convs, 1)}
        groups |= {f"fc{n}": [name] for n, name in enumerate(fcs[:-1], 1)}
        groups["head"] = [fcs[-1]]
        return groups


class AlexNet(_AlexNetBase):
    """torchvision's AlexNet, module for module (its weights load with strict=True): 61,100,840 parameters.

    Five convolutions (64, 192, 384, 256, 256 channels) in one tower, no response normalisation,
    dropout *before* the first two fully connected layers, default PyTorch initialisation.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5):
        super().__init__()
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 256, 4096
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),  # (B, 64, 27, 27)
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),  # (B, 192, 13, 13)
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),  # (B, 256, 6, 6)
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(),
            nn.Linear(4096, num_classes),
        )  # fmt: skip
        self.set_feature_info(pool_stages(self.features, "features"))


class AlexNet2012(_AlexNetBase):
    """AlexNet as Krizhevsky et al. 2012 published it: 60,965,224 parameters at 1000 classes.

    The paper trained on two GPUs, each holding half of every layer's kernels. Conv2, conv4 and conv5
    read only the maps on their own GPU; conv3 and the fully connected layers read both halves. Here
    one device plays both GPUs: `groups=2` in conv2, conv4 and conv5 keeps exactly that connectivity
    (each half of the kernels sees only its half of the input maps), conv3 and the fc layers are full.

    conv1 96 11x11/4 -> ReLU -> LRN -> max-pool 3/2   (B, 96, 27, 27)  [55x55 before the pool]
    conv2 256 5x5 (2 groups) -> ReLU -> LRN -> pool    (B, 256, 13, 13)
    conv3 384 3x3 -> conv4 384 3x3 (2 groups) -> conv5 256 3x3 (2 groups) -> pool   (B, 256, 6, 6)
    fc 4096 -> fc 4096 -> num_classes, dropout 0.5 on the outputs of the two hidden fc layers.

    Parameters (weights + biases): conv1 34,944; conv2 307,456; conv3 885,120; conv4 663,936;
    conv5 442,624; fc6 37,752,832; fc7 16,781,312; fc8 4,097,000.

    Deviations, all needed to run in PyTorch: the paper's 224x224 input does not tile an 11x11/4
    convolution into 55x55 (Caffe's reproduction crops 227 and does not pad), so conv1 pads by 2:
    (224 + 4 - 11) // 4 + 1 = 55;
    an `AdaptiveAvgPool2d(6)` (the identity at 224) lets other sizes reach the 9216-wide fc6.
    Initialisation is the paper's: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden
    fc layers (to give the ReLUs positive inputs early), 0 elsewhere.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5):
        super().__init__()
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 256, 4096

        def lrn() -> nn.LocalResponseNorm:  # section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75
            return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)

        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 96, 11, stride=4, padding=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )  # fmt: skip
        self.set_feature_info(pool_stages(self.features, "features"))
        self._init_as_paper()

    def _init_as_paper(self) -> None:
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        fcs = [m for m in self.classifier if isinstance(m, nn.Linear)]
        for n, conv in enumerate(convs, 1):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.constant_(conv.bias, 1.0 if n in (2, 4, 5) else 0.0)
        for fc in fcs:
            nn.init.normal_(fc.weight, 0.0, 0.01)
            nn.init.constant_(fc.bias, 0.0 if fc is fcs[-1] else 1.0)


@register_model(family="alexnet", input_size=224, min_size=MIN_SIZE, paper=PAPER_2014)
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNet:
    """torchvision's AlexNet (one tower, 64-192-384-256-256): 61,100,840 parameters at 1000 classes."""
    return AlexNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout)


@register_model(family="alexnet", input_size=224, min_size=MIN_SIZE, paper=PAPER)
def alexnet2012(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNet2012:
    """AlexNet as published in 2012 (LRN, grouped convolutions): 60,965,224 parameters at 1000 classes."""
    return AlexNet2012(num_classes=num_classes, in_chans=in_chans, dropout=dropout)
