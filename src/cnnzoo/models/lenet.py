"""LeNet-5: the lecture's modern version and LeCun et al. 1998 as published.

Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11), 1998.

`LeNet5.forward_features` has a fast path for the lecture's layers (ReLU, 2x2 max-pool) in eager mode on
the CPU: the same function as `self.features(x)` (equal up to float rounding, gradients routed as
`max_pool2d` routes them), computed with fewer, cheaper ops:
  - conv1 + ReLU + pool1 is one polyphase convolution (`layers/polyphase.py`): the padding is the
    convolution's own, oneDNN gets 4 input and 24 output channels instead of 1 and 6 (the 1-channel
    convolution was 2x slower in bf16 than in fp32; the polyphase one is faster in bf16), and the pooling
    reads four contiguous blocks;
  - conv2's pool + ReLU is PyTorch's `max_pool2d` on a channels-last copy of conv2's output, the ReLU on
    the 4x smaller output: oneDNN's channels-last pooling vectorises over the 16 channels, where the NCHW
    kernel and `layers/pool.py`'s pairwise maxima read 10-wide rows with stride 2 (bf16, batch 256, one
    thread, forward and backward: 2.2 ms, against 5.5 ms pairwise and 3.9 ms NCHW).
On the 2-core AVX512-BF16 EPYC measured, a training step of batch 256 under bf16 autocast took 16.8 ms
against 26.1 ms through the layers (two threads, one process; before conv1 ran in bf16 here); one thread's
CPU time fell a further 11-15% with conv1 in bf16, 12% with the pooling masks written as floats
(`layers/pool.py`) and 13-16% with conv2's pooling in channels-last (`python bench/bench_train.py`
measures the epoch).
TorchScript, FX, `torch.jit.trace`, `torch.export`/ONNX and `torch.compile` see the standard layers, and
so does anything that hooks them (`cnnzoo summary`, `forward_intermediates`, saliency maps).

In eval mode the fast path leaves out the polyphase convolution, whose sums run in another order than
conv1's: conv1 is the layer itself and the rest are exact rewrites (a maximum commutes with a ReLU, and
does not depend on the memory layout), so eager inference equals those graphs bit for bit (timm's FX
test asserts `==`) at the fast path's speed (one thread, fp32: 12.0 ms for a batch of 256 against 13.4 ms
with the polyphase conv1 and 18.7 ms through the layers; batch 32: 1.23, 1.16 and 2.53 ms).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as M  # the global hook registries

from ..layers import MaxPool2x2, PartialConv, Subsampling, conv_relu_max_pool_2x2, relu_max_pool_2x2
from ..layers.partial_conv import C3_TABLE as C3_TABLE  # re-exported: the paper's Table I (studies/lenet.py)
from ..layers.polyphase import polyphase_applies
from ._base import ZooModel
from ._registry import register_model

__all__ = ["LeNet5", "LeNet5_1998", "lenet5", "lenet5_1998"]

PAPER = "LeCun et al. 1998, Gradient-based learning applied to document recognition"


@torch.fx.wrap  # one node in an FX graph: its check on the input's size is not traceable control flow
def pad_to(x: Tensor, size: int) -> Tensor:
    """Zero-pad (B, C, h, w) to (B, C, size, size), centred; a larger image is an error."""
    h, w = x.shape[-2], x.shape[-1]
    if h > size or w > size:
        raise ValueError(f"LeNet-5 takes images up to {size}x{size}, got {h}x{w}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, [left, size - w - left, top, size - h - top])


class PadTo(nn.Module):
    """Zero-pad a smaller image to `size` x `size` (MNIST's 28x28 -> LeNet's 32x32)."""

    def __init__(self, size: int = 32):
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return pad_to(x, self.size)


def _is_plain_conv5(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.kernel_size == (5, 5)
        and m.stride == (1, 1)
        and m.padding == (0, 0)
        and m.dilation == (1, 1)
        and m.groups == 1
        and m.padding_mode == "zeros"
    )


def _is_max_pool2(m: nn.Module) -> bool:
    def pair(v):
        return v if isinstance(v, tuple) else (v, v)

    return (
        isinstance(m, nn.MaxPool2d)
        and pair(m.kernel_size) == (2, 2)
        and pair(m.stride) == (2, 2)
        and pair(m.padding) == (0, 0)
        and pair(m.dilation) == (1, 1)
        and not m.ceil_mode
        and not m.return_indices
    )


def _has_hooks(seq: nn.Sequential) -> bool:
    """Any forward or backward hook on `seq` or its layers, or a global one: the fast path would skip them."""
    hooks = [
        M._global_forward_hooks,
        M._global_forward_pre_hooks,
        M._global_backward_hooks,
        M._global_backward_pre_hooks,
    ]
    for m in (seq, *seq):
        hooks += [m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks]
    return any(hooks)


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
_POOLS = {
    "max": lambda k: MaxPool2x2(),
    "avg": nn.AvgPool2d,
}  # 2x2, stride 2 (MaxPool2x2: faster training on CPU)


class LeNet5(ZooModel):
    """conv5x5 1->6, pool, conv5x5 6->16, pool, fc 400->120->84->classes: 61,706 parameters at 10 classes."""

    classifier_path = "classifier.4"
    first_conv = "features.1"
    layer_names = {  # the lecture's: pooling layers S2 and S4 without weights, C5 fully connected (400 -> 120)
        "features.1": "C1", "features.3": "S2", "features.4": "C3", "features.6": "S4",
        "classifier.0": "C5", "classifier.2": "F6", "classifier.4": "output",
    }  # fmt: skip

    def __init__(self, num_classes: int = 10, in_chans: int = 1, activation: str = "relu", pool: str = "max"):
        super().__init__()
        if activation not in _ACTIVATIONS or pool not in _POOLS:
            raise ValueError(f"activation in {list(_ACTIVATIONS)}, pool in {list(_POOLS)}")
        act, pool_cls = _ACTIVATIONS[activation], _POOLS[pool]
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 16, 84
        self.features = nn.Sequential(
            PadTo(32),
            nn.Conv2d(in_chans, 6, 5),
            act(),
            pool_cls(2),  # (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5),
            act(),
            pool_cls(2),  # (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), act(),
            nn.Linear(120, 84), act(),
            nn.Linear(84, num_classes),
        )  # fmt: skip
        self.set_feature_info([("features.3", 6, 2), ("features.6", 16, 4)])

    def forward_features(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and self._fast_path_applies(x):
            return self._forward_features_fast(x)
        return self.features(x)

    @torch.jit.unused
    def _fast_path_applies(self, x: Tensor) -> bool:
        """Eager mode on the CPU, the lecture's layers (ReLU, 2x2 max-pool), and no hook on them that would miss a call."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or isinstance(x, torch.fx.Proxy):
            return False  # traced and compiled graphs keep the standard ops (export, ONNX, inductor)
        if x.device.type != "cpu":
            return False  # written for oneDNN's CPU kernels; cuDNN does well with the layers themselves
        f = self.features
        standard = (
            len(f) == 7
            and isinstance(f[0], PadTo)
            and all(_is_plain_conv5(f[i]) for i in (1, 4))
            and all(type(f[i]) is nn.ReLU for i in (2, 5))
            and all(_is_max_pool2(f[i]) for i in (3, 6))
        )
        return standard and not _has_hooks(f)

    @torch.jit.unused
    def _forward_features_fast(self, x: Tensor) -> Tensor:
        """`self.features(x)`, computed faster (the module docstring); in eval mode, bit for bit."""
        f = self.features
        pad = f[0].size - x.shape[-1]
        square = x.shape[-2] == x.shape[-1] and pad >= 0 and pad % 2 == 0
        if self.training and square and polyphase_applies(x, 5, pad // 2):
            x = conv_relu_max_pool_2x2(x, f[1].weight, f[1].bias, pad // 2)  # (B, 6, 14, 14)
        else:  # eval mode, an odd padding, or an image larger than 32 (PadTo says so)
            x = relu_max_pool_2x2(f[1](f[0](x)))
        x = f[4](x).contiguous(memory_format=torch.channels_last)  # (B, 16, 10, 10): the docstring says why
        return F.relu(F.max_pool2d(x, 2))  # (B, 16, 5, 5), channels-last

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(x, 1)  # (B, 400)
        for i, layer in enumerate(self.classifier):  # fc1, act, fc2, act: (B, 84); then the classifier
            if i < 4 or not pre_logits:
                x = layer(x)
        return x

    def group_matcher(self) -> dict[str, list[str]]:
        return {
            "conv1": ["features.1"],
            "conv2": ["features.4"],
            "fc1": ["classifier.0"],
            "fc2": ["classifier.2"],
            "head": ["classifier.4"],
        }


# --- LeNet-5 as published in 1998 ------------------------------------------------------------


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a) with A = 1.7159, S = 2/3 (appendix A): f(1) = 1, f(-1) = -1."""

    def forward(self, x: Tensor) -> Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class EuclideanRBF(nn.Module):
    """Output layer: y_i = sum_j (x_j - w_ij)^2, with fixed (not trained) prototypes w_i in {-1, +1}^84.

    The paper's prototypes are stylised 7x12 bitmaps of the characters; lacking the bitmaps we draw a
    fixed random +-1 code per class from a seeded generator (same idea: far-apart targets in F6 space).
    """

    def __init__(self, in_features: int, num_classes: int, seed: int = 1998):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, 2, (num_classes, in_features), generator=gen).float() * 2 - 1
        self.register_buffer("prototypes", codes)
        self.in_features, self.out_features = in_features, num_classes

    def forward(self, x: Tensor) -> Tensor:
        # (B, F) vs (K, F) -> (B, K) squared distances
        return (x.unsqueeze(1) - self.prototypes.unsqueeze(0)).pow(2).sum(-1)


class LeNet5_1998(ZooModel):
    """LeNet-5 as published (C1, S2, C3, S4, C5, F6, RBF output): 60,000 trainable parameters.

    C1 (156) + S2 (12) + C3 (1,516) + S4 (32) + C5 (48,120) + F6 (10,164) = 60,000; the output
    layer's prototypes are fixed buffers, not parameters.

    Loss and logits: the RBF units output squared Euclidean distances y_k >= 0 to each class's
    prototype; the paper minimises the distance of the correct class (plus a term pushing the others
    apart, its eq. 9). `forward` returns logits = -y_k, so the nearest prototype has the largest logit
    and ordinary cross-entropy on these logits is exactly the paper's eq. 9 with j = 0 (the correct
    class's penalty y_correct plus log-sum-exp of -y over the classes). `argmax` picks the nearest
    prototype, as the paper's classifier does.
    """

    classifier_path = "output"
    first_conv = "features.1"
    layer_names = {  # the paper's (sec. II.B)
        "features.1": "C1", "features.3": "S2", "features.5": "C3", "features.7": "S4", "features.9": "C5",
        "f6.0": "F6", "output": "output",
    }  # fmt: skip

    def __init__(self, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 120, 84
        self.features = nn.Sequential(
            PadTo(32),
            nn.Conv2d(in_chans, 6, 5), ScaledTanh(),  # C1 (B, 6, 28, 28)
            Subsampling(6), ScaledTanh(),  # S2 (B, 6, 14, 14)
            PartialConv(), ScaledTanh(),  # C3 (B, 16, 10, 10)
            Subsampling(16), ScaledTanh(),  # S4 (B, 16, 5, 5)
            nn.Conv2d(16, 120, 5), ScaledTanh(),  # C5 (B, 120, 1, 1)
        )  # fmt: skip
        self.f6 = nn.Sequential(nn.Linear(120, 84), ScaledTanh())
        self.output = EuclideanRBF(84, num_classes)
        self.set_feature_info([("features.4", 6, 2), ("features.8", 16, 4), ("features.10", 120, 32)])

    def _new_classifier(self, num_classes: int) -> nn.Module:
        return EuclideanRBF(self.head_hidden_size, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.f6(torch.flatten(x, 1))
        if pre_logits or self.num_classes == 0:  # num_classes 0: `output` is nn.Identity
            return x
        return -self.output(x)

    def group_matcher(self) -> dict[str, list[str]]:
        return {
            "c1": ["features.1"],
            "s2": ["features.3"],
            "c3": ["features.5"],
            "s4": ["features.7"],
            "c5": ["features.9"],
            "f6": ["f6"],
            "head": ["output"],
        }


MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)  # the data LeNet-5 was made for
_LENET = dict(family="lenet", paper=PAPER, in_chans=1, num_classes=10, mean=MNIST_MEAN, std=MNIST_STD)


@register_model(**_LENET, input_size=28, min_size=28)
def lenet5(
    *, num_classes: int = 10, in_chans: int = 1, activation: str = "relu", pool: str = "max"
) -> LeNet5:
    """The lecture's LeNet-5 (ReLU and max-pooling by default; `activation="tanh"`, `pool="avg"` for classic)."""
    return LeNet5(num_classes=num_classes, in_chans=in_chans, activation=activation, pool=pool)


@register_model(**_LENET, input_size=32, min_size=28)
def lenet5_1998(*, num_classes: int = 10, in_chans: int = 1) -> LeNet5_1998:
    """LeNet-5 exactly as LeCun et al. 1998 published it (see `LeNet5_1998`)."""
    return LeNet5_1998(num_classes=num_classes, in_chans=in_chans)
