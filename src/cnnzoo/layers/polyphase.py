"""`max_pool2d(relu(conv2d(x, w, b, padding)), 2)` computed as one polyphase convolution, faster on CPUs.

A stride-1 convolution followed by 2x2 max-pooling computes every output pixel and then keeps one of each
2x2 block. Split the input into its four 2x2 phases (`pixel_unshuffle`: (B, C, H, W) -> (B, 4C, H/2, W/2))
and rewrite the KxK kernel as a ceil((K+1)/2)-square kernel over those 4C channels, one set of output
channels per output phase: the convolution then yields the four pixels of each pooling window as four
channel blocks, (B, 4 x C_out, H'/2, W'/2), and the pooling becomes the maximum of four contiguous blocks.

Why: LeNet-5's conv1 reads one channel and writes six, shapes for which oneDNN's CPU convolution is
inefficient (~20 GFLOPS of a core's ~100; in bf16 slower still), and pooling its 28x28 output means
strided reads and writes. The polyphase form multiplies 44% more zeros-and-weights (3x3x4 taps per phase
instead of 5x5) but gives oneDNN 4 input and 24 output channels, and the pooling runs on contiguous
blocks. On one thread of the AVX512-BF16 EPYC measured, the 1-channel convolution's forward and backward
(batch 256) took 5.9 ms in fp32 and 10.2 ms in bf16; the polyphase one 2.7 and 1.9 ms (channels-last).

The values are the layers' up to float rounding (the same products summed in another order, plus exact
zeros); gradients reach the KxK weight through the rearrangement. Ties in a pooling window route the
gradient to the first maximum in row-major order, as `max_pool2d` does. Written by hand: no library
offers this fusion on CPU (torch.compile's inductor does not rewrite convolutions).
"""

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .pool import first_wins

__all__ = ["conv_relu_max_pool_2x2"]


def polyphase_applies(x: Tensor, kernel: int, padding: int) -> bool:
    """Whether `conv_relu_max_pool_2x2` can compute this layer exactly: odd kernel, and the padded input and
    the convolution's output both of even size (a 2x2 pooling window never straddles an edge)."""
    h, w = x.shape[-2] + 2 * padding, x.shape[-1] + 2 * padding
    return kernel % 2 == 1 and h % 2 == 0 and w % 2 == 0 and h > kernel and w > kernel


def _phase_taps(c_out: int, c_in: int, k: int) -> tuple[Tensor, Tensor]:
    # cached tensors made under torch.inference_mode() could never be used by autograd afterwards
    with torch.inference_mode(False):
        return _phase_taps_cached(c_out, c_in, k)


@lru_cache(maxsize=16)
def _phase_taps_cached(c_out: int, c_in: int, k: int) -> tuple[Tensor, Tensor]:
    """Index into the flattened (c_out, c_in, k, k) weight of every tap of the polyphase kernel
    (4 * c_out, 4 * c_in, kp, kp), and the 0/1 mask of the taps that exist (the others are zeros).

    Output channel ph * c_out + co computes output phase ph = 2p + q (row offset p, column offset q) of
    channel co; input channel ci * 4 + 2r + s is `pixel_unshuffle`'s phase (r, s) of channel ci; tap (a, b)
    of the small kernel reads kernel row 2a + r - p and column 2b + s - q of the original one."""
    kp = (k + 2) // 2  # ceil((k + 1) / 2)

    def axis(values, dim: int) -> Tensor:  # a 1-D tensor placed on dimension `dim` of 6
        return torch.as_tensor(values).view([-1 if d == dim else 1 for d in range(6)])

    # dimensions: (output phase, c_out, c_in, input phase, a, b)
    p, q = axis([0, 0, 1, 1], 0), axis([0, 1, 0, 1], 0)
    r, s = axis([0, 0, 1, 1], 3), axis([0, 1, 0, 1], 3)  # pixel_unshuffle's order: (0,0),(0,1),(1,0),(1,1)
    ky, kx = 2 * axis(range(kp), 4) + r - p, 2 * axis(range(kp), 5) + s - q
    exists = (ky >= 0) & (ky < k) & (kx >= 0) & (kx < k)
    co, ci = axis(range(c_out), 1), axis(range(c_in), 2)
    flat = ((co * c_in + ci) * k + ky.clamp(0, k - 1)) * k + kx.clamp(0, k - 1)
    shape = (4, c_out, c_in, 4, kp, kp)
    flat, exists = flat.expand(shape), exists.expand(shape)
    # (ph, co, ci, rs, a, b) -> (ph * c_out + co, ci * 4 + rs, a, b)
    return flat.reshape(4 * c_out, 4 * c_in, kp, kp), exists.reshape(4 * c_out, 4 * c_in, kp, kp)


