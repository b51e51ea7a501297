"""LeNet-5 (1998)'s partially connected convolution (C3), with the paper's connection table.

Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11), 1998, Table I. Here, not in `models/lenet.py`, so that tools which treat a convolution
as one (`cnnzoo explain`'s feature maps) can name it without importing a model.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["C3_TABLE", "PartialConv"]

# Table I of the paper: which of S2's 6 maps each of C3's 16 maps reads.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


class PartialConv(nn.Module):
    """C3: 16 5x5 convolutions, each reading only the S2 maps listed in `C3_TABLE` (1,516 parameters).

    Stored as one weight per output map, sized to its inputs, so the parameter count is the paper's.
    Another `table` gives another partially connected convolution: one output map per row.
    """

    def __init__(self, table=C3_TABLE, kernel_size: int = 5):
        super().__init__()
        self.table = [list(ins) for ins in table]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(1, len(ins), kernel_size, kernel_size)) for ins in table
        )
        self.bias = nn.Parameter(torch.zeros(len(table)))
        for w in self.weights:  # uniform in +-2.4/fan_in, as the paper's appendix prescribes
            nn.init.uniform_(w, -2.4 / w[0].numel(), 2.4 / w[0].numel())

    def forward(self, x: Tensor) -> Tensor:
        maps: list[Tensor] = []
        for i, w in enumerate(self.weights):
            maps.append(F.conv2d(x[:, self.table[i]], w))  # reads only the S2 maps its row lists
        return torch.cat(maps, 1) + self.bias.view(1, -1, 1, 1)
