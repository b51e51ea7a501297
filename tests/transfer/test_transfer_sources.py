"""Loading pretrained sources: cnnzoo checkpoints, torchvision/timm weights files, torchvision names."""

from __future__ import annotations

import builtins
import os
import pickle
import sys
import types
import urllib.error

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cnnzoo import CnnzooError, create_model
from cnnzoo.artifacts.checkpoint import save_checkpoint
from cnnzoo.models._weights import _SkipInit, clean_state_dict
from cnnzoo.transfer import adapt_conv_weight, adapt_stats, load_source, map_timm_names

MNIST = {"mean": [0.1307], "std": [0.3081]}
CIFAR = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}


def _settle_bn(model: torch.nn.Module, size: int, chans: int) -> None:
    """A few training-mode forwards so BatchNorm running statistics are not their initial 0 / 1."""
    model.train()
    with torch.no_grad():
        model(torch.randn(4, chans, size, size))
    model.eval()


def _checkpoint(tmp_path, name: str, in_chans: int, stats: dict, size: int, num_classes: int = 10):
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    _settle_bn(model, size, in_chans)
    meta = {
        "model": name,
        "model_kwargs": {},
        "classes": [f"c{i}" for i in range(num_classes)],
        "in_chans": in_chans,
        "image_size": size,
        **stats,
    }
    run = tmp_path / "run"
    save_checkpoint(run, "best", model, meta)
    return run, model


@pytest.fixture
def lenet(tmp_path):
    return _checkpoint(tmp_path, "lenet5", 1, MNIST, 28)


@pytest.fixture
def resnet20(tmp_path):
    return _checkpoint(tmp_path, "resnet20", 3, CIFAR, 32)


def _random_state(name: str, **kwargs) -> dict[str, torch.Tensor]:
    """A state dict of `name` with random values, without paying for the model's initialisation."""
    with torch.device("meta"), _SkipInit():
        model = create_model(name, **kwargs)
    state = model.to_empty(device="cpu").state_dict()
    gen = torch.Generator().manual_seed(0)
    for v in state.values():
        if v.dtype.is_floating_point:
            v.normal_(generator=gen)
        else:
            v.zero_()
    return {k: v.clone() for k, v in state.items()}


def _assert_same_except(model, reference: dict, head: set[str]) -> None:
    got = model.state_dict()
    assert set(got) == set(reference)
    for k, v in reference.items():
        if k not in head:
            assert torch.equal(got[k], v), k


# --- cnnzoo checkpoints -------------------------------------------------------------------------


