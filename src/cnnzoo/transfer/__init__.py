"""Transfer learning: start from pretrained weights, freeze, fine-tune with per-group learning rates."""

from .advise import Advice, advise, recommend
from .features import extract_features, train_linear_head
from .finetune import FinetuneConfig, finetune
from .freeze import (
    freeze,
    group_table,
    groups,
    param_groups,
    parse_lr,
    parse_strategy_groups,
    set_frozen_bn_eval,
    trainable_groups,
    unfreeze,
)
from .recipe import finetune_plan
from .sources import (
    LoadedSource,
    LoadReport,
    adapt_conv_weight,
    adapt_stats,
    identify_architecture,
    load_source,
    map_timm_names,
)
from .trial import Trial, race

__all__ = [
    "Advice",
    "FinetuneConfig",
    "advise",
    "extract_features",
    "finetune",
    "finetune_plan",
    "race",
    "Trial",
    "recommend",
    "train_linear_head",
    "LoadReport",
    "LoadedSource",
    "adapt_conv_weight",
    "adapt_stats",
    "freeze",
    "group_table",
    "groups",
    "identify_architecture",
    "load_source",
    "map_timm_names",
    "param_groups",
    "parse_lr",
    "parse_strategy_groups",
    "set_frozen_bn_eval",
    "trainable_groups",
    "unfreeze",
]
