"""LeNet-5 (1998)'s subsampling layer (S2, S4): a trainable 2x2 sum pooling.

Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11), 1998, section II-B. Here, not in `models/lenet.py`, so that tools which treat a pooling
layer as one (`cnnzoo explain`'s feature maps) can name it without importing a model.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Subsampling"]


class Subsampling(nn.Module):
    """S2/S4: sum each 2x2 block, times one trainable coefficient per map, plus one bias per map."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        summed = F.avg_pool2d(x, 2) * 4.0  # (B, C, H/2, W/2)
        return summed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
