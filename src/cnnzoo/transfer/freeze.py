"""Freezing and discriminative learning rates, written once against every model's `group_matcher()`.

A model's parameters fall into named groups, stem first and "head" last (`groups`). Fine-tuning
(fastai's recipe, with the Keras lesson about BatchNorm):

1. freeze: only the last groups train (`freeze(model, "head" | "last:N" | "full" | int)`)
2. frozen BatchNorm stays in inference mode, so its running statistics (what the pretrained network
   learned about its activations) are not overwritten by the new data (`set_frozen_bn_eval`)
3. learning rates per group: one rate, a range spread geometrically from stem to head, or a layer-wise
   decay from the head down (`param_groups`)

Auxiliary classifiers (the Inception nets' group "aux") are classifiers: they train exactly when the
head trains, take the head's learning rate, and are not counted by `last:N` or by integer positions.
"""

from __future__ import annotations

import math

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..engine.frozen import set_frozen_bn_eval
from ..errors import CnnzooError
from ..models import parameter_groups

__all__ = [
    "AUX_GROUPS",
    "freeze",
    "group_table",
    "groups",
    "param_groups",
    "parse_lr",
    "parse_strategy_groups",
    "set_frozen_bn_eval",
    "trainable_groups",
    "unfreeze",
]

HEAD = "head"
AUX_GROUPS = ("aux",)  # group names of auxiliary classifiers: they follow the head


def groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """[(group name, parameter names)] stem to head; every parameter in exactly one group."""
    return parameter_groups(model)


def _ladder(model: nn.Module) -> list[str]:
    """Group names stem to head without the auxiliary classifiers: what positions and `last:N` count."""
    names = [g for g, _ in groups(model) if g not in AUX_GROUPS]
    if not names or names[-1] != HEAD:
        raise CnnzooError(f"{type(model).__name__}'s groups must end with {HEAD!r}, got {names}")
    return names


def _with_aux(model: nn.Module, trainable: set[str]) -> set[str]:
    if HEAD in trainable:
        trainable |= {g for g, _ in groups(model) if g in AUX_GROUPS}
    return trainable


def parse_strategy_groups(model: nn.Module, spec: str) -> set[str]:
    """The trainable group names for a strategy: "head", "last:N" or "full".

    "head": the head only; "last:N": the last N groups before the head, plus the head ("last:1" = the
    last stage and the head); "full": everything. N must be below the number of groups before the head
    (that many would be "full").
    """
    ladder = _ladder(model)
    stages = ladder[:-1]
    if spec == "full":
        return {g for g, _ in groups(model)}
    if spec == "head":
        return _with_aux(model, {HEAD})
    if spec.startswith("last:"):
        try:
            n = int(spec[len("last:") :])
        except ValueError:
            raise CnnzooError(f"bad strategy {spec!r}: N in last:N must be a whole number") from None
        if n < 0:
            raise CnnzooError(f"bad strategy {spec!r}: N in last:N must be 0 or more")
        if n >= len(stages):
            name = getattr(model, "model_name", type(model).__name__)
            raise CnnzooError(
                f"{spec} is too many for {name}: it has {len(stages)} groups before the head "
                f"({', '.join(stages)}), so the most is last:{len(stages) - 1}; use 'full' to train everything"
            )
        return _with_aux(model, set(stages[len(stages) - n :]) | {HEAD})
    raise CnnzooError(f"unknown strategy {spec!r} (use head, last:N or full)")


def trainable_groups(model: nn.Module, upto: int | str | None) -> set[str]:
    """Trainable group names for `freeze`'s `upto` (see there)."""
    if upto is None:
        return {g for g, _ in groups(model)}
    if isinstance(upto, str):
        return parse_strategy_groups(model, upto)
    if isinstance(upto, bool) or not isinstance(upto, int):
        raise CnnzooError(f"freeze takes a group position, a strategy or None, got {upto!r}")
    ladder = _ladder(model)
    if not -len(ladder) <= upto < len(ladder):
        raise CnnzooError(
            f"group position {upto} out of range: {len(ladder)} groups ({', '.join(ladder)}); "
            f"use {-len(ladder)}..{len(ladder) - 1} (the head must stay trainable)"
        )
    return _with_aux(model, set(ladder[upto:]))


