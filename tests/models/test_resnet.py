"""ResNet: torchvision-exact ImageNet nets, the CIFAR nets of He et al. section 4.2 and their plain twins."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.models import count_params, create_model, model_info, parameter_groups
from cnnzoo.models.resnet import CifarBlock, CifarResNet

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR_N = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}  # depth = 6n + 2
CIFAR = [f"{kind}{depth}" for kind in ("resnet", "plain") for depth in CIFAR_N]


def build_meta(name: str, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


# --- parameter counts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
    ],
)
def test_imagenet_param_counts_match_torchvision(name, expected):
    assert count_params(build_meta(name)) == expected


def conv_bn(cin: int, cout: int) -> int:
    """A bias-free 3x3 conv plus its BatchNorm's weight and bias."""
    return 3 * 3 * cin * cout + 2 * cout


def cifar_count(n: int, num_classes: int = 10, in_chans: int = 3) -> int:
    stem = conv_bn(in_chans, 16)
    stage1 = 2 * n * conv_bn(16, 16)
    stage2 = conv_bn(16, 32) + (2 * n - 1) * conv_bn(32, 32)
    stage3 = conv_bn(32, 64) + (2 * n - 1) * conv_bn(64, 64)
    return stem + stage1 + stage2 + stage3 + 64 * num_classes + num_classes  # option A adds nothing


def test_cifar_hand_arithmetic_for_resnet20():
    # stem 432+32, stage1 6*(2304+32), stage2 (4608+64)+5*(9216+64), stage3 (18432+128)+5*(36864+128), fc 650
    assert cifar_count(3) == 464 + 14_016 + 51_072 + 203_520 + 650 == 269_722


@pytest.mark.parametrize(
    "depth, exact, paper_millions",
    [
        (20, 269_722, 0.27),
        (32, 464_154, 0.46),
        (44, 658_586, 0.66),
        (56, 853_018, 0.85),
        (110, 1_727_962, 1.7),
    ],
)
def test_cifar_param_counts(depth, exact, paper_millions):
    n = CIFAR_N[depth]
    assert cifar_count(n) == exact
    assert round(exact / 1e6, 2 if depth < 100 else 1) == paper_millions  # table 6 of the paper
    resnet, plain = build_meta(f"resnet{depth}"), build_meta(f"plain{depth}")
    assert count_params(resnet) == count_params(plain) == exact
    assert count_params(build_meta(f"resnet{depth}", num_classes=7, in_chans=1)) == cifar_count(n, 7, 1)


# --- torchvision compatibility ----------------------------------------------------------------


