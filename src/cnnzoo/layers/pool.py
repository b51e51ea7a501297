"""2x2 max-pooling with faster paths on CPUs.

PyTorch's CPU `max_pool2d` kernel takes ~7 ms (one thread) on LeNet-5's 256x6x28x28 activations, with or
without indices. The same maximum taken in two pairwise steps, first of each pair of columns, then of each
pair of rows of the result, takes ~1 ms: each step is one elementwise `maximum` of two strided views, and
the second one reads whole rows. Written by hand because it is measurably faster (`bench/bench_train.py`
reports the step's time; the per-op figures above are one thread's CPU time, measured with
`time.thread_time`).

In training the same two steps record, as 0/1 masks in the activation's dtype, which member of each pair
won (the first on a tie), and backward routes each window's gradient through them: to the window's first
maximum in row-major order, exactly where `max_pool2d` sends it (the row-major first maximum is in the top
row if the top row's maximum is the larger or equal, and within that row it is the left one if the left is
the larger or equal). Masks are float, not bool, because multiplying by a float mask is ~8x faster than by
a bool one here (no type promotion); `first_wins` writes the comparison straight into a float tensor, 73 us
where `(a >= b).to(dtype)` takes 1,160 us (bf16, 256x6x14x14, one thread: the bool output and the cast are
not vectorized on this CPU build).

`MaxPool2x2` uses it in training; in eval mode it calls `max_pool2d` itself (so tools that trace the
standard op, such as `cnnzoo summary`'s receptive fields, see an ordinary pooling layer).
`relu_max_pool_2x2(x)` is `max_pool2d(relu(x), 2)` computed as `relu(max_pool2d(x, 2))`: the same values
and gradients (a window whose maximum is <= 0 passes no gradient either way), with the ReLU on the 4x
smaller output. Models call it on their fast paths (LeNet-5's).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaxPool2x2", "first_wins", "max_pool_2x2", "relu_max_pool_2x2"]


def first_wins(a: Tensor, b: Tensor) -> Tensor:
    """`(a >= b)` as 0/1 in `a`'s dtype: whether the first of each pair is the (first) maximum."""
    return torch.ge(a, b, out=torch.empty(a.shape, dtype=a.dtype, device=a.device))


def _pairwise_max(x: Tensor, masks: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The maximum of each 2x2 window (floor mode: an odd last row or column is dropped, as `max_pool2d`
    drops it) and, when `masks`, the 0/1 masks of the winners: `left` (.., H, W/2) says the left column of
    each pair won, `top` (.., H/2, W/2) that the top row did."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    left, right = x[..., :h, 0:w:2], x[..., :h, 1:w:2]  # (.., H, W/2)
    cols = torch.maximum(left, right)
    top, bottom = cols[..., 0::2, :], cols[..., 1::2, :]  # (.., H/2, W/2)
    out = torch.maximum(top, bottom)
    if not masks:
        return out, None, None
    return out, first_wins(left, right), first_wins(top, bottom)


def _route_to_first_max(grad_out: Tensor, left: Tensor, top: Tensor, in_shape: torch.Size) -> Tensor:
    """The gradient of the pooled input: each window's `grad_out` to its first maximum (see the docstring)."""
    *lead, h2, w2 = grad_out.shape
    rows = grad_out.new_empty(*lead, h2, 2, w2)  # (.., H/2, 2, W/2) = the (.., H, W/2) column winners
    torch.mul(grad_out, top, out=rows[..., 0, :])
    torch.sub(grad_out, rows[..., 0, :], out=rows[..., 1, :])  # g - g*1 = 0 and g - g*0 = g exactly
    rows = rows.view(*lead, 2 * h2, w2)
    grad = grad_out.new_empty(*lead, 2 * h2, w2, 2)  # (.., H, W/2, 2) = (.., H, W)
    torch.mul(rows, left, out=grad[..., 0])
    torch.sub(rows, grad[..., 0], out=grad[..., 1])
    grad = grad.view(*lead, 2 * h2, 2 * w2)
    if grad.shape != in_shape:  # an odd last row or column took no part: zero gradient
        grad = F.pad(grad, (0, in_shape[-1] - 2 * w2, 0, in_shape[-2] - 2 * h2))
    return grad


class _MaxPool2x2(torch.autograd.Function):
    """The pairwise 2x2 max-pool, followed by a ReLU when `relu` (on the 4x smaller output)."""

    @staticmethod
    def forward(ctx, x: Tensor, relu: bool) -> Tensor:
        out, left, top = _pairwise_max(x, masks=True)
        if relu:
            out = out.clamp_(min=0)
        ctx.save_for_backward(left, top, out if relu else None)
        ctx.in_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:
        left, top, out = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        if out is not None:  # the ReLU: 0 where out <= 0
            grad_out = torch.ops.aten.threshold_backward(grad_out, out, 0)
        return _route_to_first_max(grad_out, left, top, ctx.in_shape), None


def relu_max_pool_2x2(x: Tensor) -> Tensor:
    """`F.max_pool2d(F.relu(x), 2)`: same values and gradients, faster on CPU (see the module docstring)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaxPool2x2.apply(x, True)
    return _pairwise_max(x, masks=False)[0].clamp_(min=0)


def max_pool_2x2(x: Tensor) -> Tensor:
    """`F.max_pool2d(x, 2)`, faster on CPU when a gradient is needed."""
    return _MaxPool2x2.apply(x, False)


class MaxPool2x2(nn.MaxPool2d):
    """`nn.MaxPool2d(2)` (kernel 2, stride 2) with the fast training path above."""

    def __init__(self):
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        # the autograd.Function is Python only: TorchScript compiles the standard op alone, FX records it
        if self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
            if not isinstance(x, torch.fx.Proxy):
                return max_pool_2x2(x)
        return F.max_pool2d(x, 2)
