"""Conv -> BatchNorm -> ReLU, the unit every Inception network is built from, and its initialisation.

The convolution has no bias (BatchNorm's shift replaces it) and BatchNorm uses eps=0.001, the value of the
TensorFlow ports whose weights torchvision publishes. The attribute names `conv` and `bn` are torchvision's,
so its GoogLeNet and Inception v3 state dicts load unchanged.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicConv2d", "init_trunc_normal_", "new_linear", "new_linear_like"]

_Size = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """conv(k, stride, padding, bias=False) -> BatchNorm(eps=0.001) -> ReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: _Size, stride: _Size = 1, padding: _Size = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


@torch.no_grad()
def trunc_normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    """Normal(0, std) cut at +-2 std by redrawing the ~4.6% of values outside: the same distribution as
    `nn.init.trunc_normal_`, whose inverse-CDF method takes seconds on Inception v3's 27M weights."""
    t.normal_(0.0, std)
    if t.device.type == "meta":
        return t
    outside = t.abs() > 2 * std
    while outside.any():
        t[outside] = torch.empty(int(outside.sum()), dtype=t.dtype, device=t.device).normal_(0.0, std)
        outside = t.abs() > 2 * std
    return t


def init_trunc_normal_(model: nn.Module, std: float, overrides: dict[str, float] | None = None) -> None:
    """Conv and linear weights ~ normal(0, std) truncated at 2 std, biases 0; BatchNorm weight 1, bias 0.

    The truncated normal is TensorFlow's default initialiser, which the Inception papers' code used.
    `overrides` maps a module name to its own std (Inception v3's auxiliary head starts smaller).
    """
    overrides = overrides or {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            s = overrides.get(name, std)
            trunc_normal_(m.weight, std=s)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def new_linear_like(old: nn.Linear, out_features: int, std: float) -> nn.Linear:
    """A fresh linear layer with `old`'s inputs, device and dtype, initialised by `init_trunc_normal_`."""
    return new_linear(old.in_features, out_features, std, like=old.weight)


def new_linear(in_features: int, out_features: int, std: float, like: torch.Tensor) -> nn.Linear:
    """A fresh linear layer on `like`'s device and dtype, initialised by `init_trunc_normal_`."""
    new = nn.Linear(in_features, out_features, device=like.device, dtype=like.dtype)
    init_trunc_normal_(new, std)
    return new
