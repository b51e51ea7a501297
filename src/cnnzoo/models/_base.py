"""The one contract every cnnzoo model follows (after timm's and torchvision's), written once.

    forward(x) == forward_head(forward_features(x))
    forward_features(x) -> the last feature map, `num_features` channels
    forward_head(x, pre_logits=True) -> the `head_hidden_size`-wide vector the classifier reads
        (`num_features` after global pooling; the hidden fc width for LeNet, AlexNet and VGG)
    get_classifier() -> the last layer; reset_classifier(n) swaps it for a fresh one with n outputs;
        n = 0 makes it `nn.Identity`, so `forward` gives the pre-logits vector (timm's convention);
        reset_classifier(0, global_pool="") keeps the unpooled map where the head pools globally
    forward_intermediates(x, indices) -> per-stage feature maps, described by `feature_info`
    group_matcher() -> ordered {group name: [module-name prefixes]}, stem first, "head" last
    pretrained_cfg -> input size, mean/std, first conv and classifier module names (timm's keys);
        default_cfg is timm's older name for it, with `pool_size` (forward_features' map at input_size)
    feature_info -> a `FeatureInfo`: the stages' dicts, with timm's channels() / reduction() / module_name()

Freezing, layer-wise learning rates, feature caching and loading foreign weights (`cnnzoo.transfer`)
rely only on this. A subclass sets `num_features`, `head_hidden_size`, `classifier_path` and
`first_conv` (dotted module names), `feature_info` (via `set_feature_info`) and implements
`forward_features`, `forward_head` and `group_matcher`.

`create_model(name, features_only=True)` is a `FeatureListNet`: the model traced with torch.fx down to its
stages' outputs, so that it too compiles with TorchScript and traces again with FX (torchvision's
`create_feature_extractor`), as timm's feature models do.

Every model compiles with `torch.jit.script`, traces with `torch.fx.symbolic_trace`, exports with
`torch.export` (dynamic batch) and to ONNX. That is why this module does not use
`from __future__ import annotations` (TorchScript reads the annotations as types, not strings), why heads
loop over their `nn.Sequential` instead of slicing it (a slice is a new module, unknown to FX), and why
training-only fast paths are guarded by `torch.jit.is_scripting()`.
"""

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = [
    "FeatureInfo",
    "FeatureListNet",
    "ZooModel",
    "feature_indices",
    "group_of",
    "parameter_groups",
    "pool_stages",
]


class FeatureInfo(list):
    """`feature_info`: one dict per stage, {"module", "num_chs", "reduction"}, in forward order, with the
    accessors of timm's `FeatureInfo` (its tests and feature pyramids call them): `channels()`,
    `reduction()`, `module_name()`, `get(key)`, `get_dicts()`; `idx` an index or a list of them."""

    def get(self, key: str, idx: int | list[int] | tuple[int, ...] | None = None):
        if idx is None:
            return [f[key] for f in self]
        if isinstance(idx, list | tuple):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def get_dicts(self, keys: list[str] | None = None, idx: int | list[int] | None = None):
        pick = (lambda f: dict(f)) if keys is None else (lambda f: {k: f[k] for k in keys})
        if idx is None:
            return [pick(f) for f in self]
        if isinstance(idx, list | tuple):
            return [pick(self[i]) for i in idx]
        return pick(self[idx])

    def channels(self, idx: int | list[int] | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | list[int] | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | list[int] | None = None):
        return self.get("module", idx)


