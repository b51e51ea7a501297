"""Inception v3, with its auxiliary classifier.

C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens, Z. Wojna, "Rethinking the Inception Architecture for
Computer Vision", CVPR 2016 (arXiv:1512.00567, 2015).

Module names and tensor shapes are torchvision's `inception_v3` (a port of TensorFlow-slim's network,
whose stem differs slightly from the paper's Table 1), so its ImageNet weights load with `strict=True`.
The blocks: A = 35x35 grid (Figure 5: 5x5 factorised into two 3x3), B = reduction to 17x17, C = 17x17 grid
with 7x7 factorised into 1x7 and 7x1 (Figure 6), D = reduction to 8x8, E = 8x8 grid with expanded 1x3 / 3x1
filter banks (Figure 7). 27,161,264 parameters at 1000 classes, auxiliary head included.

Input size: 299x299 natively. In eval mode (or with `aux_logits=False`) any side >= 75 works. In training
mode the auxiliary head pools the 17x17 Mixed_6e map with a 5x5/3 window and then applies a 5x5 conv, so it
needs Mixed_6e to be at least 17x17, i.e. an input side of at least 299; `min_size` registers 299, the
smallest size at which both modes run. (Training at 75 also needs batch >= 2: the last map is 1x1 and
BatchNorm needs more than one value per channel.)
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import BasicConv2d, init_trunc_normal_
from ..layers.conv_bn import new_linear
from ._base import ZooModel
from ._registry import register_model
from .googlenet import imagenet_to_unit_range

__all__ = [
    "InceptionA", "InceptionAux", "InceptionB", "InceptionC", "InceptionD", "InceptionE",
    "InceptionOutputs", "InceptionV3", "inception_v3",
]  # fmt: skip

PAPER = "Szegedy et al. 2015, Rethinking the Inception Architecture for Computer Vision"
INIT_STD = 0.1  # torchvision's truncated-normal std; the auxiliary head's last layers start smaller:
AUX_INIT_STD = {"AuxLogits.conv1.conv": 0.01, "AuxLogits.fc": 0.001}
EVAL_MIN_SIZE = 75  # smallest side that runs without the auxiliary head (the registry's min_size is 299)


def _avg3(x: Tensor) -> Tensor:  # the 3x3/1 average pool in front of each grid block's pool projection
    return F.avg_pool2d(x, 3, stride=1, padding=1)


class InceptionOutputs(NamedTuple):
    """What `InceptionV3.forward` returns in training mode with the auxiliary head."""

    logits: Tensor
    aux_logits: Tensor


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1; out 224 + pool_features channels."""

    def __init__(self, in_chs: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_chs, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_chs, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_chs, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_chs, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2; out 480 + in_chs channels."""

    def __init__(self, in_chs: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_chs, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_chs, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block, 7x7 factorised: 1x1 | 1x7->7x1 | (7x1->1x7) twice | avgpool->1x1; out 768 channels."""

    def __init__(self, in_chs: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        row, col = {"kernel_size": (1, 7), "padding": (0, 3)}, {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = BasicConv2d(in_chs, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_chs, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(in_chs, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(in_chs, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(d))
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool/2; out 512 + in_chs channels."""

    def __init__(self, in_chs: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_chs, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_chs, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded filter banks: 1x1 | 1x1->(1x3, 3x1) | 1x1->3x3->(1x3, 3x1) | avgpool->1x1."""

    def __init__(self, in_chs: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_chs, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_chs, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_chs, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_chs, 192, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, 8, 8) -> (B, 320 + 768 + 768 + 192 = 2048, 8, 8)
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(s), self.branch3x3_2b(s),
                self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
                self.branch_pool(_avg3(x)),
            ],
            1,
        )  # fmt: skip


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 map: avgpool 5x5/3 -> 1x1 conv 128 -> 5x5 conv 768 -> fc."""

    def __init__(self, in_chs: int, num_classes: int):
        super().__init__()
        self.conv0 = BasicConv2d(in_chs, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, stride=3)))  # (B, 768, 17, 17) -> (B, 768, 1, 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(ZooModel):
    """Stem of five convs and two pools, 3 x A, B, 4 x C, (aux head), D, 2 x E, global pool, fc 2048->classes.

    `forward` in training mode with `aux_logits` returns `InceptionOutputs(logits, aux_logits)` (TF-slim's
    training script weights the auxiliary loss by 0.4); otherwise it returns the logits, equal to
    `forward_head(forward_features(x))`.
    """

    classifier_path = "fc"
    first_conv = "Conv2d_1a_3x3.conv"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = True,
        transform_input: bool = False,
        drop_rate: float = 0.5,
    ):
        super().__init__()
        if transform_input and in_chans != 3:
            raise ValueError(f"transform_input needs in_chans=3 (ImageNet-normalised RGB), got {in_chans}")
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 2048, 2048
        self.aux_logits, self.transform_input, self.drop_rate = aux_logits, transform_input, drop_rate

        self.Conv2d_1a_3x3 = BasicConv2d(in_chans, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.set_feature_info(
            [("Conv2d_2b_3x3", 64, 2), ("Conv2d_4a_3x3", 192, 4), ("Mixed_5d", 288, 8), ("Mixed_6e", 768, 16),
             ("Mixed_7c", 2048, 32)]
        )  # fmt: skip
        init_trunc_normal_(self, INIT_STD, AUX_INIT_STD)

    def _trunk(self, x: Tensor, with_aux: bool) -> tuple[Tensor, Tensor | None]:
        """The feature map (B, 2048, 8, 8 at 299) and, if `with_aux`, the auxiliary logits."""
        if self.transform_input:
            x = imagenet_to_unit_range(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147) at 299
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x)))  # (B, 192, 71, 71)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self.maxpool2(x))))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        aux: Tensor | None = None
        if with_aux and self.AuxLogits is not None:
            aux = self.AuxLogits(x)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (B, 2048, 8, 8)
        return x, aux

    def forward_features(self, x: Tensor) -> Tensor:
        return self._trunk(x, with_aux=False)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":  # "" (with num_classes=0) keeps the (B, 2048, H, W) map
            x = torch.flatten(self.avgpool(x), 1)
        x = self.dropout(x)  # (B, 2048)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor | InceptionOutputs:
        # training with the auxiliary head is eager-only: a scripted model returns the logits alone
        if self.training and self.aux_logits and not torch.jit.is_scripting():
            x, aux = self._trunk(x, True)
            return InceptionOutputs(self.forward_head(x), aux)
        return self.forward_head(self.forward_features(x))

    @classmethod
    def global_pool_options(cls) -> tuple[str, ...]:
        return ("avg", "")

    def classifier_names(self) -> tuple[str, ...]:
        return ("fc", "AuxLogits.fc") if self.aux_logits else ("fc",)

    def _new_classifier(self, num_classes: int) -> nn.Module:
        return new_linear(self.head_hidden_size, num_classes, INIT_STD, like=self.Conv2d_1a_3x3.conv.weight)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New `fc` and, when present, a new `AuxLogits.fc`, both with `num_classes` outputs (`nn.Identity`
        for 0: the auxiliary head then outputs its 768-wide pooled features)."""
        super().reset_classifier(num_classes, global_pool)
        if self.AuxLogits is not None:
            like = self.AuxLogits.conv1.conv.weight
            self.AuxLogits.fc = (
                new_linear(768, num_classes, AUX_INIT_STD["AuxLogits.fc"], like=like)
                if num_classes > 0
                else nn.Identity()
            )

    def group_matcher(self) -> dict[str, list[str]]:
        groups = {
            "stem": ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"],
            "mixed5": ["Mixed_5b", "Mixed_5c", "Mixed_5d"],
            "mixed6": ["Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"],
        }
        if self.aux_logits:
            groups["aux"] = ["AuxLogits"]
        groups["mixed7"] = ["Mixed_7a", "Mixed_7b", "Mixed_7c"]
        groups["head"] = ["fc"]
        return groups


# torchvision's weights of this TF-slim port expect (x - 0.5) / 0.5
@register_model(
    family="inception", input_size=299, min_size=299, paper=PAPER, mean=(0.5,) * 3, std=(0.5,) * 3
)
def inception_v3(
    *, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True, transform_input: bool = False
) -> InceptionV3:
    """Inception v3; `transform_input=True` to feed torchvision's weights ImageNet-normalised input."""
    return InceptionV3(num_classes, in_chans, aux_logits=aux_logits, transform_input=transform_input)
