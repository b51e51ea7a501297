"""ResNet: the ImageNet networks (18 to 152 layers), the CIFAR-10 networks of section 4.2 and their plain twins.

K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385, 2015).

ImageNet models (`ResNet`) carry torchvision's module names and shapes, so its weights load with
`strict=True`. Like torchvision ("ResNet v1.5") a Bottleneck strides its 3x3 conv, where the paper strided
the first 1x1 conv; the shortcut is the identity, or a 1x1 projection where the shape changes (option B).

CIFAR models (`CifarResNet`) are the paper's 6n+2 layer nets: a 3x3 conv, three stages of n blocks with
16, 32 and 64 filters, global average pooling and the classifier. Their shortcuts are option A
(identity; stride-2 subsampling and zero-padded channels where the shape changes), parameter-free, so a
ResNet-20 and its plain twin (`shortcut=False`, the paper's degradation experiment) have the same weights.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import ZooModel
from ._registry import register_model

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarBlock",
    "CifarResNet",
    "PadShortcut",
    "ResNet",
    "plain20",
    "plain32",
    "plain44",
    "plain56",
    "plain110",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
]

PAPER = "He et al. 2015, Deep Residual Learning for Image Recognition"

# Every conv and pool pads so that a side of 1 stays 1 (out = floor((n - 1) / s) + 1), so any side >= 1
# runs; in training a batch of 2 still gives BatchNorm two values per channel on the final 1x1 maps.
MIN_SIZE = 1


def conv3x3(in_chans: int, out_chans: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_chans: int, out_chans: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False)


def _projection(in_chans: int, out_chans: int, stride: int) -> nn.Sequential | None:
    """Option B: a strided 1x1 conv + BN where the block changes shape, else None (identity)."""
    if stride == 1 and in_chans == out_chans:
        return None
    return nn.Sequential(conv1x1(in_chans, out_chans, stride), nn.BatchNorm2d(out_chans))


# --- blocks -----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), two 3x3 convs: ResNet-18/34."""

    expansion = 1

    def __init__(self, in_chans: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_chans, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(in_chans, planes, stride)

    def zero_init_last_bn(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand to 4 x planes, plus the shortcut: ResNet-50/101/152."""

    expansion = 4

    def __init__(self, in_chans: int, planes: int, stride: int = 1):
        super().__init__()
        out_chans = planes * self.expansion
        self.conv1 = conv1x1(in_chans, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_chans)
        self.bn3 = nn.BatchNorm2d(out_chans)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_chans, out_chans, stride)

    def zero_init_last_bn(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class PadShortcut(nn.Module):
    """Option A: the identity onto a smaller, wider map, parameter-free.

    Keeps every `stride`-th pixel (the pixels a stride-2, pad-1 3x3 conv centres on, so the sizes agree
    for odd sides too) and appends `extra_chans` channels of zeros.
    """

    def __init__(self, extra_chans: int, stride: int):
        super().__init__()
        self.extra_chans, self.stride = extra_chans, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C, ceil(H/s), ceil(W/s))
        return F.pad(x, [0, 0, 0, 0, 0, self.extra_chans])  # (B, C + extra, H', W')


class CifarBlock(nn.Module):
    """Two 3x3 convs; with `shortcut`, plus the option-A identity (a ResNet), without, a plain net."""

    expansion = 1

    def __init__(self, in_chans: int, planes: int, stride: int = 1, shortcut: bool = True):
        super().__init__()
        self.conv1 = conv3x3(in_chans, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module | None = None
        if shortcut:
            same = stride == 1 and in_chans == planes
            self.shortcut = nn.Identity() if same else PadShortcut(planes - in_chans, stride)

    def zero_init_last_bn(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


def _stage(
    block: type[nn.Module], in_chans: int, planes: int, blocks: int, stride: int, **kwargs
) -> nn.Sequential:
    """`blocks` blocks; the first one strides and changes the width, the rest keep the shape."""
    out_chans = planes * block.expansion
    layers = [block(in_chans, planes, stride, **kwargs)]
    layers += [block(out_chans, planes, 1, **kwargs) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """He et al.'s init: convs N(0, 2 / fan_out), BN weight 1 and bias 0; fc keeps PyTorch's default.

    `zero_init_residual` zeroes each block's last BN weight, so every block starts as the identity
    (Goyal et al. 2017); it helps large-batch training and is off by default, as in the paper.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck, CifarBlock)):
                m.zero_init_last_bn()


