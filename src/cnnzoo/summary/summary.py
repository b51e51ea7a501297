"""`summarize`: one row per layer with output shape, parameter arithmetic, MACs, receptive field and jump.

How it works:
  1. Hooks on every module record each call (start/end, output, the MAC counter before and after) while
     an `OpTracer` (see `trace.py`) follows the receptive field of every tensor and counts MACs per op.
     The forward pass runs once in eval mode under `torch.no_grad`; the modules' modes are restored.
  2. A row is a call of a leaf module or of a module that owns parameters itself (LeNet-1998's
     `Subsampling`, `PartialConv`), plus any container whose own code ran MACs outside its children.
     A row's parameters are its module's own plus those of descendants that never ran as rows
     (`PartialConv.weights`, a `ParameterList`). Every tensor is counted once, by the first row that
     reaches it: a tied weight and a module called twice are not counted again, so the rows add up to
     `sum(p.numel() for p in model.parameters())`. Parameters of modules the eval forward never runs
     (an auxiliary head) get a "not run" row.
  3. With `depth`, rows deeper than `depth` collapse into their ancestor at that depth: sums of
     parameters and MACs, and the ancestor's own output shape and receptive field when it ran.

Numbers are per image: MACs and activation memory are divided by `batch_size`. Activation memory adds
the bytes of every tensor a module returns that is new storage (not its input or a sub-module's
output returned again, so in-place activations, `Flatten` and `Identity` add nothing).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from ..errors import CnnzooError
from ..models import create_model, model_info
from ..models._builder import check_input_size
from . import probe
from .trace import WHOLE_INPUT, Field, OpTracer

__all__ = ["LayerRow", "ModelSummary", "summarize", "summarize_model"]


@dataclass
class LayerRow:
    name: str  # dotted module name; "" for the model itself
    type: str  # the module's class name
    depth: int  # number of dotted parts of `name` (the model itself is 0)
    output_shape: tuple[int, ...] | None  # first output tensor without the batch dimension; None: not run
    params: int  # parameters counted in this row (each tensor once in the whole summary)
    param_formula: str  # the arithmetic, e.g. "6 x (1x5x5 + 1) = 156"
    macs: int  # multiply-accumulates per image
    receptive_field: tuple[int, ...] | str | None  # per spatial dim in input pixels; "all"; None: unknown
    jump: tuple[int, ...] | None  # cumulative stride per spatial dim in input pixels; None after "all"
    trainable: int  # how many of `params` have requires_grad


@dataclass
class ModelSummary:
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    frozen_params: int
    total_macs: int  # per image
    activation_bytes: int  # per image
    input_size: tuple[int, ...]  # (C, H, W)
    model_name: str = ""
    depth: int | None = None


@dataclass(eq=False)
class _Call:
    """One run of one module's forward."""

    module: nn.Module
    name: str
    start: int
    macs_start: int
    end: int = -1
    macs_end: int = 0
    children: list[_Call] = field(default_factory=list)
    output_shape: tuple[int, ...] | None = None
    out_field: Field | None = None
    new_bytes: int = 0
    outputs: list[weakref.ref] = field(default_factory=list)

    @property
    def own_macs(self) -> int:
        return self.macs_end - self.macs_start - sum(c.macs_end - c.macs_start for c in self.children)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def _is_row_module(module: nn.Module) -> bool:
    return next(module.children(), None) is None or next(module.parameters(recurse=False), None) is not None