def _polyphase_weight(weight: Tensor) -> Tensor:
    c_out, c_in, k, _ = weight.shape
    index, exists = _phase_taps(c_out, c_in, k)
    index, exists = index.to(weight.device), exists.to(weight.device, weight.dtype)  # no-ops on the CPU
    return weight.reshape(-1)[index] * exists  # the gather's backward sums into the weight


class _PhaseReluMax(torch.autograd.Function):
    """relu(max over the four phase blocks of y (B, 4C, h, w)) -> (B, C, h, w), gradient to the first max."""

    @staticmethod
    def forward(ctx, y: Tensor) -> Tensor:
        p0, p1, p2, p3 = y.unflatten(1, (4, -1)).unbind(1)  # phases (0,0), (0,1), (1,0), (1,1)
        top, bottom = torch.maximum(p0, p1), torch.maximum(p2, p3)
        out = torch.maximum(top, bottom).clamp_(min=0)
        # which member of each pair is the first maximum, as 0/1 in y's dtype (layers/pool.py says why)
        ctx.save_for_backward(first_wins(p0, p1), first_wins(p2, p3), first_wins(top, bottom), out)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:
        first_left_top, first_left_bottom, top_wins, out = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad_out.contiguous(), out, 0)  # the ReLU: 0 where out <= 0
        b, c, h, w = g.shape
        grad = g.new_empty(b, 4, c, h, w)
        g_top = g * top_wins
        g_bottom = g - g_top  # g - g*1 = 0 and g - g*0 = g exactly
        torch.mul(g_top, first_left_top, out=grad[:, 0])
        torch.sub(g_top, grad[:, 0], out=grad[:, 1])
        torch.mul(g_bottom, first_left_bottom, out=grad[:, 2])
        torch.sub(g_bottom, grad[:, 2], out=grad[:, 3])
        return grad.view(b, 4 * c, h, w)


def conv_relu_max_pool_2x2(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int = 0) -> Tensor:
    """`F.max_pool2d(F.relu(F.conv2d(x, weight, bias, padding=padding)), 2)` for a stride-1, odd, square
    kernel where `polyphase_applies`; the module docstring says how and why."""
    if padding:
        x = F.pad(x, (padding,) * 4)
    # (B, 4 C_in, H/2, W/2), channels-last: oneDNN's kernels for these few channels are faster in NHWC
    # (forward and backward, one thread, batch 256: bf16 1.9 ms NHWC vs 3.3 ms NCHW; fp32 2.7 vs 5.8 ms)
    phases = F.pixel_unshuffle(x, 2).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(phases, _polyphase_weight(weight), None if bias is None else bias.repeat(4))
    y = y.contiguous()  # (B, 4 C_out, H'/2, W'/2) NCHW: the pooling reads four contiguous blocks of channels
    if torch.is_grad_enabled() and y.requires_grad:
        return _PhaseReluMax.apply(y)
    p0, p1, p2, p3 = y.unflatten(1, (4, -1)).unbind(1)
    return torch.maximum(torch.maximum(p0, p1), torch.maximum(p2, p3)).clamp_(min=0)
