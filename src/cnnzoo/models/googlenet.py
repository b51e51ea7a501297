"""GoogLeNet (Inception v1), with its two auxiliary classifiers.

C. Szegedy, W. Liu, Y. Jia, P. Sermanet, S. Reed, D. Anguelov, D. Erhan, V. Vanhoucke, A. Rabinovich,
"Going deeper with convolutions", CVPR 2015 (arXiv:1409.4842, 2014).

Module names and tensor shapes are torchvision's `googlenet`, so its ImageNet weights load with
`strict=True` into `googlenet(aux_logits=False)` (they are published without the auxiliary heads). To stay
loadable we keep the choices of torchvision's port of a TensorFlow-trained GoogLeNet where they differ from
the paper:
- the "5x5" branch of every Inception block is a 3x3 convolution (a known quirk of the port,
  pytorch/vision issue #906): its weights have 3x3 kernels;
- every convolution is followed by BatchNorm, which the paper predates;
- dropout before the classifier is 0.2 (the paper: 0.4) and the auxiliary heads pool adaptively to 4x4
  (the paper: 5x5 average pooling with stride 3; both give 4x4 at 224x224, from slightly different windows).

6,624,904 parameters without the auxiliary heads at 1000 classes; the heads add 6,379,984 more
(13,004,888 in all). The smallest input side is 15, in eval and in training mode alike: the auxiliary heads
pool adaptively to 4x4, so they add no constraint of their own. (At 15 the last map is 1x1, so training
there needs batch >= 2: BatchNorm needs more than one value per channel.)
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import BasicConv2d, init_trunc_normal_
from ..layers.conv_bn import new_linear
from ._base import ZooModel
from ._registry import register_model

__all__ = [
    "GoogLeNet",
    "GoogLeNetOutputs",
    "Inception",
    "InceptionAux",
    "googlenet",
    "imagenet_to_unit_range",
]

PAPER = "Szegedy et al. 2014, Going deeper with convolutions"
INIT_STD = 0.01  # torchvision's (and the TF port's) truncated-normal std for GoogLeNet

# Table 1 of the paper: in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_CFG: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}

# transform_input: from ImageNet mean/std normalisation to the [-1, 1] scaling the TF weights expect.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def imagenet_to_unit_range(x: Tensor) -> Tensor:
    """Undo ImageNet mean/std normalisation and rescale to [-1, 1]: x * std / 0.5 + (mean - 0.5) / 0.5.

    Channel by channel with literal constants (`_IMAGENET_MEAN`, `_IMAGENET_STD`), so TorchScript, FX and
    ONNX see plain arithmetic.
    """
    r = x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    g = x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    b = x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    return torch.cat([r, g, b], 1)


class GoogLeNetOutputs(NamedTuple):
    """What `GoogLeNet.forward` returns in training mode with the auxiliary heads (torchvision's order)."""

    logits: Tensor
    aux_logits2: Tensor
    aux_logits1: Tensor


class Inception(nn.Module):
    """Four parallel branches concatenated along channels: 1x1 | 1x1->3x3 | 1x1->"5x5" | maxpool->1x1."""

    def __init__(self, in_chs: int, c1: int, c3_red: int, c3: int, c5_red: int, c5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_chs, c1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(in_chs, c3_red, 1), BasicConv2d(c3_red, c3, 3, padding=1))
        # 3x3, not the paper's 5x5: torchvision's weights have this shape (see the module docstring).
        self.branch3 = nn.Sequential(BasicConv2d(in_chs, c5_red, 1), BasicConv2d(c5_red, c5, 3, padding=1))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), BasicConv2d(in_chs, pool_proj, 1)
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, c1 + c3 + c5 + pool_proj, H, W)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on an intermediate map: pool to 4x4, 1x1 conv 128, fc 1024, dropout, fc."""

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.7):
        super().__init__()
        self.drop_rate = drop_rate
        self.conv = BasicConv2d(in_chs, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, 4))  # (B, 128, 4, 4): any input size works
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)  # (B, 1024)
        return self.fc2(F.dropout(x, self.drop_rate, training=self.training))


class GoogLeNet(ZooModel):
    """Stem (conv 7x7/2, pool, conv 1x1, conv 3x3, pool), 9 Inception blocks, global pool, fc 1024->classes.

    `forward` in training mode with `aux_logits` returns `GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`
    (the paper weights each auxiliary loss by 0.3); otherwise it returns the logits, equal to
    `forward_head(forward_features(x))`.
    """

    classifier_path = "fc"
    first_conv = "conv1.conv"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = True,
        transform_input: bool = False,
        drop_rate: float = 0.2,
        aux_drop_rate: float = 0.7,
    ):
        super().__init__()
        if transform_input and in_chans != 3:
            raise ValueError(f"transform_input needs in_chans=3 (ImageNet-normalised RGB), got {in_chans}")
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 1024, 1024
        self.aux_logits, self.transform_input, self.drop_rate = aux_logits, transform_input, drop_rate

        self.conv1 = BasicConv2d(in_chans, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name, widths in INCEPTION_CFG.items():
            self.add_module(name, Inception(*widths))
            if name == "inception3b":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif name == "inception4e":
                self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        # torchvision's module order (aux after inception5b), so parameters list stem to head.
        self.aux1 = InceptionAux(512, num_classes, aux_drop_rate) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, aux_drop_rate) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.set_feature_info(
            [("conv1", 64, 2), ("conv3", 192, 4), ("inception3b", 480, 8), ("inception4e", 832, 16),
             ("inception5b", 1024, 32)]
        )  # fmt: skip
        init_trunc_normal_(self, INIT_STD)

    def _trunk(self, x: Tensor, with_aux: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The feature map (B, 1024, H/32, W/32) and, if `with_aux`, the two auxiliary logits."""
        if self.transform_input:
            x = imagenet_to_unit_range(x)
        x = self.maxpool1(self.conv1(x))  # (B, 64, H/4, W/4) at 224: 56x56
        x = self.maxpool2(self.conv3(self.conv2(x)))  # (B, 192, H/8, W/8)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (B, 480, H/16, W/16)
        x = self.inception4a(x)  # (B, 512, H/16, W/16)
        aux1: Tensor | None = None
        if with_aux and self.aux1 is not None:
            aux1 = self.aux1(x)
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (B, 528, H/16, W/16)
        aux2: Tensor | None = None
        if with_aux and self.aux2 is not None:
            aux2 = self.aux2(x)
        x = self.maxpool4(self.inception4e(x))  # (B, 832, H/32, W/32)
        x = self.inception5b(self.inception5a(x))  # (B, 1024, H/32, W/32)
        return x, aux1, aux2

    def forward_features(self, x: Tensor) -> Tensor:
        return self._trunk(x, with_aux=False)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":  # "" (with num_classes=0) keeps the (B, 1024, H, W) map
            x = torch.flatten(self.avgpool(x), 1)
        x = self.dropout(x)  # (B, 1024)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        # training with the auxiliary heads is eager-only: a scripted model returns the logits alone
        if self.training and self.aux_logits and not torch.jit.is_scripting():
            x, aux1, aux2 = self._trunk(x, True)
            return GoogLeNetOutputs(self.forward_head(x), aux2, aux1)
        return self.forward_head(self.forward_features(x))

    @classmethod
    def global_pool_options(cls) -> tuple[str, ...]:
        return ("avg", "")

    def classifier_names(self) -> tuple[str, ...]:
        return ("fc", "aux1.fc2", "aux2.fc2") if self.aux_logits else ("fc",)

    def _new_classifier(self, num_classes: int) -> nn.Module:
        return new_linear(self.head_hidden_size, num_classes, INIT_STD, like=self.conv1.conv.weight)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New `fc` and, when present, new `aux1.fc2` and `aux2.fc2`, all with `num_classes` outputs
        (`nn.Identity` for 0: the auxiliary heads then output their 1024-wide hidden layer)."""
        super().reset_classifier(num_classes, global_pool)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = (
                    new_linear(aux.fc1.out_features, num_classes, INIT_STD, like=aux.fc1.weight)
                    if num_classes > 0
                    else nn.Identity()
                )

    def group_matcher(self) -> dict[str, list[str]]:
        groups = {
            "stem": ["conv1", "conv2", "conv3"],
            "inception3": ["inception3a", "inception3b"],
            "inception4": [f"inception4{c}" for c in "abcde"],
            "inception5": ["inception5a", "inception5b"],
        }
        if self.aux_logits:
            groups["aux"] = ["aux1", "aux2"]
        groups["head"] = ["fc"]
        return groups


# torchvision's weights of this TF port expect (x - 0.5) / 0.5 (see `imagenet_to_unit_range`)
@register_model(family="inception", input_size=224, min_size=15, paper=PAPER, mean=(0.5,) * 3, std=(0.5,) * 3)
def googlenet(
    *, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True, transform_input: bool = False
) -> GoogLeNet:
    """GoogLeNet; torchvision's weights want `aux_logits=False` and, for ImageNet-normalised input,
    `transform_input=True`."""
    return GoogLeNet(num_classes, in_chans, aux_logits=aux_logits, transform_input=transform_input)