def test_other_class_count_replaces_only_the_head(lenet):
    run, original = lenet
    src = load_source(str(run), num_classes=5, in_chans=1)
    head = {"classifier.4.weight", "classifier.4.bias"}
    assert src.model_name == "lenet5" and src.model.num_classes == 5
    assert src.model(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    assert sorted(src.report.replaced) == sorted(src.report.new) == sorted(head)
    assert set(src.report.loaded) == set(original.state_dict()) - head
    _assert_same_except(src.model, original.state_dict(), head)
    assert src.meta["mean"] == (0.1307,) and src.meta["image_size"] == 28 and src.meta["kind"] == "cnnzoo"
    assert src.meta["source_classes"][:2] == ["c0", "c1"] and src.meta["source_num_classes"] == 10
    assert any("10 -> 5" in line for line in src.describe())


def test_same_class_count_keeps_the_head_unless_reset(lenet):
    run, original = lenet
    src = load_source(str(run / "best.safetensors"), num_classes=10, in_chans=1)
    _assert_same_except(src.model, original.state_dict(), set())
    assert src.report.replaced == [] and src.report.new == []
    fresh = load_source(str(run / "best.json"), num_classes=10, in_chans=1, reset_head=True)
    assert sorted(fresh.report.new) == ["classifier.4.bias", "classifier.4.weight"]
    assert not torch.equal(fresh.model.classifier[4].weight, original.classifier[4].weight)


def test_resnet_checkpoint_keeps_batchnorm_statistics(resnet20):
    run, original = resnet20
    src = load_source(str(run), num_classes=3, in_chans=3)
    _assert_same_except(src.model, original.state_dict(), {"fc.weight", "fc.bias"})
    assert src.model.fc.out_features == 3
    assert src.meta["mean"] == tuple(CIFAR["mean"])


def test_rgb_to_gray_sums_the_first_conv(resnet20):
    run, original = resnet20
    src = load_source(str(run), num_classes=10, in_chans=1)
    assert src.report.adapted == [
        "adapted conv1.weight from 3 to 1 input channels by summing over input channels"
    ]
    gray = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        want = original.conv1(gray.repeat(1, 3, 1, 1))
        got = src.model.conv1(gray)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert src.meta["mean"] == pytest.approx((sum(CIFAR["mean"]) / 3,))
    assert src.meta["std"] == pytest.approx((sum(CIFAR["std"]) / 3,))
    assert src.meta["source_in_chans"] == 3
    _assert_same_except(src.model, original.state_dict(), {"conv1.weight"})


def test_gray_to_rgb_repeats_and_divides(lenet):
    run, original = lenet
    src = load_source(str(run), num_classes=10, in_chans=3)
    assert "from 1 to 3 input channels by repeating and dividing by 3" in src.report.adapted[0]
    gray = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        want = original.features[1](gray)
        got = src.model.features[1](gray.repeat(1, 3, 1, 1))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert src.meta["mean"] == (0.1307,) * 3 and src.meta["std"] == (0.3081,) * 3


def test_adapt_conv_weight_general_and_stats():
    w = torch.randn(4, 3, 5, 5)
    new, how = adapt_conv_weight(w, 5)
    assert new.shape == (4, 5, 5, 5) and "cyclically" in how
    torch.testing.assert_close(new, w[:, [0, 1, 2, 0, 1]] * 3 / 5)
    two, _ = adapt_conv_weight(w, 2)
    torch.testing.assert_close(two, w[:, :2] * 3 / 2)
    same, how = adapt_conv_weight(w, 3)
    assert same is w and how == "unchanged"
    assert adapt_stats((0.1, 0.2, 0.3), 1) == pytest.approx((0.2,))
    assert adapt_stats((0.5,), 3) == (0.5, 0.5, 0.5)
    assert adapt_stats((0.1, 0.2, 0.3), 4) == (0.1, 0.2, 0.3, 0.1)


def test_checkpoint_with_another_model_name_is_refused(lenet):
    run, _ = lenet
    with pytest.raises(CnnzooError, match="lenet5 checkpoint; --model resnet18 does not match"):
        load_source(str(run), num_classes=10, in_chans=1, model_name="resnet18")


# --- foreign weights files ----------------------------------------------------------------------


def test_torchvision_style_pth_is_identified(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18")
    state = model.state_dict()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "resnet18.pth")
    src = load_source(str(tmp_path / "resnet18.pth"), num_classes=1000, in_chans=3)
    assert src.model_name == "resnet18" and src.meta["kind"] == "weights" and src.meta["assumed"]
    assert src.meta["mean"] == (0.485, 0.456, 0.406) and src.meta["image_size"] == 224
    _assert_same_except(src.model, state, set())
    assert src.report.new == []

    # torch.compile's prefix, no wrapper, and the counters old torchvision files lack
    legacy = {f"_orig_mod.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "legacy.pt")
    src = load_source(str(tmp_path / "legacy.pt"), num_classes=7, in_chans=3, model_name="resnet18")
    assert src.model.bn1.num_batches_tracked.item() == 0
    _assert_same_except(src.model, state, {"fc.weight", "fc.bias"} | {k for k in state if "num_batches" in k})


def test_twins_are_ambiguous_without_model(tmp_path):
    torch.save(create_model("resnet20").state_dict(), tmp_path / "w.pth")
    with pytest.raises(CnnzooError, match=r"fits several models \(.*plain20.*resnet20.*\); pass --model"):
        load_source(str(tmp_path / "w.pth"), num_classes=10, in_chans=3)
    src = load_source(str(tmp_path / "w.pth"), num_classes=10, in_chans=3, model_name="plain20")
    assert src.model_name == "plain20" and src.meta["mean"] == tuple(CIFAR["mean"])


def test_bare_safetensors_is_identified(tmp_path):
    state = create_model("lenet5", num_classes=4).state_dict()
    save_file(state, str(tmp_path / "weights.safetensors"))
    src = load_source(str(tmp_path / "weights.safetensors"), num_classes=4, in_chans=1)
    assert src.model_name == "lenet5" and src.meta["source_num_classes"] == 4
    _assert_same_except(src.model, state, set())


def test_inception_aux_heads_are_replaced_and_variant_found(tmp_path):
    state = _random_state("googlenet", num_classes=10)
    torch.save(state, tmp_path / "g.pth")
    src = load_source(str(tmp_path / "g.pth"), num_classes=4, in_chans=3)
    assert src.model_name == "googlenet" and src.model_kwargs == {}
    assert sorted(src.report.new) == sorted(
        f"{m}.{p}" for m in ("aux1.fc2", "aux2.fc2", "fc") for p in ("weight", "bias")
    )
    assert src.model.aux1.fc2.out_features == 4 and src.meta["mean"] == (0.5, 0.5, 0.5)
    no_aux = {k: v for k, v in state.items() if not k.startswith("aux")}
    torch.save(no_aux, tmp_path / "g2.pth")
    src = load_source(str(tmp_path / "g2.pth"), num_classes=4, in_chans=3)
    assert src.model_kwargs == {"aux_logits": False} and src.model.aux1 is None
    src = load_source(str(tmp_path / "g2.pth"), num_classes=4, in_chans=3, model_name="googlenet")
    assert src.model_kwargs == {"aux_logits": False}


def test_timm_vgg_names_map_to_torchvision():
    gen = torch.Generator().manual_seed(0)
    timm = {
        "features.0.weight": torch.randn(8, 3, 3, 3, generator=gen),
        "features.0.bias": torch.randn(8, generator=gen),
        "pre_logits.fc1.weight": torch.randn(6, 8, 7, 7, generator=gen),
        "pre_logits.fc1.bias": torch.randn(6, generator=gen),
        "pre_logits.fc2.weight": torch.randn(5, 6, 1, 1, generator=gen),
        "pre_logits.fc2.bias": torch.randn(5, generator=gen),
        "head.fc.weight": torch.randn(3, 5, generator=gen),
        "head.fc.bias": torch.randn(3, generator=gen),
    }
    ours = map_timm_names(timm)
    assert list(ours) == [
        "features.0.weight", "features.0.bias",
        "classifier.0.weight", "classifier.0.bias",
        "classifier.3.weight", "classifier.3.bias",
        "classifier.6.weight", "classifier.6.bias",
    ]  # fmt: skip
    assert ours["classifier.0.weight"].shape == (6, 8 * 7 * 7) and ours["classifier.3.weight"].shape == (5, 6)
    # timm's 7x7 conv over the (C, 7, 7) map == torchvision's linear layer over the flattened map
    x = torch.randn(2, 8, 7, 7, generator=gen)
    conv = F.conv2d(x, timm["pre_logits.fc1.weight"], timm["pre_logits.fc1.bias"]).flatten(1)
    linear = F.linear(torch.flatten(x, 1), ours["classifier.0.weight"], ours["classifier.0.bias"])
    torch.testing.assert_close(conv, linear, rtol=1e-4, atol=1e-4)
    # DDP prefix and timm names together; a torchvision layout comes back as it is
    assert "classifier.6.bias" in clean_state_dict({f"module.{k}": v for k, v in timm.items()})
    plain = {"fc.weight": torch.zeros(2, 2)}
    assert map_timm_names(plain) is plain


# --- bad sources ----------------------------------------------------------------------------------


class _Payload:
    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_does_not_run(tmp_path, writer):
    marker, opened = tmp_path / "pwned", tmp_path / "opened"
    payloads = [
        (tmp_path / "system.pth", _Payload(os.system, (f"touch {marker}",))),
        (tmp_path / "open.pth", _Payload(builtins.open, (str(opened), "w"))),
    ]
    for path, payload in payloads:
        obj = {"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": payload}
        if writer == "torch.save":
            torch.save(obj, path)
        else:
            with open(path, "wb") as f:
                pickle.dump(obj, f, protocol=2)
        with pytest.raises(CnnzooError, match="not a readable weights file .*never unpickles"):
            load_source(str(path), num_classes=2, in_chans=3)
    assert not marker.exists() and not opened.exists()
    control = tmp_path / "control"  # the payload is live: plain unpickling runs it
    pickle.loads(pickle.dumps(_Payload(builtins.open, (str(control), "w")))).close()
    assert control.exists()


def test_files_that_are_not_weights(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, not weights\n")
    (tmp_path / "junk.pth").write_text("hello\n")
    torch.save({"epoch": 3, "lr": [0.1, 0.01]}, tmp_path / "state.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    (tmp_path / "empty").mkdir()
    for name, message in [
        ("notes.txt", "not a readable weights file"),
        ("junk.pth", "not a readable weights file"),
        ("state.pt", "holds no model state dict"),
        ("tensor.pt", "holds no model state dict"),
        ("empty", "no checkpoint in"),
        ("missing.pth", "not found"),
    ]:
        with pytest.raises(CnnzooError, match=message):
            load_source(str(tmp_path / name), num_classes=2, in_chans=1)


def test_truncated_files(lenet, tmp_path):
    run, model = lenet
    ours = run / "best.safetensors"
    ours.write_bytes(ours.read_bytes()[: ours.stat().st_size // 2])
    with pytest.raises(CnnzooError, match="unreadable safetensors"):
        load_source(str(run), num_classes=10, in_chans=1)
    save_file(model.state_dict(), str(tmp_path / "bare.safetensors"))
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(bare.read_bytes()[:100])
    with pytest.raises(CnnzooError, match="unreadable safetensors"):
        load_source(str(bare), num_classes=10, in_chans=1)
    torch.save(model.state_dict(), tmp_path / "cut.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(cut.read_bytes()[:-200])
    with pytest.raises(CnnzooError, match="not a readable weights file"):
        load_source(str(cut), num_classes=10, in_chans=1)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = create_model("lenet5").state_dict()
    del state["features.4.weight"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(CnnzooError, match=r"missing: features\.4\.weight; unexpected: extra\.weight"):
        load_source(str(tmp_path / "w.pth"), num_classes=10, in_chans=1, model_name="lenet5")
    with pytest.raises(CnnzooError, match="fit no cnnzoo model; pass --model"):
        load_source(str(tmp_path / "w.pth"), num_classes=10, in_chans=1)


def test_weights_of_another_architecture(tmp_path):
    torch.save(create_model("lenet5").state_dict(), tmp_path / "lenet.pth")
    with pytest.raises(
        CnnzooError, match=r"does not fit resnet18: missing: conv1\.weight.*looks like lenet5"
    ):
        load_source(str(tmp_path / "lenet.pth"), num_classes=10, in_chans=3, model_name="resnet18")
    with pytest.raises(CnnzooError, match="unknown model"):
        load_source(str(tmp_path / "lenet.pth"), num_classes=10, in_chans=3, model_name="resnet19")


# --- torchvision:NAME ---------------------------------------------------------------------------------


def test_torchvision_names_without_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as if not installed
    with pytest.raises(CnnzooError, match=r"pip install 'cnnzoo\[torchvision\]'"):
        load_source("torchvision:resnet18", num_classes=10, in_chans=3)
    with pytest.raises(CnnzooError, match="no torchvision weights for 'lenet5'"):
        load_source("torchvision:lenet5", num_classes=10, in_chans=3)


def _fake_torchvision(monkeypatch, fetch):
    """A stand-in torchvision whose weights download through `fetch` (no network in tests)."""
    weights = types.SimpleNamespace(
        url="https://example.invalid/resnet18-0000.pth", meta={"categories": ["a", "b"]}
    )
    models = types.ModuleType("torchvision.models")
    models.get_model_weights = lambda name: types.SimpleNamespace(DEFAULT=weights)
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fetch)


def test_torchvision_download_failure(monkeypatch):
    def offline(url, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    _fake_torchvision(monkeypatch, offline)
    with pytest.raises(CnnzooError, match="could not fetch torchvision's resnet18 weights.*pass the file"):
        load_source("torchvision:resnet18", num_classes=10, in_chans=3)


def test_torchvision_weights_load(monkeypatch):
    torch.manual_seed(0)
    state = create_model("resnet18", num_classes=2).state_dict()
    calls = []

    def fetch(url, **kwargs):
        calls.append(kwargs)
        return {k: v.clone() for k, v in state.items()}

    _fake_torchvision(monkeypatch, fetch)
    src = load_source("torchvision:resnet18", num_classes=5, in_chans=1)
    assert calls[0]["weights_only"] is True and calls[0]["map_location"] == "cpu"
    assert src.meta["kind"] == "torchvision" and src.meta["source_classes"] == ["a", "b"]
    assert src.meta["image_size"] == 224 and not src.meta["assumed"]
    assert src.meta["mean"] == pytest.approx((0.449,)) and src.model.conv1.in_channels == 1
    _assert_same_except(src.model, state, {"fc.weight", "fc.bias", "conv1.weight"})
    with pytest.raises(CnnzooError, match="does not match"):
        load_source("torchvision:resnet18", num_classes=5, in_chans=3, model_name="resnet34")