class ZooModel(nn.Module):
    num_classes: int
    num_features: int  # channels of forward_features' output (timm's meaning)
    head_hidden_size: int  # width of forward_head(x, pre_logits=True)
    classifier_path: str = "fc"  # dotted module name of the final layer
    first_conv: str = "conv1"  # dotted module name of the first convolution
    global_pool: str = "avg"  # "" keeps the map (models whose head pools globally, with num_classes=0)
    # The names the lecture (or the paper) gives the layers, {dotted module name: name}: LeNet-5's C1, S2,
    # ..., F6, output. Empty: the module names are all the names there are. The served page labels so.
    layer_names: ClassVar[dict[str, str]] = {}
    # Python-side metadata that TorchScript need not (and cannot) type
    __jit_ignored_attributes__ = ["pretrained_cfg", "feature_info", "default_cfg"]
    __jit_unused_properties__ = ["default_cfg"]

    def __init__(self) -> None:
        super().__init__()
        self.global_pool = "avg"  # an instance attribute: TorchScript does not see class attributes

    def forward_features(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> feature map
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def group_matcher(self) -> dict[str, list[str]]:
        raise NotImplementedError

    # --- timm's metadata -------------------------------------------------------------------------

    @property
    def default_cfg(self) -> dict:
        """`pretrained_cfg` under timm's older name, with `pool_size`: the (H, W) of `forward_features`'
        map at `input_size` (measured once, on the meta device, then kept in `pretrained_cfg`)."""
        cfg = self.pretrained_cfg
        if cfg.get("pool_size") is None:
            cfg["pool_size"] = self.feature_map_size(cfg["input_size"][-1])
        return cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict) -> None:
        self.pretrained_cfg = cfg

    @torch.jit.unused
    def feature_map_size(self, side: int) -> tuple[int, int]:
        """(H, W) of `forward_features`' map for a `side` x `side` input, computed on the meta device: the
        shapes alone, no arithmetic and no memory, whatever the model's own device."""
        meta = {f"model.{k}": t.to("meta") for k, t in [*self.named_parameters(), *self.named_buffers()]}
        x = torch.empty(1, self.get_submodule(self.first_conv).in_channels, side, side, device="meta")
        with torch.no_grad():
            out = torch.func.functional_call(_Features(self), meta, (x,))
        return int(out.shape[-2]), int(out.shape[-1])

    # --- classifier ------------------------------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_path)

    def classifier_names(self) -> tuple[str, ...]:
        """Every module whose outputs are the classes: the classifier, plus auxiliary ones (Inception)."""
        return (self.classifier_path,)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the final layer by a freshly initialised one with `num_classes` outputs.

        `num_classes=0` puts `nn.Identity` there: the model then outputs its pre-logits features.
        `global_pool="avg"` or `""` (no pooling: the (B, C, H, W) map) where the head pools globally.
        """
        if num_classes < 0:
            raise ValueError(f"num_classes must be 0 (no classifier) or more, got {num_classes}")
        if global_pool is not None:
            self.set_global_pool(global_pool, num_classes)
        elif self.global_pool == "" and num_classes > 0:
            raise ValueError("a classifier needs pooled features: pass global_pool='avg' as well")
        new = self._new_classifier(num_classes) if num_classes > 0 else nn.Identity()
        self._set_submodule(self.classifier_path, new)
        self.num_classes = num_classes
        if hasattr(self, "pretrained_cfg"):
            self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes}

    def set_global_pool(self, global_pool: str, num_classes: int) -> None:
        pooled = type(self).global_pool_options()
        if global_pool not in pooled:
            raise ValueError(
                f"{type(self).__name__} takes global_pool in {pooled}, got {global_pool!r}"
                + ("" if "" in pooled else " (its head flattens a fixed-size map, it does not pool globally)")
            )
        if global_pool == "" and num_classes > 0:
            raise ValueError("global_pool='' keeps the (B, C, H, W) map, which no linear classifier reads: "
                             "use num_classes=0 with it")  # fmt: skip
        self.global_pool = global_pool

    @classmethod
    def global_pool_options(cls) -> tuple[str, ...]:
        return ("avg",)

    def _new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.head_hidden_size, num_classes)

    def _set_submodule(self, path: str, module: nn.Module) -> None:
        parent_path, _, child = path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        setattr(parent, child, module)

    # --- per-stage features ----------------------------------------------------------------------

    def set_feature_info(self, stages: list[tuple[str, int, int]]) -> None:
        """[(module name, channels, reduction)]: the modules whose outputs are the stages' feature maps,
        in forward order; the last one's output is `forward_features`' output."""
        self.feature_info = FeatureInfo({"module": m, "num_chs": c, "reduction": r} for m, c, r in stages)

    @torch.jit.unused
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        intermediates_only: bool = False,
        output_fmt: str = "NCHW",
    ) -> Any:
        """Per-stage feature maps (timm's signature): `indices` an int n (the last n stages), a list of
        stage indices (negative from the end), or None (all). Returns `(final features, [maps])`, or the
        maps alone with `intermediates_only`. The maps are the outputs of `feature_info`'s modules."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r}: only NCHW is produced")
        take = feature_indices(len(self.feature_info), indices)
        names = [self.feature_info[i]["module"] for i in take]
        found: dict[str, Tensor] = {}
        hooks = [
            self.get_submodule(name).register_forward_hook(
                lambda _m, _i, out, name=name: found.__setitem__(name, out)
            )
            for name in dict.fromkeys(names)
        ]
        try:
            final = self.forward_features(x)
        finally:
            for h in hooks:
                h.remove()
        maps = [found[name] for name in names]
        return maps if intermediates_only else (final, maps)


def pool_stages(seq: nn.Sequential, prefix: str) -> list[tuple[str, int, int]]:
    """`set_feature_info` stages of a plain conv/pool stack: one ending at each pooling layer, with the
    channels of the last convolution before it and the product of the strides so far."""
    stages, chans, reduction = [], 0, 1
    for i, m in enumerate(seq):
        if isinstance(m, nn.Conv2d):
            chans, reduction = m.out_channels, reduction * m.stride[0]
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            stride = m.stride if isinstance(m.stride, int) else m.stride[0]
            reduction *= stride
            stages.append((f"{prefix}.{i}", chans, reduction))
    return stages


def feature_indices(n: int, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
    """Stage indices in 0..n-1 for timm's `indices` argument (an int takes the last ones)."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"indices={indices}: the model has {n} stages")
        return list(range(n - indices, n))
    out = []
    for i in indices:
        if not -n <= i < n:
            raise ValueError(f"stage index {i} out of range: the model has {n} stages")
        out.append(i % n)
    return out


class _Features(nn.Module):
    """`model.forward_features` as a module's forward (for `torch.func.functional_call`)."""

    def __init__(self, model: ZooModel):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)


class _StageTracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping each stage module whole: one node whose output is the stage's map."""

    def __init__(self, stages: list[str]):
        super().__init__()
        self.stages = frozenset(stages)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.stages or super().is_leaf_module(m, module_qualified_name)


def feature_graph(model: ZooModel, modules: list[str]) -> torch.fx.GraphModule:
    """`model`'s forward traced with torch.fx and cut after `modules`: a graph module returning their
    outputs as a list, holding only the layers they need (same names, same objects as in `model`).

    Traced in eval mode, so that Python branches on `self.training` (fast training paths, auxiliary
    heads) record the standard ops; the layers themselves still follow `train()` / `eval()`."""
    training = model.training
    model.eval()
    try:
        graph = _StageTracer(modules).trace(model)
    finally:
        model.train(training)
    calls = {n.target: n for n in graph.nodes if n.op == "call_module" and n.target in modules}
    missing = [m for m in modules if m not in calls]  # (a module called twice: its last call, as a hook)
    if missing:
        raise ValueError(f"{type(model).__name__}.forward never calls the stage module(s) {missing}")
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = ([calls[m] for m in modules],)
    output.type = None  # was forward's `-> Tensor`; TorchScript reads the list's type off the code
    features = torch.fx.GraphModule(model, graph, class_name=f"{type(model).__name__}Features")
    features.graph.eliminate_dead_code()  # the head, and any stage after the last one asked for
    features.delete_all_unused_submodules()
    features.recompile()
    return features.train(training)


class FeatureListNet(nn.Module):
    """`create_model(name, features_only=True)`: forward returns the per-stage maps as a list.

    `model` is the network traced down to those stages (`feature_graph`): its layers keep their names
    under `model.`, the head is gone, and the whole compiles with TorchScript and traces with FX.
    `feature_info` describes the maps returned (module, channels, reduction); `pretrained_cfg` (and
    `default_cfg`) is the model's, without the classifier's keys, as timm's feature models carry it.
    """

    __jit_ignored_attributes__ = ["pretrained_cfg", "default_cfg", "feature_info"]

    def __init__(self, model: ZooModel, out_indices: int | list[int] | tuple[int, ...] | None = None):
        super().__init__()
        self.out_indices = feature_indices(len(model.feature_info), out_indices)
        self.feature_info = FeatureInfo(model.feature_info[i] for i in self.out_indices)
        cfg = getattr(model, "pretrained_cfg", None)
        if cfg is not None:
            cfg = model.default_cfg  # with pool_size
            drop = ("num_classes", "classifier", "aux_classifiers", "global_pool")
            self.pretrained_cfg = self.default_cfg = {k: v for k, v in cfg.items() if k not in drop}
        self.model = feature_graph(model, [f["module"] for f in self.feature_info])

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.model(x)


def group_of(param_name: str, groups: dict[str, list[str]]) -> str | None:
    """The group whose prefix matches `param_name` (the longest prefix wins)."""
    best, best_len = None, -1
    for group, prefixes in groups.items():
        for prefix in prefixes:
            if (param_name == prefix or param_name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = group, len(prefix)
    return best


def parameter_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """[(group name, parameter names)] in stem-to-head order; every parameter in exactly one group."""
    groups = model.group_matcher()
    members: dict[str, list[str]] = {g: [] for g in groups}
    for name, _ in model.named_parameters():
        group = group_of(name, groups)
        if group is None:
            raise ValueError(f"parameter {name} of {type(model).__name__} belongs to no group")
        members[group].append(name)
    return [(g, names) for g, names in members.items() if names]
