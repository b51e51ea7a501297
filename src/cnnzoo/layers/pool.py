"""2x2 max-pooling with a faster training path on CPUs.

PyTorch's CPU `max_pool2d` kernel (with indices, for backward) takes ~3 ms on LeNet-5's 256x6x28x28
activations here, while the same maximum over the four strided 2x2 phases takes ~0.3 ms. In training,
`MaxPool2x2` computes it that way and routes the gradient to the first maximum of each window, exactly
as `max_pool2d` does; in eval mode it calls `max_pool2d` itself (so tools that trace the standard op,
such as `cnnzoo summary`'s receptive fields, see an ordinary pooling layer).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaxPool2x2", "max_pool_2x2"]

# The four positions of a 2x2 window, in the order max_pool2d breaks ties: row-major.
_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # floor mode: an odd last row/column is dropped
        p = [x[..., dy:h:2, dx:w:2] for dy, dx in _PHASES]
        out = torch.maximum(torch.maximum(p[0], p[1]), torch.maximum(p[2], p[3]))
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:
        x, out = ctx.saved_tensors
        h, w = out.shape[-2] * 2, out.shape[-1] * 2
        grad = torch.zeros_like(x)
        taken = torch.zeros_like(out, dtype=torch.bool)
        for dy, dx in _PHASES:  # each window's gradient goes to its first maximum only
            hit = (x[..., dy:h:2, dx:w:2] == out) & ~taken
            grad[..., dy:h:2, dx:w:2] = grad_out * hit
            taken |= hit
        return grad


def max_pool_2x2(x: Tensor) -> Tensor:
    """`F.max_pool2d(x, 2)`, faster on CPU when a gradient is needed."""
    return _MaxPool2x2.apply(x)


class MaxPool2x2(nn.MaxPool2d):
    """`nn.MaxPool2d(2)` (kernel 2, stride 2) with the fast training path above."""

    def __init__(self):
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        # the autograd.Function is Python only: TorchScript compiles the standard op alone
        if self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return max_pool_2x2(x)
        return F.max_pool2d(x, 2)
