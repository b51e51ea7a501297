"""Freezing strategies, frozen BatchNorm, and per-group learning rates."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from cnnzoo import CnnzooError, create_model
from cnnzoo.models._weights import _SkipInit
from cnnzoo.transfer import (
    freeze,
    group_table,
    groups,
    param_groups,
    parse_lr,
    parse_strategy_groups,
    set_frozen_bn_eval,
    unfreeze,
)

RESNET18 = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


def build_meta(name: str, **kwargs):
    with torch.device("meta"), _SkipInit():  # shapes only: no memory, no initialisation
        return create_model(name, **kwargs)


@pytest.fixture(scope="module")
def resnet18():
    return build_meta("resnet18")


@pytest.fixture(scope="module")
def googlenet():
    return build_meta("googlenet")


def _trainable(model) -> set[str]:
    return {g for g, _, trainable in group_table(model) if trainable}


# --- strategies ---------------------------------------------------------------------------------


def test_groups_stem_to_head(resnet18):
    assert [g for g, _ in groups(resnet18)] == RESNET18
    assert sum(len(names) for _, names in groups(resnet18)) == len(list(resnet18.parameters()))


def test_strategies(resnet18):
    assert parse_strategy_groups(resnet18, "head") == {"head"}
    assert parse_strategy_groups(resnet18, "last:0") == {"head"}
    assert parse_strategy_groups(resnet18, "last:1") == {"layer4", "head"}
    assert parse_strategy_groups(resnet18, "last:3") == {"layer2", "layer3", "layer4", "head"}
    assert parse_strategy_groups(resnet18, "full") == set(RESNET18)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("last:5", r"last:5 is too many for resnet18: it has 5 groups before the head .* the most is last:4"),
        ("last:x", "must be a whole number"),
        ("last:-1", "0 or more"),
        ("everything", "unknown strategy"),
    ],
)
def test_bad_strategies(resnet18, spec, message):
    with pytest.raises(CnnzooError, match=message):
        parse_strategy_groups(resnet18, spec)


def test_auxiliary_classifiers_follow_the_head(googlenet):
    assert parse_strategy_groups(googlenet, "head") == {"aux", "head"}
    assert parse_strategy_groups(googlenet, "last:1") == {"inception5", "aux", "head"}
    with pytest.raises(CnnzooError, match="the most is last:3"):
        parse_strategy_groups(googlenet, "last:4")
    rates = {g["name"]: g["lr"] for g in param_groups(googlenet, (1e-4, 1e-2))}
    assert rates["aux"] == rates["head"] == pytest.approx(1e-2)
    assert rates["inception5"] == pytest.approx(1e-2 * 100 ** (-1 / 4))  # 5 positions: stem..head


def test_freeze_sets_requires_grad(resnet18):
    model = copy.deepcopy(resnet18)
    assert freeze(model, "last:1") == ["layer4", "head"]
    assert _trainable(model) == {"layer4", "head"}
    assert not model.conv1.weight.requires_grad and model.layer4[0].conv1.weight.requires_grad
    assert freeze(model, -1) == ["head"]  # fastai's freeze_to: groups before position -1 frozen
    assert freeze(model, 4) == ["layer4", "head"]
    assert freeze(model, 0) == RESNET18
    assert freeze(model, "head") == ["head"]
    assert unfreeze(model) == RESNET18 and all(p.requires_grad for p in model.parameters())
    for bad in (6, -7):
        with pytest.raises(CnnzooError, match="out of range"):
            freeze(model, bad)


def test_freeze_model_without_batchnorm():
    model = create_model("lenet5")
    assert freeze(model, "head") == ["head"]
    assert set_frozen_bn_eval(model) == []
    assert [p.requires_grad for p in model.parameters()] == [False] * 8 + [True] * 2


# --- BatchNorm ------------------------------------------------------------------------------------


def _bn_modes(model) -> dict[str, bool]:
    return {n: m.training for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}


def test_frozen_batchnorm_stays_in_eval_after_train():
    model = create_model("resnet20")
    freeze(model, "last:1")  # stage3 + head train
    model.train()
    assert all(_bn_modes(model).values())  # plain train() turns every BatchNorm on...
    names = set_frozen_bn_eval(model)  # ...the engine turns the frozen ones back off
    modes = _bn_modes(model)
    assert names and all(not modes[n] for n in names)
    assert {n for n, training in modes.items() if training} == {n for n in modes if n.startswith("layer3")}


def test_train_bn_keeps_batchnorm_trainable():
    model = create_model("resnet20")
    freeze(model, "head", train_bn=True)
    assert model.bn1.weight.requires_grad and not model.conv1.weight.requires_grad
    model.train()
    assert set_frozen_bn_eval(model) == []
    assert all(_bn_modes(model).values())


def test_training_leaves_frozen_weights_and_statistics_untouched():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4)
    freeze(model, "last:1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(param_groups(model, 0.1, weight_decay=5e-4), lr=0.1, momentum=0.9)
    for _ in range(3):
        model.train()
        set_frozen_bn_eval(model)
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    after = model.state_dict()
    trainable = ("layer3.", "fc.")
    for k, v in before.items():
        if not k.startswith(trainable):
            assert torch.equal(after[k], v), f"{k} changed although frozen"
    for k in ("layer3.0.conv1.weight", "layer3.2.bn2.weight", "fc.weight", "layer3.0.bn1.running_mean"):
        assert not torch.equal(after[k], before[k]), f"{k} did not train"
    assert after["layer3.0.bn1.num_batches_tracked"].item() == 3


# --- learning rates -------------------------------------------------------------------------------


def test_geometric_spread(resnet18):
    model = copy.deepcopy(resnet18)
    unfreeze(model)
    out = param_groups(model, (1e-4, 1e-2))
    assert [g["name"] for g in out] == RESNET18 and "weight_decay" not in out[0]
    rates = [g["lr"] for g in out]
    assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1e-2)
    ratio = 100 ** (1 / 5)
    for lo, hi in itertools.pairwise(rates):
        assert hi / lo == pytest.approx(ratio)
    # rates follow position, not what is frozen: the head keeps its rate when the body thaws
    freeze(model, "last:1")
    frozen = param_groups(model, (1e-4, 1e-2))
    assert [g["name"] for g in frozen] == ["layer4", "head"]
    assert [g["lr"] for g in frozen] == pytest.approx(rates[-2:])


def test_layer_decay_and_single_rate(resnet18):
    model = copy.deepcopy(resnet18)
    unfreeze(model)
    rates = [g["lr"] for g in param_groups(model, 0.1, layer_decay=0.5)]
    assert rates == pytest.approx([0.1 * 0.5**k for k in range(5, -1, -1)])
    assert {g["lr"] for g in param_groups(model, 0.03)} == {0.03}
    with pytest.raises(CnnzooError, match="not both"):
        param_groups(model, (1e-4, 1e-2), layer_decay=0.5)
    with pytest.raises(CnnzooError, match="positive"):
        param_groups(model, 0.1, layer_decay=0.0)


def test_weight_decay_split(resnet18):
    model = copy.deepcopy(resnet18)
    unfreeze(model)
    out = param_groups(model, 0.1, weight_decay=1e-4)
    names = [g["name"] for g in out]
    assert names[:2] == ["stem", "stem/no_decay"] and names[-2:] == ["head", "head/no_decay"]
    for g in out:
        no_decay = g["name"].endswith("/no_decay")
        assert g["weight_decay"] == (0.0 if no_decay else 1e-4)
        assert all((p.ndim <= 1) == no_decay for p in g["params"])
    assert sum(len(g["params"]) for g in out) == len(list(model.parameters()))


def test_parse_lr():
    assert parse_lr("0.01") == 0.01
    assert parse_lr("1e-4:1e-2") == (1e-4, 1e-2)
    for bad in ("fast", "1e-2:1e-4", "0", "-1", "1:2:3", "nan", "inf", "1e-3:"):
        with pytest.raises(CnnzooError):
            parse_lr(bad)
    assert math.isclose(parse_lr(" 3e-4 "), 3e-4)