def _storage(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _Recorder:
    """Module hooks that build the tree of `_Call`s while the `OpTracer` runs."""

    def __init__(self, tracer: OpTracer, batch_size: int):
        self.tracer, self.batch_size = tracer, batch_size
        self.stack: list[_Call] = []
        self.calls: list[_Call] = []
        self.tick = 0

    def attach(self, model: nn.Module) -> list:
        handles = []
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(lambda m, args, n=name: self.pre(m, n)))
            handles.append(module.register_forward_hook(self.post))
        return handles

    def pre(self, module: nn.Module, name: str) -> None:
        self.tick += 1
        call = _Call(module, name, self.tick, self.tracer.macs)
        if self.stack:
            self.stack[-1].children.append(call)
        self.stack.append(call)
        self.calls.append(call)

    def post(self, module: nn.Module, args, output) -> None:
        self.tick += 1
        call = self.stack.pop()
        call.end, call.macs_end = self.tick, self.tracer.macs
        tensors = [t for t in tree_leaves(output) if isinstance(t, Tensor)]
        if tensors:
            first = tensors[0]
            batched = first.ndim > 0 and first.shape[0] == self.batch_size
            call.output_shape = tuple(first.shape[1:] if batched else first.shape)
            call.out_field = self.tracer.field(first)
        # storage already counted: the inputs, and sub-modules' outputs still alive (a returned child output)
        old = {_storage(t) for t in tree_leaves(args) if isinstance(t, Tensor)}
        old |= {_storage(t) for c in call.children for r in c.outputs if (t := r()) is not None}
        for t in tensors:
            if _storage(t) not in old:
                call.new_bytes += t.numel() * t.element_size()
                old.add(_storage(t))
        call.outputs = [weakref.ref(t) for t in tensors]


# --- parameter arithmetic ---------------------------------------------------------------------


def _shape_sum(shapes: list[torch.Size]) -> str:
    """Parameter shapes as a sum, equal shapes grouped: "2 x 6", "6 x (1x3x5x5) + 16"."""
    groups: dict[tuple[int, ...], int] = {}
    for s in shapes:
        groups[tuple(s)] = groups.get(tuple(s), 0) + 1
    parts = []
    for shape, n in sorted(groups.items(), key=lambda item: -len(item[0])):  # kernels before biases
        dims = "x".join(str(d) for d in shape) or "1"
        parts.append(dims if n == 1 else f"{n} x {dims}" if len(shape) <= 1 else f"{n} x ({dims})")
    return " + ".join(parts)


def _param_formula(module: nn.Module, counted: list[tuple[str, nn.Parameter]], shared: list[str]) -> str:
    """The arithmetic behind a row's parameter count; `shared` notes tensors another row counted."""
    total = sum(p.numel() for _, p in counted)
    names = [n for n, _ in counted]
    plain = not shared and names in (["weight"], ["weight", "bias"])
    if plain and isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        inner = "x".join(str(d) for d in module.weight.shape[1:])  # in/groups x kh x kw
        text = f"{module.weight.shape[0]} x ({inner}{' + 1' if len(names) == 2 else ''})"
    elif plain and isinstance(module, nn.Linear):
        text = f"{module.out_features} x ({module.in_features}{' + 1' if len(names) == 2 else ''})"
    else:
        text = _shape_sum([p.shape for _, p in counted])
    if text and text != str(total):
        text += f" = {total:,}"
    if shared:
        note = "shares " + ", ".join(shared)
        text = f"{text}; {note}" if text else note
    return text


def _own_params(module: nn.Module, row_ids: set[int], prefix: str = "") -> list[tuple[str, nn.Parameter]]:
    """The module's parameters, less those of descendants that ran as rows of their own."""
    found = [(prefix + n, p) for n, p in module.named_parameters(recurse=False)]
    for child_name, child in module.named_children():
        if id(child) not in row_ids:
            found += _own_params(child, row_ids, f"{prefix}{child_name}.")
    return found


# --- rows ---------------------------------------------------------------------------------------


def _depth(name: str) -> int:
    return 0 if not name else name.count(".") + 1


def _field_columns(f: Field | None) -> tuple[tuple[int, ...] | str | None, tuple[int, ...] | None]:
    if f is None:
        return None, None
    return (WHOLE_INPUT, None) if f.is_global else (f.rf, f.jump)


