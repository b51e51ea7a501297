"""GoogLeNet and Inception v3: torchvision's sizes, auxiliary heads in training mode, the ZooModel contract.

Full-size parameter counts are taken on the meta device; forward passes use 1 channel, 7 classes, batch 2,
at the registered minimum size (Inception v3's is 299: its auxiliary head needs a 17x17 Mixed_6e map).
"""

from __future__ import annotations

import copy

import pytest
import torch

from cnnzoo import count_params, create_model, model_info
from cnnzoo.errors import CnnzooError
from cnnzoo.models import parameter_groups
from cnnzoo.models.googlenet import GoogLeNetOutputs, imagenet_to_unit_range
from cnnzoo.models.inception_v3 import EVAL_MIN_SIZE, InceptionOutputs

OUTPUTS = {"googlenet": GoogLeNetOutputs, "inception_v3": InceptionOutputs}
AUX_FC = {"googlenet": ["aux1.fc2", "aux2.fc2"], "inception_v3": ["AuxLogits.fc"]}
NAMES = list(OUTPUTS)


def _small(name: str, **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=7, in_chans=1, **kwargs)


@pytest.fixture(scope="module")
def small():
    """Each 7-class, 1-channel model built once (initialising 27M weights is slow); deepcopy to mutate."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = _small(name)
        return cache[name]

    return get


def _x(side: int) -> torch.Tensor:
    return torch.randn(2, 1, side, side, generator=torch.Generator().manual_seed(0))


def _meta(name: str, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("googlenet", {"aux_logits": False}, 6_624_904),  # torchvision's published count
        ("googlenet", {}, 13_004_888),  # + two auxiliary heads
        ("inception_v3", {}, 27_161_264),  # torchvision's published count, auxiliary head included
        ("inception_v3", {"aux_logits": False}, 23_834_568),
    ],
)
def test_parameter_counts(name, kwargs, expected):
    assert count_params(_meta(name, **kwargs)) == expected


def test_torchvision_layer_shapes():
    g = dict(_meta("googlenet").state_dict())
    assert g["conv1.conv.weight"].shape == (64, 3, 7, 7)
    assert g["inception3a.branch3.1.conv.weight"].shape == (32, 16, 3, 3)  # torchvision's 3x3 "5x5"
    assert g["inception5b.branch4.1.bn.running_var"].shape == (128,)
    assert g["aux1.fc1.weight"].shape == (1024, 2048) and g["aux2.conv.conv.weight"].shape == (128, 528, 1, 1)
    v = dict(_meta("inception_v3").state_dict())
    assert v["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert v["Mixed_6b.branch7x7dbl_5.conv.weight"].shape == (192, 128, 1, 7)
    assert v["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert v["AuxLogits.conv1.conv.weight"].shape == (768, 128, 5, 5) and v["fc.weight"].shape == (1000, 2048)


@pytest.mark.parametrize("name", NAMES)
def test_train_and_eval_at_min_size(small, name):
    model, side = small(name), model_info(name).min_size
    x = _x(side)
    out = model.train()(x)  # 1. training: logits and auxiliary logits, all 7 wide
    assert isinstance(out, OUTPUTS[name])
    assert all(t.shape == (2, 7) for t in out)
    sum(t.square().mean() for t in out).backward()
    assert all(p.grad is not None for p in model.parameters())  # every head reached every parameter
    model.eval()  # 2. eval: the logits alone, equal to the contract's two halves
    with torch.no_grad():
        logits, feats = model(x), model.forward_features(x)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 7)
        assert feats.shape[:2] == (2, model.num_features)
        assert torch.equal(logits, model.forward_head(feats))
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize("name", NAMES)
def test_no_aux_heads_returns_tensor_in_training(name):
    model = _small(name, aux_logits=False).train()
    side = EVAL_MIN_SIZE if name == "inception_v3" else model_info(name).min_size
    with torch.no_grad():
        out = model(_x(side))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    assert "aux" not in model.group_matcher()


def test_googlenet_min_size_is_tight(small):
    model, side = small("googlenet"), model_info("googlenet").min_size
    assert side == 15
    with torch.no_grad():
        for training in (True, False):
            model.train(training)
            model(_x(side))
            with pytest.raises(RuntimeError):
                model(_x(side - 1))


def test_inception_v3_min_sizes_are_tight(small):
    model, side = small("inception_v3"), model_info("inception_v3").min_size
    assert side == 299
    with torch.no_grad():
        with pytest.raises(RuntimeError):  # the auxiliary head's 5x5 conv outgrows its 4x4 input
            model.train()(_x(side - 1))
        model.eval()
        model(_x(EVAL_MIN_SIZE))  # without the auxiliary head much smaller inputs run
        with pytest.raises(RuntimeError):
            model(_x(EVAL_MIN_SIZE - 1))


@pytest.mark.parametrize("name", NAMES)
def test_reset_classifier_resets_aux_heads_too(small, name):
    model, side = copy.deepcopy(small(name)), model_info(name).min_size
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.get_classifier().out_features == 5
    assert all(model.get_submodule(p).out_features == 5 for p in AUX_FC[name])
    with torch.no_grad():
        out = model.train()(_x(side))
    assert all(t.shape == (2, 5) for t in out)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("aux_logits", [True, False])
def test_groups_cover_every_parameter_stem_to_head(name, aux_logits):
    model = _meta(name, aux_logits=aux_logits)
    groups = parameter_groups(model)
    assert [g for g, _ in groups] == list(model.group_matcher())  # no empty group
    assert groups[0][0] == "stem" and groups[-1] == ("head", ["fc.weight", "fc.bias"])
    assert ("aux" in dict(groups)) == aux_logits
    # concatenated in group order they are exactly named_parameters(): each once, stem to head
    assert [n for _, members in groups for n in members] == [n for n, _ in model.named_parameters()]


@pytest.mark.parametrize("name", NAMES)
def test_transform_input(name):
    pixels = torch.rand(2, 3, 4, 4)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    normalised = (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    torch.testing.assert_close(imagenet_to_unit_range(normalised), pixels * 2 - 1)
    with pytest.raises(
        CnnzooError, match=f"cannot build {name}: .*in_chans"
    ):  # one line, through create_model
        create_model(name, in_chans=1, transform_input=True)