def _bn_keys(prefix: str) -> list[str]:
    return [f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def torchvision_keys(convs_per_block: int, layers: list[int], project_layer1: bool) -> list[str]:
    """torchvision's state_dict keys, in order, written from its naming scheme."""
    keys = ["conv1.weight", *_bn_keys("bn1")]
    for stage, blocks in enumerate(layers, 1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            for c in range(1, convs_per_block + 1):
                keys += [f"{p}.conv{c}.weight", *_bn_keys(f"{p}.bn{c}")]
            if b == 0 and (stage > 1 or project_layer1):
                keys += [f"{p}.downsample.0.weight", *_bn_keys(f"{p}.downsample.1")]
    return keys + ["fc.weight", "fc.bias"]


@pytest.mark.parametrize(
    "name, convs, layers",
    [
        ("resnet18", 2, [2, 2, 2, 2]),
        ("resnet34", 2, [3, 4, 6, 3]),
        ("resnet50", 3, [3, 4, 6, 3]),
        ("resnet101", 3, [3, 4, 23, 3]),
        ("resnet152", 3, [3, 8, 36, 3]),
    ],
)
def test_state_dict_keys_are_torchvisions(name, convs, layers):
    sd = build_meta(name).state_dict()
    assert list(sd) == torchvision_keys(convs, layers, project_layer1=convs == 3)


def test_state_dict_shapes_and_v15_stride():
    sd18 = build_meta("resnet18").state_dict()
    assert sd18["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd18["layer2.0.conv1.weight"].shape == (128, 64, 3, 3)
    assert sd18["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd18["layer4.1.bn2.running_var"].shape == (512,)
    assert sd18["fc.weight"].shape == (1000, 512)
    m50 = build_meta("resnet50")
    sd50 = m50.state_dict()
    assert sd50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd50["layer2.0.conv1.weight"].shape == (128, 256, 1, 1)
    assert sd50["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert sd50["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert sd50["fc.weight"].shape == (1000, 2048)
    block = m50.layer2[0]  # v1.5: the 3x3 conv strides, the 1x1 convs do not
    assert (block.conv1.stride, block.conv2.stride, block.downsample[0].stride) == ((1, 1), (2, 2), (2, 2))


# --- forward, backward, minimum size ----------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet20", "plain20"])
def test_forward_backward_at_min_size_and_below(name):
    size = model_info(name).min_size
    model = create_model(name, num_classes=7, in_chans=1).train()
    out = model(torch.randn(2, 1, size, size))  # batch 2: BN sees 2 values per channel on 1x1 maps
    assert out.shape == (2, 7)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 1, size - 1, size - 1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(torch.randn(1, 1, size, size))  # why batch 2: one 1x1 sample leaves BN nothing to normalise


@pytest.mark.parametrize("name", IMAGENET + CIFAR)
def test_registry_facts(name):
    info = model_info(name)
    cifar = name in CIFAR
    assert (info.family, info.min_size, info.in_chans) == ("resnet", 1, 3)
    assert (info.input_size, info.num_classes) == ((32, 10) if cifar else (224, 1000))
    model = build_meta(name)
    assert model.fc.out_features == info.num_classes
    assert model.num_features == (64 if cifar else 512 if name in ("resnet18", "resnet34") else 2048)


@pytest.mark.parametrize("side, out_side", [(7, 2), (32, 8), (33, 9)])
def test_option_a_shortcut_fits_odd_sides(side, out_side):
    model = create_model("resnet20").eval()
    assert model.forward_features(torch.randn(2, 3, side, side)).shape == (2, 64, out_side, out_side)


@pytest.mark.parametrize(
    "name, size", [("resnet18", 32), ("resnet50", 32), ("resnet20", 32), ("plain20", 32)]
)
def test_contract(name, size):
    model = create_model(name, num_classes=7, in_chans=1).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[:2] == (2, model.num_features)
        torch.testing.assert_close(model(x), model.forward_head(feats))
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert model.get_classifier() is model.fc
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.fc.in_features == model.num_features
    assert model(x).shape == (2, 5)


@pytest.mark.parametrize("name", IMAGENET + CIFAR)
def test_groups_cover_every_parameter_in_order(name):
    model = build_meta(name)
    groups = parameter_groups(model)
    stages = ["layer1", "layer2", "layer3", "layer4"] if name in IMAGENET else ["stage1", "stage2", "stage3"]
    assert [g for g, _ in groups] == ["stem", *stages, "head"]
    assert [p for _, names in groups for p in names] == [n for n, _ in model.named_parameters()]
    assert groups[0][1] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert groups[-1][1] == ["fc.weight", "fc.bias"]


# --- shortcuts, plain nets, init --------------------------------------------------------------


def _zero_last_bns(model):
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, CifarBlock):
                block.bn2.weight.zero_()


def _identity_path(model, x):
    """What option A's shortcuts carry to the end: the stem's map, subsampled twice, zero-padded to 64."""
    stem = model.relu(model.bn1(model.conv1(x)))  # (B, 16, 32, 32)
    return F.pad(stem[:, :, ::4, ::4], (0, 0, 0, 0, 0, 48))  # (B, 64, 8, 8)


def test_plain_net_has_no_shortcut():
    torch.manual_seed(0)
    res, plain = create_model("resnet20").eval(), create_model("plain20").eval()
    plain.load_state_dict(res.state_dict())  # the same weights: option A has none of its own
    assert all(b.shortcut is not None for b in res.modules() if isinstance(b, CifarBlock))
    assert all(b.shortcut is None for b in plain.modules() if isinstance(b, CifarBlock))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(res(x), plain(x))
        # Silence every residual branch: the resnet passes the stem through, the plain net passes nothing.
        _zero_last_bns(res)
        _zero_last_bns(plain)
        assert torch.equal(res.forward_features(x), _identity_path(res, x))
        assert torch.count_nonzero(plain.forward_features(x)) == 0
        assert torch.equal(plain(x), plain.fc.bias.expand(4, -1))


def test_zero_init_residual():
    torch.manual_seed(0)
    model = create_model("resnet20", zero_init_residual=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), _identity_path(model, x))
    m18 = create_model("resnet18", zero_init_residual=True)
    assert all(
        m18.get_submodule(f"layer{i}.{b}").bn2.weight.abs().sum() == 0 for i in range(1, 5) for b in (0, 1)
    )
    assert m18.layer1[0].bn1.weight.eq(1).all()
    m50 = create_model("resnet50", zero_init_residual=True)
    assert m50.layer3[5].bn3.weight.abs().sum() == 0 and m50.layer3[5].bn2.weight.eq(1).all()
    with pytest.raises(ValueError, match="shortcuts"):
        CifarResNet(20, shortcut=False, zero_init_residual=True)


def test_init_is_kaiming_fan_out_and_unit_bn():
    torch.manual_seed(0)
    model = create_model("resnet56")
    w = torch.cat([b.conv2.weight.flatten() for b in model.layer3])  # 64 -> 64 3x3: fan_out 576
    assert w.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.02)
    assert w.mean().abs().item() < 0.002
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.weight.eq(1).all() and m.bias.eq(0).all()


@pytest.mark.parametrize("depth", [0, 19, 21])
def test_cifar_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n"):
        CifarResNet(depth)