def _rows_from_calls(model: nn.Module, root: _Call, batch: int) -> list[tuple[LayerRow, _Call | None]]:
    """Step 2 of the module docstring: (row, its call) in call order, then the "not run" rows."""
    row_ids = {id(c.module) for c in root.walk() if _is_row_module(c.module)}
    counted_by: dict[int, str] = {}  # id(parameter) -> name of the row that counted it
    first_call: dict[int, str] = {}  # id(module) -> name of its first row
    rows: list[tuple[LayerRow, _Call | None]] = []
    for call in root.walk():
        is_row = id(call.module) in row_ids
        if not is_row and call.own_macs == 0:
            continue
        label = call.name or "(model)"
        counted: list[tuple[str, nn.Parameter]] = []
        shared: list[str] = []
        own = _own_params(call.module, row_ids) if is_row else []
        if is_row and id(call.module) in first_call:
            formula = f"called again: counted at {first_call[id(call.module)]}" if own else ""
        else:
            first_call[id(call.module)] = label
            for pname, p in own:
                if id(p) in counted_by:
                    if counted_by[id(p)] != label:
                        shared.append(f"{pname} with {counted_by[id(p)]}")
                    continue
                counted_by[id(p)] = label
                counted.append((pname, p))
            formula = _param_formula(call.module, counted, shared)
        rf, jump = _field_columns(call.out_field)
        row = LayerRow(
            name=call.name, type=type(call.module).__name__, depth=_depth(call.name),
            output_shape=call.output_shape, params=sum(p.numel() for _, p in counted), param_formula=formula,
            macs=call.own_macs // batch, receptive_field=rf, jump=jump,
            trainable=sum(p.numel() for _, p in counted if p.requires_grad),
        )  # fmt: skip
        rows.append((row, call))
    return rows + [(r, None) for r in _not_run_rows(model, root, counted_by)]


def _not_run_rows(model: nn.Module, root: _Call, counted_by: dict[int, str]) -> list[LayerRow]:
    """Parameters no row reached, grouped under the highest module that never ran."""
    ran = {c.name for c in root.walk()}
    groups: dict[str, list[nn.Parameter]] = {}
    for pname, p in model.named_parameters():
        if id(p) in counted_by:
            continue
        owner = pname.rpartition(".")[0]
        while "." in owner and owner.rpartition(".")[0] not in ran:
            owner = owner.rpartition(".")[0]
        groups.setdefault(owner, []).append(p)
    rows = []
    for owner, params in groups.items():
        total = sum(p.numel() for p in params)
        formula = f"not run: {_shape_sum([p.shape for p in params])} = {total:,}"
        trainable = sum(p.numel() for p in params if p.requires_grad)
        kind = type(model.get_submodule(owner)).__name__
        rows.append(LayerRow(owner, kind, _depth(owner), None, total, formula, 0, None, None, trainable))
    return rows


def _collapse(model: nn.Module, entries: list[tuple[LayerRow, _Call | None]], depth: int, calls: list[_Call]):
    """Step 3: merge runs of consecutive rows deeper than `depth` that fall in the same ancestor call."""
    groups: list[tuple[object, list[LayerRow], _Call | None]] = []
    for row, call in entries:
        if row.depth <= depth:
            groups.append((None, [row], None))
            continue
        ancestor = ".".join(row.name.split(".")[:depth])
        outer = None
        if call is not None:  # the call of `ancestor` this row ran inside
            outer = next((c for c in calls if c.name == ancestor and c.start < call.start < c.end), None)
        key = (ancestor, id(outer))
        if groups and groups[-1][0] == key:
            groups[-1][1].append(row)
        else:
            groups.append((key, [row], outer))
    rows = []
    for key, members, outer in groups:
        if key is None:
            rows.append(members[0])
            continue
        name, last = key[0], members[-1]
        parts = [f"{r.params:,}" for r in members if r.params]
        total = sum(r.params for r in members)
        formula = " + ".join(parts) + f" = {total:,}" if 2 <= len(parts) <= 6 else ""
        if all(r.output_shape is None for r in members):
            formula = f"not run: {total:,}"
        shape, rf, jump = last.output_shape, last.receptive_field, last.jump
        if outer is not None:  # the ancestor's own output (an Inception block's concatenation)
            shape, (rf, jump) = outer.output_shape, _field_columns(outer.out_field)
        macs, trainable = sum(r.macs for r in members), sum(r.trainable for r in members)
        kind = type(model.get_submodule(name)).__name__
        rows.append(LayerRow(name, kind, depth, shape, total, formula, macs, rf, jump, trainable))
    return rows


