"""Op-level tracing for `summarize`: receptive field and jump of every tensor, multiply-accumulates.

Why trace ops (a `TorchDispatchMode` sees every aten op a forward pass runs) rather than reason per module:
convolutions and pools hidden inside custom layers (LeNet-1998's `Subsampling` is an `avg_pool2d`, its
`PartialConv` sixteen `conv2d`s) and merges that are no module at all (Inception's `torch.cat`, ResNet's
`out + identity`, `torch.flatten`) are all seen the same way, so branched networks need no special case.

Receptive field bookkeeping, per spatial dimension, in input pixels (the input image has rf 1, jump 1):
  1. A kernel op (convolution, max/avg pool) with kernel k, stride s, dilation d maps
     rf_out = rf_in + d (k - 1) jump_in and jump_out = jump_in s. Padding moves the field, not its size.
  2. A global op (a pool to 1x1, a mean/sum over the spatial dimensions, a reshape that merges them, as
     `flatten` before a classifier does) gives every output the whole input: `WHOLE_INPUT`.
  3. Every other op (activations, normalisation, padding, indexing, `cat`, `+`) takes, per dimension,
     the largest rf and jump among its inputs. Exact for elementwise ops and for the merges of
     Inception/ResNet, whose branches are centred on the same pixel (the merged field is the largest one).
Approximations: an adaptive pool to a size that does not divide its input uses its largest bin as kernel
and the floor of the ratio as stride; transposed convolutions and upsampling fall under rule 3.

MACs count the multiply-accumulates of convolutions (output elements x in_channels/groups x kernel
area) and of matrix products (`mm`, `addmm`, `bmm`, ...: what `nn.Linear` and `@` run), wherever they run.
Bias additions, normalisation, activations, pooling and other elementwise work count 0.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["WHOLE_INPUT", "Field", "OpTracer"]

WHOLE_INPUT = "all"  # the receptive field of an output that depends on every input pixel


@dataclass(frozen=True)
class Field:
    """Receptive field and jump (cumulative stride) per spatial dimension, in input pixels.

    `rf is None` means the whole input (after a global pool or a flatten); `jump` is then None too.
    """

    rf: tuple[int, ...] | None
    jump: tuple[int, ...] | None

    @property
    def is_global(self) -> bool:
        return self.rf is None


GLOBAL = Field(None, None)

_CONV = {"convolution", "_convolution"}
_POOL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
}  # fmt: skip
_ADAPTIVE = {
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "_adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
}  # fmt: skip
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "var", "std", "logsumexp"}
_RESHAPE = {"view", "_unsafe_view", "reshape"}


def _expand(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    """An int or list argument of a pool/conv as one value per spatial dimension."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    return value * n if len(value) == 1 else value[-n:]


def _arg(args: tuple, kwargs: dict, index: int, name: str, default):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def apply_kernel(field: Field, kernel, stride, dilation=1) -> Field:
    """Rule 1: a sliding window of `kernel` (stride, dilation) applied to a tensor with `field`."""
    if field.is_global:
        return field
    n = len(field.rf)
    k, d = _expand(kernel, n), _expand(dilation, n)
    s = _expand(stride, n) if stride else k  # pools take an empty stride to mean stride = kernel
    rf = tuple(r + di * (ki - 1) * j for r, j, ki, di in zip(field.rf, field.jump, k, d, strict=True))
    return Field(rf, tuple(j * si for j, si in zip(field.jump, s, strict=True)))


def merge(fields: Sequence[Field]) -> Field | None:
    """Rule 3: the largest rf and jump per dimension among the inputs (None if no input is traced)."""
    if not fields:
        return None
    if any(f.is_global for f in fields):
        return GLOBAL
    n = max(len(f.rf) for f in fields)
    fields = [f for f in fields if len(f.rf) == n]
    rf = tuple(max(f.rf[i] for f in fields) for i in range(n))
    return Field(rf, tuple(max(f.jump[i] for f in fields) for i in range(n)))


