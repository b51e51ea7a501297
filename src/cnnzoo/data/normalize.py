"""Normalisation as one multiply-add on the 0..255 scale, shared by every loader and by inference.

`(x / 255 - mean) / std` equals `x * scale + shift` with `scale = 1 / (255 std)` and `shift = -mean / std`.
Training, evaluation and prediction all call this one function, so a test image gives the same float
input, to the last bit, whichever path reads it: the accuracy a run prints is the one `evaluate` and
`predict` reproduce.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["Normalize"]


class Normalize:
    """Call on a float (B, C, H, W) batch on the 0..255 scale; `expand` repeats a gray channel to 3 first."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu"):
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        scale = [1.0 / (255.0 * s) for s in self.std]
        shift = [-m / s for m, s in zip(self.mean, self.std, strict=True)]
        if len(set(scale)) == 1 and len(set(shift)) == 1:  # one value for all channels: floats are faster
            self.scale, self.shift = scale[0], shift[0]
        else:
            self.scale = torch.tensor(scale, device=device).view(1, -1, 1, 1)
            self.shift = torch.tensor(shift, device=device).view(1, -1, 1, 1)

    def __call__(self, x: Tensor, expand: bool = False) -> Tensor:
        if expand:  # (B, 1, H, W) -> (B, 3, H, W) as a view, then a new tensor from the multiply
            return x.expand(-1, 3, -1, -1) * self.scale + self.shift
        return x.mul_(self.scale).add_(self.shift)
