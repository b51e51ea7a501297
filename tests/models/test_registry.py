"""The whole registry honours one contract: builds, runs forward and backward at its minimum size."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

import cnnzoo
import cnnzoo.models as models
from cnnzoo.errors import CnnzooError
from cnnzoo.models import _registry, model_info, parameter_groups
from cnnzoo.models._weights import identify_architecture
from cnnzoo.summary import summarize_model

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


FAMILY = '''
"""TinyNet: a family written for the test, as a newcomer would add one."""

from torch import Tensor, nn

from cnnzoo.models._base import ZooModel
from cnnzoo.models._registry import register_model


class TinyNet(ZooModel):
    classifier_path = "fc"
    first_conv = "conv1"

    def __init__(self, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        self.num_classes, self.num_features, self.head_hidden_size = num_classes, 4, 4
        self.conv1 = nn.Conv2d(in_chans, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, num_classes)
        self.set_feature_info([("conv1", 4, 1)])

    def forward_features(self, x: Tensor) -> Tensor:
        return self.conv1(x).relu()

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def group_matcher(self) -> dict[str, list[str]]:
        return {"stem": ["conv1"], "head": ["fc"]}


@register_model(family="tiny", input_size=16, min_size=3, paper="a test", in_chans=1, num_classes=10)
def tinynet(*, num_classes: int = 10, in_chans: int = 1) -> TinyNet:
    return TinyNet(num_classes=num_classes, in_chans=in_chans)
'''


def test_a_new_family_is_one_file_plus_one_import_line(tmp_path, monkeypatch):
    """The family file above, imported once (models/__init__ would hold that line), is a full zoo model:
    listed, built with the contract's keywords, summarised, and loadable from foreign weights."""
    (tmp_path / "tinynet_family.py").write_text(FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module("tinynet_family")  # the one registration line
        assert "tinynet" in cnnzoo.list_models("tiny*")
        model = cnnzoo.create_model("tinynet", num_classes=3, in_chans=3)
        assert model(torch.rand(2, 3, 16, 16)).shape == (2, 3)
        assert model.pretrained_cfg["classifier"] == "fc" and model.pretrained_cfg["input_size"] == (
            3,
            16,
            16,
        )
        assert cnnzoo.create_model("tinynet", num_classes=0)(torch.rand(1, 1, 8, 8)).shape == (1, 4)
        assert summarize_model("tinynet").rows
        state = cnnzoo.create_model("tinynet").state_dict()
        assert identify_architecture(state, "tinynet") == ("tinynet", {})
    finally:
        _registry._MODELS.pop("tinynet", None)
        sys.modules.pop("tinynet_family", None)
    assert "tinynet" not in cnnzoo.list_models()


def test_models_package_imports_every_family_file():
    """torchvision's way: the package imports each family, so no lazy loader hides a cycle."""
    folder = Path(models.__file__).parent
    families = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
    imported = {n for n in families if f"cnnzoo.models.{n}" in sys.modules}
    assert families and imported == families
