"""The one contract every cnnzoo model follows (after timm's), written once.

    forward(x) == forward_head(forward_features(x))
    forward_head(x, pre_logits=True) -> the `num_features`-wide vector the classifier reads
    get_classifier() -> the last layer; reset_classifier(n) swaps it for a fresh one with n outputs
    group_matcher() -> ordered {group name: [module-name prefixes]}, stem first, "head" last

Freezing, layer-wise learning rates and feature caching (`cnnzoo.transfer`) rely only on this.
A subclass sets `num_features` and `classifier_path` (dotted name of the final layer) and
implements `forward_features`, `forward_head` and `group_matcher`.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ZooModel", "group_of", "parameter_groups"]


class ZooModel(nn.Module):
    num_features: int
    classifier_path: str = "fc"  # dotted module name of the final layer

    def forward_features(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> feature map
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def group_matcher(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_path)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer by a freshly initialised one with `num_classes` outputs."""
        self._set_submodule(self.classifier_path, self._new_classifier(num_classes))
        self.num_classes = num_classes

    def _new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes)

    def _set_submodule(self, path: str, module: nn.Module) -> None:
        parent_path, _, child = path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        setattr(parent, child, module)


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