def _adaptive(field: Field, in_size: Sequence[int], out_size: Sequence[int]) -> Field:
    """An adaptive pool: global to 1x1, identity at equal size, else its largest bin as kernel."""
    if field.is_global or all(o == 1 for o in out_size):
        return GLOBAL
    kernel, stride = [], []
    for i, o in zip(in_size, out_size, strict=True):
        # bin t spans [floor(t i / o), ceil((t + 1) i / o)), as PyTorch's adaptive pools cut it
        kernel.append(max(-((-(t + 1) * i) // o) - (t * i) // o for t in range(o)))
        stride.append(max(i // o, 1))
    return apply_kernel(field, kernel, stride)


def _reduces_space(field: Field, inp: Tensor, dims) -> bool:
    """Whether a reduction over `dims` (None: all) of a traced tensor reduces a spatial dimension."""
    n = len(field.rf)
    if dims is None or dims == []:
        return True
    dims = [dims] if isinstance(dims, int) else dims
    return any(d % inp.ndim >= inp.ndim - n for d in dims)


def conv_macs(inp: Tensor, weight: Tensor, out: Tensor, transposed: bool) -> int:
    """out elements x (in_channels / groups) x kernel area; a transposed conv scatters each input."""
    per_position = weight.shape[1] * math.prod(weight.shape[2:])
    return (inp.numel() if transposed else out.numel()) * per_position


def matmul_macs(name: str, args: tuple) -> int:
    """m n k for a product of (m, k) and (k, n) matrices, times the batch for `bmm`."""
    if name in ("addmm", "baddbmm", "addmv"):
        args = args[1:]  # (bias, a, b)
    a, b = args[0], args[1]
    if name in ("mv", "addmv", "dot"):
        return a.numel()
    batch = a.shape[0] if name in ("bmm", "baddbmm") else 1
    return batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "dot"}


class OpTracer(TorchDispatchMode):
    """Records a `Field` for every tensor the forward pass makes and adds up MACs as ops run.

    Use: ``with OpTracer() as t: t.set_field(x, Field((1, 1), (1, 1))); model(x)``; read `t.macs`
    (running total, whole batch) and `t.field(tensor)`. Fields are kept by tensor identity with a weak
    reference, so freed tensors cost nothing and a recycled `id` is never mistaken for an old tensor.
    """

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0
        self._fields: dict[int, tuple[weakref.ref, Field]] = {}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # A summary never runs under torch.compile: opting out of the wrapper that disables Dynamo in
        # `__torch_dispatch__` saves importing torch._dynamo (2-3 s) on the first use. If a later torch
        # drops this hook, the override is simply never called.
        return False

    def field(self, t: Tensor) -> Field | None:
        entry = self._fields.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def set_field(self, t: Tensor, field: Field) -> None:
        self._fields[id(t)] = (weakref.ref(t), field)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if name in _CONV:
            self.macs += conv_macs(args[0], args[1], out, bool(_arg(args, kwargs, 6, "transposed", False)))
        elif name in _MATMUL:
            self.macs += matmul_macs(name, args)
        field = self._output_field(name, func._overloadname, args, kwargs, out)
        if field is not None:
            for t in tree_leaves(out):
                if isinstance(t, Tensor):
                    self.set_field(t, field)
        return out

    def _output_field(self, name: str, overload: str, args: tuple, kwargs: dict, out) -> Field | None:
        known = [
            (t, f) for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor) and (f := self.field(t))
        ]
        if not known:
            return None  # made from parameters or constants only
        inp, first = known[0]
        result = out[0] if isinstance(out, tuple | list) else out
        if name in _CONV and not _arg(args, kwargs, 6, "transposed", False):
            stride, dilation = _arg(args, kwargs, 3, "stride", 1), _arg(args, kwargs, 5, "dilation", 1)
            return apply_kernel(first, args[1].shape[2:], stride, dilation)
        if name in _POOL:
            kernel, stride = _arg(args, kwargs, 1, "kernel_size", 1), _arg(args, kwargs, 2, "stride", None)
            dilation = _arg(args, kwargs, 4, "dilation", 1) if name.startswith("max") else 1
            return apply_kernel(first, kernel, stride, dilation)
        if name in _ADAPTIVE and not first.is_global:
            n = len(first.rf)
            return _adaptive(first, inp.shape[-n:], result.shape[-n:])
        is_reduction = name in _REDUCE and not (name in ("max", "min") and overload == "other")
        if is_reduction and not first.is_global:
            dims = _arg(args, kwargs, 1, "dim", None)
            if isinstance(dims, bool) or (overload == "default" and name in ("mean", "sum", "var", "std")):
                dims = None  # a reduction over every element (`var`'s second argument is `unbiased`)
            if _reduces_space(first, inp, dims):
                return GLOBAL
        if name in _RESHAPE and not first.is_global:
            n = len(first.rf)
            if tuple(result.shape[-n:]) != tuple(inp.shape[-n:]):
                return GLOBAL  # spatial dimensions merged (flatten before a classifier)
        return merge([f for _, f in known])