# --- models -----------------------------------------------------------------------------------


class ResNet(ZooModel):
    """The ImageNet ResNet: 7x7/2 conv, 3x3/2 max-pool, four stages (64..512 planes), average pool, fc."""

    classifier_path = "fc"

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        e = block.expansion
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 512 * e, 512 * e
        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # (B, 64, H/4, W/4)
        self.layer1 = _stage(block, 64, 64, layers[0], stride=1)  # (B, 64e, H/4, W/4)
        self.layer2 = _stage(block, 64 * e, 128, layers[1], stride=2)  # (B, 128e, H/8, W/8)
        self.layer3 = _stage(block, 128 * e, 256, layers[2], stride=2)  # (B, 256e, H/16, W/16)
        self.layer4 = _stage(block, 256 * e, 512, layers[3], stride=2)  # (B, 512e, H/32, W/32)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.set_feature_info(
            [("relu", 64, 2), ("layer1", 64 * e, 4), ("layer2", 128 * e, 8), ("layer3", 256 * e, 16),
             ("layer4", 512 * e, 32)]
        )  # fmt: skip
        _init_weights(self, zero_init_residual)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":  # "" (with num_classes=0) keeps the (B, C, H, W) map
            x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    @classmethod
    def global_pool_options(cls) -> tuple[str, ...]:
        return ("avg", "")

    def group_matcher(self) -> dict[str, list[str]]:
        stages = {f"layer{i}": [f"layer{i}"] for i in range(1, 5)}
        return {"stem": ["conv1", "bn1"], **stages, "head": ["fc"]}


class CifarResNet(ZooModel):
    """The CIFAR-10 net of section 4.2: depth 6n+2, with option-A shortcuts or (`shortcut=False`) none."""

    classifier_path = "fc"

    def __init__(
        self,
        depth: int,
        shortcut: bool = True,
        num_classes: int = 10,
        in_chans: int = 3,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110, ...), got {depth}")
        if zero_init_residual and not shortcut:
            raise ValueError("zero_init_residual needs shortcuts: a plain net would output a constant")
        n = (depth - 2) // 6
        self.depth, self.has_shortcuts = depth, shortcut
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 64, 64
        self.conv1 = conv3x3(in_chans, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)  # (B, 16, 32, 32)
        self.layer1 = _stage(CifarBlock, 16, 16, n, stride=1, shortcut=shortcut)  # (B, 16, 32, 32)
        self.layer2 = _stage(CifarBlock, 16, 32, n, stride=2, shortcut=shortcut)  # (B, 32, 16, 16)
        self.layer3 = _stage(CifarBlock, 32, 64, n, stride=2, shortcut=shortcut)  # (B, 64, 8, 8)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        self.set_feature_info([("relu", 16, 1), ("layer1", 16, 1), ("layer2", 32, 2), ("layer3", 64, 4)])
        _init_weights(self, zero_init_residual)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":  # "" (with num_classes=0) keeps the (B, C, H, W) map
            x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    @classmethod
    def global_pool_options(cls) -> tuple[str, ...]:
        return ("avg", "")

    def group_matcher(self) -> dict[str, list[str]]:
        stages = {f"stage{i}": [f"layer{i}"] for i in range(1, 4)}
        return {"stem": ["conv1", "bn1"], **stages, "head": ["fc"]}


def _resnet(
    block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int, in_chans: int, zero_init: bool
) -> ResNet:
    return ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, zero_init_residual=zero_init)


# --- builders: ImageNet -----------------------------------------------------------------------

