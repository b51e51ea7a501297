"""The whole registry honours one contract: builds, runs forward and backward at its minimum size."""

import pytest
import torch

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.models import model_info, parameter_groups

ALL = cnnzoo.list_models()


def test_registry_lists_all_five_families():
    families = {model_info(n).family for n in ALL}
    assert {"lenet", "alexnet", "vgg", "inception", "resnet"} <= families
    for name in ["lenet5", "lenet5_1998", "alexnet", "alexnet2012", "vgg16_bn", "googlenet", "inception_v3"]:
        assert name in ALL
    for depth in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110):
        assert f"resnet{depth}" in ALL
    for depth in (20, 32, 44, 56, 110):
        assert f"plain{depth}" in ALL


def test_list_models_pattern():
    assert cnnzoo.list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]


@pytest.mark.parametrize("name", ALL)
def test_builds_and_trains_at_min_size_with_odd_classes(name):
    info = model_info(name)
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=7, in_chans=1)
    x = torch.randn(2, 1, info.min_size, info.min_size)
    model.train()
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        assert feats.shape[1] == model.num_features  # timm: the channels of forward_features
        assert torch.allclose(model(x), model.forward_head(feats), atol=1e-5)
    # every parameter in exactly one named group, "head" last
    groups = parameter_groups(model)
    names = [n for _, members in groups for n in members]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert (
        list(model.group_matcher())[-1] == "head"
    )  # lenet5_1998's head (fixed RBF prototypes) has no parameters
    assert [g for g, _ in groups] == [g for g in model.group_matcher() if g in dict(groups)]
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)


def test_unknown_model_suggests_close_names():
    with pytest.raises(CnnzooError, match="resnet18"):
        cnnzoo.create_model("resnet81")


@pytest.mark.parametrize("bad", [-3, 2.5, True])
def test_bad_class_counts_rejected(bad):  # 0 is timm's "no classifier" (tests/models/test_contract.py)
    with pytest.raises(CnnzooError, match="num_classes"):
        cnnzoo.create_model("lenet5", num_classes=bad)


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg11", "googlenet", "resnet18"])
def test_an_unknown_builder_keyword_is_one_cnnzoo_error(name):
    """A builder's TypeError becomes CnnzooError once, in create_model (one model of each family)."""
    with pytest.raises(CnnzooError, match=f"cannot build {name}: .*no_such_option"):
        cnnzoo.create_model(name, no_such_option=1)