# --- entry points -------------------------------------------------------------------------------


def _check(input_size, depth, batch_size) -> None:
    if len(input_size) != 3 or any(not isinstance(v, int) or v <= 0 for v in input_size):
        raise CnnzooError(f"input size must be three positive integers (C, H, W), got {input_size!r}")
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise CnnzooError(f"depth must be a non-negative integer, got {depth!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise CnnzooError(f"batch size must be a positive integer, got {batch_size!r}")


def summarize(
    model: nn.Module, input_size: tuple[int, int, int], depth: int | None = None, batch_size: int = 1
) -> ModelSummary:
    """Run one forward pass on random (C, H, W) images and describe every layer (see module docstring)."""
    _check(tuple(input_size), depth, batch_size)
    reference = next(iter(model.parameters()), None)
    if reference is None:
        reference = next(iter(model.buffers()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_size, generator=gen).to(device=device, dtype=dtype)

    modes = {m: m.training for m in model.modules()}
    tracer = OpTracer()
    recorder = _Recorder(tracer, batch_size)
    handles = recorder.attach(model)
    try:
        model.eval()
        with torch.no_grad(), tracer:
            tracer.set_field(x, Field((1,) * (len(input_size) - 1), (1,) * (len(input_size) - 1)))
            model(x)
    except (RuntimeError, ValueError) as e:
        size = "x".join(str(v) for v in input_size)
        raise CnnzooError(f"{type(model).__name__} cannot run on a {size} input: {e}") from e
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.train(mode)

    root = recorder.calls[0]
    entries = _rows_from_calls(model, root, batch_size)
    rows = [r for r, _ in entries] if depth is None else _collapse(model, entries, depth, recorder.calls)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelSummary(
        rows=rows, total_params=total, trainable_params=trainable, frozen_params=total - trainable,
        total_macs=(root.macs_end - root.macs_start) // batch_size,
        activation_bytes=sum(c.new_bytes for c in recorder.calls) // batch_size,
        input_size=tuple(input_size), model_name=getattr(model, "model_name", type(model).__name__), depth=depth,
    )  # fmt: skip


def summarize_model(
    name: str,
    *,
    input_size: int | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    depth: int | None = None,
) -> ModelSummary:
    """`cnnzoo summary NAME`: build a registered model and summarise it at a square input.

    `input_size` (the side), `in_chans` and `num_classes` default to the registry's values for `name`.
    """
    info = model_info(name)
    side = info.input_size if input_size is None else input_size
    check_input_size(name, side)
    chans = info.in_chans if in_chans is None else in_chans
    _check_fits(name, side, chans, num_classes)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    return summarize(model, (chans, side, side), depth=depth)


def _check_fits(name: str, side: int, chans: int, num_classes: int | None) -> None:
    """Before allocating anything: the input alone must fit in memory, the model must take the size (run on
    the meta device), and weights, input and activations together must fit; each refusal says how much."""
    shape = f"{chans}x{side}x{side}"
    available = probe.available_memory()  # looked up on the module: tests stand in a smaller machine
    smaller = f"choose a smaller --input-size ({name}'s native input is {model_info(name).input_size})"
    input_bytes = chans * side * side * 4
    if available is not None and input_bytes > available:
        raise CnnzooError(
            f"a {shape} input alone needs {probe.format_bytes(input_bytes)} of memory, {probe.format_bytes(available)} is "
            f"available: {smaller}"
        )
    fit = probe.probe_input(name, side, in_chans=chans, num_classes=num_classes)
    if fit.problem:
        raise CnnzooError(f"{name} cannot run on a {shape} input: {fit.problem}")
    if available is not None and fit.estimated_bytes > available:
        raise CnnzooError(
            f"summarising {name} on a {shape} input needs about {probe.format_bytes(fit.estimated_bytes)} of memory "
            f"(weights {probe.format_bytes(fit.param_bytes)}, input {probe.format_bytes(input_bytes)}, activations up to "
            f"{probe.format_bytes(fit.largest_activation_bytes)} each), {probe.format_bytes(available)} is available: {smaller}"
        )