_IMAGENET = dict(family="resnet", input_size=224, min_size=MIN_SIZE, paper=PAPER)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # the CIFAR-10 nets' data
_CIFAR = dict(
    family="resnet",
    input_size=32,
    min_size=MIN_SIZE,
    paper=PAPER,
    num_classes=10,
    mean=CIFAR_MEAN,
    std=CIFAR_STD,
)


@register_model(**_IMAGENET)
def resnet18(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18: 11,689,512 parameters at 1000 classes."""
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, in_chans, zero_init_residual)


@register_model(**_IMAGENET)
def resnet34(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34: 21,797,672 parameters at 1000 classes."""
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, in_chans, zero_init_residual)


@register_model(**_IMAGENET)
def resnet50(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50: 25,557,032 parameters at 1000 classes."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_chans, zero_init_residual)


@register_model(**_IMAGENET)
def resnet101(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-101: 44,549,160 parameters at 1000 classes."""
    return _resnet(Bottleneck, [3, 4, 23, 3], num_classes, in_chans, zero_init_residual)


@register_model(**_IMAGENET)
def resnet152(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False) -> ResNet:
    """ResNet-152: 60,192,808 parameters at 1000 classes."""
    return _resnet(Bottleneck, [3, 8, 36, 3], num_classes, in_chans, zero_init_residual)


# --- builders: CIFAR-10 (section 4.2, table 6) ------------------------------------------------


@register_model(**_CIFAR)
def resnet20(*, num_classes: int = 10, in_chans: int = 3, zero_init_residual: bool = False) -> CifarResNet:
    """ResNet-20 (n = 3): 269,722 parameters at 10 classes (table 6: 0.27M)."""
    return CifarResNet(20, num_classes=num_classes, in_chans=in_chans, zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def resnet32(*, num_classes: int = 10, in_chans: int = 3, zero_init_residual: bool = False) -> CifarResNet:
    """ResNet-32 (n = 5): 464,154 parameters at 10 classes (table 6: 0.46M)."""
    return CifarResNet(32, num_classes=num_classes, in_chans=in_chans, zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def resnet44(*, num_classes: int = 10, in_chans: int = 3, zero_init_residual: bool = False) -> CifarResNet:
    """ResNet-44 (n = 7): 658,586 parameters at 10 classes (table 6: 0.66M)."""
    return CifarResNet(44, num_classes=num_classes, in_chans=in_chans, zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def resnet56(*, num_classes: int = 10, in_chans: int = 3, zero_init_residual: bool = False) -> CifarResNet:
    """ResNet-56 (n = 9): 853,018 parameters at 10 classes (table 6: 0.85M)."""
    return CifarResNet(56, num_classes=num_classes, in_chans=in_chans, zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def resnet110(*, num_classes: int = 10, in_chans: int = 3, zero_init_residual: bool = False) -> CifarResNet:
    """ResNet-110 (n = 18): 1,727,962 parameters at 10 classes (table 6: 1.7M)."""
    return CifarResNet(110, num_classes=num_classes, in_chans=in_chans, zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def plain20(*, num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    """Plain-20: ResNet-20's layers without shortcuts (figure 6, left), the same 269,722 parameters."""
    return CifarResNet(20, shortcut=False, num_classes=num_classes, in_chans=in_chans)


@register_model(**_CIFAR)
def plain32(*, num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    """Plain-32: ResNet-32's layers without shortcuts, 464,154 parameters."""
    return CifarResNet(32, shortcut=False, num_classes=num_classes, in_chans=in_chans)


@register_model(**_CIFAR)
def plain44(*, num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    """Plain-44: ResNet-44's layers without shortcuts, 658,586 parameters."""
    return CifarResNet(44, shortcut=False, num_classes=num_classes, in_chans=in_chans)


@register_model(**_CIFAR)
def plain56(*, num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    """Plain-56: ResNet-56's layers without shortcuts, 853,018 parameters."""
    return CifarResNet(56, shortcut=False, num_classes=num_classes, in_chans=in_chans)


@register_model(**_CIFAR)
def plain110(*, num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
    """Plain-110: ResNet-110's layers without shortcuts, 1,727,962 parameters."""
    return CifarResNet(110, shortcut=False, num_classes=num_classes, in_chans=in_chans)
