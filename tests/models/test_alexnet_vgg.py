"""AlexNet (torchvision layout and 2012 paper) and VGG 11/13/16/19 (+ BN): sizes, layout, contract.

Big models are built on the meta device (no memory, no init time) wherever values are not needed;
only alexnet, alexnet2012, vgg11 and vgg11_bn are built for real, once each, at their minimum size.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo.models import count_params, create_model, list_models, model_info, parameter_groups
from cnnzoo.models.vgg import CONFIGS, block_indices

ALEXNETS = ["alexnet", "alexnet2012"]
VGGS = ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
ALL = ALEXNETS + VGGS
REAL = ["alexnet", "alexnet2012", "vgg11", "vgg11_bn"]  # built on the CPU for forward/backward


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


# --- parameter counts, by hand ------------------------------------------------------------------


def conv(k: int, cin: int, cout: int, groups: int = 1) -> int:
    return k * k * (cin // groups) * cout + cout  # weights + biases


def fc(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


def vgg_hand_count(widths: list[int], batch_norm: bool, num_classes: int = 1000) -> int:
    ins = [3] + widths[:-1]
    convs = sum(conv(3, i, o) for i, o in zip(ins, widths, strict=True))
    bns = sum(2 * o for o in widths) if batch_norm else 0  # BN weight + bias
    return convs + bns + fc(512 * 7 * 7, 4096) + fc(4096, 4096) + fc(4096, num_classes)


# Conv widths of Table 1's configurations A, B, D, E, written out independently of CONFIGS.
VGG_WIDTHS = {
    "vgg11": [64, 128, 256, 256, 512, 512, 512, 512],
    "vgg13": [64, 64, 128, 128, 256, 256, 512, 512, 512, 512],
    "vgg16": [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
    "vgg19": [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512],
}
VGG_KNOWN = {  # torchvision's published parameter counts
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}


def test_alexnet_param_count():
    hand = (
        conv(11, 3, 64) + conv(5, 64, 192) + conv(3, 192, 384) + conv(3, 384, 256) + conv(3, 256, 256)
        + fc(9216, 4096) + fc(4096, 4096) + fc(4096, 1000)
    )  # fmt: skip
    assert hand == 61_100_840
    assert count_params(meta_model("alexnet")) == hand


def test_alexnet2012_param_count():
    hand = (
        conv(11, 3, 96)
        + conv(5, 96, 256, groups=2)  # each GPU's 128 kernels see that GPU's 48 maps
        + conv(3, 256, 384)  # conv3 reads both GPUs
        + conv(3, 384, 384, groups=2)
        + conv(3, 384, 256, groups=2)
        + fc(9216, 4096) + fc(4096, 4096) + fc(4096, 1000)
    )  # fmt: skip
    assert hand == 34_944 + 307_456 + 885_120 + 663_936 + 442_624 + 37_752_832 + 16_781_312 + 4_097_000
    assert hand == 60_965_224  # the number in AlexNet2012's docstring
    assert count_params(meta_model("alexnet2012")) == hand


@pytest.mark.parametrize("name", VGGS)
def test_vgg_param_count(name):
    base, bn = name.removesuffix("_bn"), name.endswith("_bn")
    hand = vgg_hand_count(VGG_WIDTHS[base], bn)
    assert hand == VGG_KNOWN[name]
    assert count_params(meta_model(name)) == hand


def test_param_count_follows_num_classes_and_in_chans():
    # Only the first conv and the last Linear change.
    delta = count_params(meta_model("vgg16")) - count_params(meta_model("vgg16", num_classes=7, in_chans=1))
    assert delta == (3 - 1) * 9 * 64 + (1000 - 7) * 4097


# --- layout: torchvision's names and shapes ---------------------------------------------------


def test_alexnet_state_dict_is_torchvisions():
    expected = {
        "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
        "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
        "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
        "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
        "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
        "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
        "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
        "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
    }  # fmt: skip
    model = meta_model("alexnet")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == 6
    assert [type(m) for m in model.classifier] == [nn.Dropout, nn.Linear, nn.ReLU] * 2 + [nn.Linear]


@pytest.mark.parametrize(
    ("name", "conv_indices"),
    [
        ("vgg16", [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]),
        ("vgg16_bn", [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]),
    ],
)
def test_vgg_state_dict_is_torchvisions(name, conv_indices):
    model = meta_model(name)
    widths = VGG_WIDTHS["vgg16"]
    expected = {}
    for i, cin, cout in zip(conv_indices, [3] + widths[:-1], widths, strict=True):
        expected[f"features.{i}.weight"], expected[f"features.{i}.bias"] = (cout, cin, 3, 3), (cout,)
        if name.endswith("_bn"):
            for buf in ("weight", "bias", "running_mean", "running_var"):
                expected[f"features.{i + 1}.{buf}"] = (cout,)
            expected[f"features.{i + 1}.num_batches_tracked"] = ()
    for i, fan_in, fan_out in [(0, 25088, 4096), (3, 4096, 4096), (6, 4096, 1000)]:
        expected[f"classifier.{i}.weight"], expected[f"classifier.{i}.bias"] = (fan_out, fan_in), (fan_out,)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == 7
    assert [type(m) for m in model.classifier] == [nn.Linear, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]


def test_alexnet2012_is_the_paper():
    model = meta_model("alexnet2012")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.groups) for c in convs] == [
        (96, 11, 1), (256, 5, 2), (384, 3, 1), (384, 3, 2), (256, 3, 2),
    ]  # fmt: skip
    lrns = [m for m in model.features if isinstance(m, nn.LocalResponseNorm)]
    assert [(n.size, n.alpha, n.beta, n.k) for n in lrns] == [(5, 1e-4, 0.75, 2.0)] * 2
    types = [type(m) for m in model.features]
    assert types[:4] == [nn.Conv2d, nn.ReLU, nn.LocalResponseNorm, nn.MaxPool2d]  # LRN after ReLU
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3  # overlapping pooling
    x = torch.empty(1, 3, 224, 224, device="meta")
    assert model.features[0](x).shape[-1] == 55
    assert model.forward_features(x).shape == (1, 256, 6, 6)


# --- minimum input size -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_min_size_is_the_minimum(name):
    info = model_info(name)
    assert info.input_size == 224
    assert info.min_size == (63 if name in ALEXNETS else 32)
    model = meta_model(name, num_classes=7)
    assert model(torch.empty(2, 3, info.min_size, info.min_size, device="meta")).shape == (2, 7)
    with pytest.raises(RuntimeError):
        model(torch.empty(2, 3, info.min_size - 1, info.min_size - 1, device="meta"))


def test_feature_map_at_224():
    x = torch.empty(1, 3, 224, 224, device="meta")
    assert meta_model("alexnet").forward_features(x).shape == (1, 256, 6, 6)
    assert meta_model("vgg19_bn").forward_features(x).shape == (1, 512, 7, 7)


# --- the ZooModel contract on real CPU models ---------------------------------------------------


@pytest.fixture(scope="module")
def real_models():
    torch.manual_seed(0)
    return {name: create_model(name, num_classes=7, in_chans=1) for name in REAL}


@pytest.mark.parametrize("name", REAL)
def test_forward_backward_at_min_size(name, real_models):
    model = real_models[name].train()
    size = model_info(name).min_size
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 7)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError):  # one pixel less fails on real tensors too, not only on meta
        model(torch.randn(2, 1, size - 1, size - 1))


@pytest.mark.parametrize("name", REAL)
def test_forward_is_head_of_features(name, real_models):
    model = real_models[name].eval()
    size = model_info(name).min_size
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model(x), model.forward_head(feats))
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size) == (2, 4096)  # timm: num_features is 256/512
        torch.testing.assert_close(model.get_classifier()(pre), model(x))


@pytest.mark.parametrize("name", ALL)
def test_reset_classifier(name):
    model = meta_model(name, num_classes=7)
    assert model.get_classifier() is model.classifier[6]
    with torch.device("meta"):
        model.reset_classifier(3)
    assert model.num_classes == 3 and model.get_classifier().out_features == 3
    size = model_info(name).min_size
    assert model(torch.empty(2, 3, size, size, device="meta")).shape == (2, 3)


def test_vgg_init(real_models):
    model = real_models["vgg11_bn"]
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
            assert torch.count_nonzero(m.bias) == 0
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1)
    w = model.classifier[3].weight
    assert abs(w.std().item() - 0.01) < 1e-3
    conv = model.features[4]  # 64 -> 128, fan_out = 128 * 9: Kaiming std = sqrt(2 / fan_out)
    assert abs(conv.weight.std().item() - (2 / (128 * 9)) ** 0.5) < 2e-3


def test_alexnet2012_init_is_the_papers(real_models):
    model = real_models["alexnet2012"]
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [c.bias.unique().tolist() for c in convs] == [[0.0], [1.0], [0.0], [1.0], [1.0]]
    assert [f.bias.unique().tolist() for f in fcs] == [[1.0], [1.0], [0.0]]
    assert abs(fcs[1].weight.std().item() - 0.01) < 1e-3


# --- parameter groups -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_groups_cover_every_parameter_in_order(name):
    model = meta_model(name)
    groups = model.group_matcher()
    found = parameter_groups(model)
    assert [g for g, _ in found] == list(groups)  # no empty group
    # Concatenated in group order, the groups give back named_parameters() exactly: each parameter in
    # exactly one group, and the groups run from the stem to the head.
    assert [p for _, names in found for p in names] == [n for n, _ in model.named_parameters()]
    assert found[-1] == ("head", ["classifier.6.weight", "classifier.6.bias"])
    first = "conv1" if name in ALEXNETS else "block1"
    assert next(iter(groups)) == first


def test_group_names():
    assert list(meta_model("alexnet").group_matcher()) == [f"conv{i}" for i in range(1, 6)] + [
        "fc1", "fc2", "head",
    ]  # fmt: skip
    assert meta_model("alexnet").group_matcher()["fc1"] == ["classifier.1"]
    assert meta_model("alexnet2012").group_matcher()["conv5"] == ["features.12"]
    groups = meta_model("vgg16_bn").group_matcher()
    assert list(groups) == [f"block{i}" for i in range(1, 6)] + ["fc1", "fc2", "head"]
    assert groups["block1"] == ["features.0", "features.1", "features.3", "features.4"]
    assert meta_model("vgg16").group_matcher()["block3"] == ["features.10", "features.12", "features.14"]


@pytest.mark.parametrize("cfg", sorted(CONFIGS))
def test_blocks_follow_the_config(cfg):
    convs_per_block = [len(b) for b in block_indices(CONFIGS[cfg], batch_norm=False)]
    expected = {"A": [1, 1, 2, 2, 2], "B": [2, 2, 2, 2, 2], "D": [2, 2, 3, 3, 3], "E": [2, 2, 4, 4, 4]}
    assert convs_per_block == expected[cfg]
    assert [len(b) for b in block_indices(CONFIGS[cfg], batch_norm=True)] == [2 * n for n in expected[cfg]]


def test_registered():
    assert list_models("alexnet*") == ALEXNETS
    assert list_models("vgg*") == sorted(VGGS)
    assert {model_info(n).family for n in ALEXNETS} == {"alexnet"}
    assert {model_info(n).family for n in VGGS} == {"vgg"}