def freeze(model: nn.Module, upto: int | str | None = "head", *, train_bn: bool = False) -> list[str]:
    """Turn off gradients outside the trainable groups; return the trainable group names, stem to head.

    `upto`: a strategy ("head", "last:N", "full"), None (= "full"), or, as fastai's `freeze_to(n)`,
    an int: the groups before position n are frozen (negative counts from the end: -1 trains the head
    only; 0 trains everything). Positions count the groups without the auxiliary classifiers.

    `train_bn=False` (the default): frozen BatchNorm layers stay in inference mode during training.
    The engine calls `set_frozen_bn_eval(model)` after each `model.train()` (`cnnzoo.engine.frozen`).
    `train_bn=True` (fastai's default): every BatchNorm's affine parameters train, even in frozen
    groups, and BatchNorm stays in training mode (running statistics adapt to the new data);
    `param_groups` gives those parameters their group's rate. The returned names ignore them.
    """
    trainable = trainable_groups(model, upto)
    named = dict(model.named_parameters())
    for group, names in groups(model):
        for name in names:
            named[name].requires_grad_(group in trainable)
    if train_bn:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.requires_grad_(True)
    set_frozen_bn_eval(model)
    return [g for g, _ in groups(model) if g in trainable]


def unfreeze(model: nn.Module) -> list[str]:
    """Make every group trainable (`freeze(model, None)`)."""
    return freeze(model, None)


def group_table(model: nn.Module) -> list[tuple[str, int, bool]]:
    """[(group, parameter count, trainable)] stem to head; trainable if any of its parameters is."""
    named = dict(model.named_parameters())
    return [
        (g, sum(named[n].numel() for n in names), any(named[n].requires_grad for n in names))
        for g, names in groups(model)
    ]


# --- learning rates -------------------------------------------------------------------------------


def _check_rate(what: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise CnnzooError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def parse_lr(text: str) -> float | tuple[float, float]:
    """Parse "0.01" -> 0.01 and "1e-4:1e-2" -> (1e-4, 1e-2), a range from the stem's rate to the head's."""
    parts = str(text).split(":")
    if len(parts) > 2:
        raise CnnzooError(f"bad learning rate {text!r}: give one rate (0.01) or a range (1e-4:1e-2)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise CnnzooError(
            f"bad learning rate {text!r}: give one rate (0.01) or a range (1e-4:1e-2)"
        ) from None
    values = [_check_rate(f"learning rate in {text!r}", v) for v in values]
    if len(values) == 1:
        return values[0]
    lo, hi = values
    if lo > hi:
        raise CnnzooError(
            f"bad learning rate range {text!r}: it goes from the stem's rate up to the head's (lo:hi)"
        )
    return lo, hi


def _rates(n: int, lr: float | tuple[float, float], layer_decay: float | None) -> list[float]:
    """One rate per ladder position 0..n-1 (stem to head)."""
    if isinstance(lr, tuple | list):
        if len(lr) != 2:
            raise CnnzooError(f"a learning-rate range is (lo, hi), got {lr!r}")
        if layer_decay is not None:
            raise CnnzooError("give a learning-rate range or a layer decay, not both")
        lo, hi = _check_rate("lr lo", lr[0]), _check_rate("lr hi", lr[1])
        if n == 1:
            return [hi]
        return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]  # geometric: equal ratios
    rate = _check_rate("learning rate", lr)
    if layer_decay is None:
        return [rate] * n
    d = _check_rate("layer decay", layer_decay)
    return [rate * d ** (n - 1 - i) for i in range(n)]


def param_groups(
    model: nn.Module,
    lr: float | tuple[float, float],
    layer_decay: float | None = None,
    weight_decay: float | None = None,
) -> list[dict]:
    """Optimizer param groups, stem to head: {"params", "lr", "name"[, "weight_decay"]}.

    Only trainable parameters; empty groups are dropped. A group's rate depends on its position alone,
    not on what is frozen, so unfreezing later keeps the head's rate (fastai's two-phase fine-tune):
    - `lr` a number: every group gets it; with `layer_decay` d the head gets `lr`, the group before it
      `lr * d`, the one before `lr * d**2`, ...;
    - `lr` a range (lo, hi): spread geometrically, stem lo to head hi (equal ratios between neighbours).
    Auxiliary classifiers get the head's rate.

    `weight_decay` None leaves it to the optimizer's default. A number splits each group in two:
    weights with weight decay, and biases and norm parameters (1-D) without, named "<group>/no_decay".
    """
    ladder = _ladder(model)
    rates = dict(zip(ladder, _rates(len(ladder), lr, layer_decay), strict=True))
    named = dict(model.named_parameters())
    out = []
    for group, names in groups(model):
        rate = rates.get(group, rates[HEAD])  # an auxiliary classifier: the head's rate
        params = [named[n] for n in names if named[n].requires_grad]
        if weight_decay is None:
            subsets = [(group, params, {})]
        else:
            wd = float(weight_decay)
            if not math.isfinite(wd) or wd < 0:
                raise CnnzooError(f"weight decay must be 0 or more, got {weight_decay!r}")
            subsets = [
                (group, [p for p in params if p.ndim > 1], {"weight_decay": wd}),
                (f"{group}/no_decay", [p for p in params if p.ndim <= 1], {"weight_decay": 0.0}),
            ]
        out += [{"params": ps, "lr": rate, "name": name, **extra} for name, ps, extra in subsets if ps]
    return out
