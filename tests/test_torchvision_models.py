"""torchvision's own model tests, run on cnnzoo's models.

Ports, to every registered cnnzoo model, the checks torchvision runs on its classification models
(`test/test_models.py`: `_check_jit_scriptable` with a save/load round trip, `_check_fx_compatible`,
`_check_input_backprop`) and on its FX feature extraction (`test/test_backbone_utils.py`:
`TestFxFeatureExtraction`: building extractors from ten random train and eval nodes, forward and
backward, the same through `torch.jit.script`, and `IntermediateLayerGetter` against FX on ResNet-18).
Inputs: the model's own channels at 64x64 (LeNet-5 at 28, Inception v3 at 299, the side its auxiliary
head needs in training) instead of torchvision's 224, to keep the VGGs' backward passes short.

Needs torchvision (a CUDA build of torch comes with it): `make test-peers`; skipped without it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from itertools import chain

import pytest
import torch

pytest.importorskip("torchvision")
from torchvision.models._utils import IntermediateLayerGetter  # noqa: E402
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names  # noqa: E402

import cnnzoo  # noqa: E402
from cnnzoo.models import model_info  # noqa: E402

NAMES = cnnzoo.list_models()
EXCLUDE_NODES = ["getitem", "floordiv", "size", "chunk", "_assert", "eq", "dim", "getattr"]  # torchvision's


def _input(name: str, n: int = 1) -> torch.Tensor:
    info = model_info(name)
    side = {"lenet": 28, "inception": 299 if name == "inception_v3" else 64}.get(info.family, 64)
    return torch.rand(n, info.in_chans, side, side, generator=torch.Generator().manual_seed(0))


def _model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model(name, num_classes=kwargs.pop("num_classes", 50), **kwargs)


# --- test_models.py: test_classification_model's checks ----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_classification_model(name, tmp_path):
    model = _model(name).eval()
    x = _input(name)
    out = model(x)
    assert out.shape[-1] == 50
    # _check_jit_scriptable: scripted = eager, and the same after save / load
    scripted = torch.jit.script(model)
    with torch.no_grad():
        eager_out = model(x)
        script_out = scripted(x)
    torch.testing.assert_close(eager_out, script_out, atol=1e-4, rtol=1e-4)
    scripted.save(str(tmp_path / "script.pt"))
    with torch.no_grad():
        imported_out = torch.jit.load(str(tmp_path / "script.pt"))(x)
    torch.testing.assert_close(script_out, imported_out, atol=3e-4, rtol=3e-4)
    # _check_fx_compatible (torchvision compares with assert_close's defaults; cnnzoo's are bitwise equal)
    fx_out = torch.fx.symbolic_trace(model)(x)
    torch.testing.assert_close(out, fx_out)
    assert torch.equal(out, fx_out)
    # _check_input_backprop
    x.requires_grad_(True)
    model(x)[0].sum().backward()
    assert x.grad is not None


# --- test_backbone_utils.py: TestFxFeatureExtraction --------------------------------------------------


def _get_return_nodes(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    random.seed(0)
    torch.manual_seed(0)
    train_nodes, eval_nodes = get_graph_node_names(
        model, tracer_kwargs={"leaf_modules": []}, suppress_diff_warning=True
    )
    # torchvision drops the nodes that do not return tensors, as they break the backward pass
    train_nodes = [n for n in train_nodes if not any(x in n for x in EXCLUDE_NODES)]
    eval_nodes = [n for n in eval_nodes if not any(x in n for x in EXCLUDE_NODES)]
    return random.sample(train_nodes, 10), random.sample(eval_nodes, 10)


def _create_feature_extractor(*args, **kwargs):
    return create_feature_extractor(
        *args, **kwargs, tracer_kwargs={"leaf_modules": []}, suppress_diff_warning=True
    )


def _aggregate(out: dict) -> torch.Tensor:
    total = 0
    for node_out in out.values():
        if isinstance(node_out, Sequence):
            total += sum(o.mean() for o in node_out if o is not None)
        elif isinstance(node_out, Mapping):
            total += sum(o.mean() for o in node_out.values() if o is not None)
        else:  # torchvision assumes the only other alternative is a Tensor
            total += node_out.mean()
    return total


@pytest.mark.parametrize("name", NAMES)
def test_build_fx_feature_extractor(name):
    model = _model(name, num_classes=1).eval()
    train_nodes, eval_nodes = _get_return_nodes(model)
    _create_feature_extractor(
        model, train_return_nodes={v: v for v in train_nodes}, eval_return_nodes=eval_nodes
    )
    _create_feature_extractor(model, train_return_nodes=train_nodes, eval_return_nodes=eval_nodes)
    with pytest.raises((AssertionError, ValueError)):  # ValueError since torchvision 0.2x
        _create_feature_extractor(model)
    with pytest.raises((AssertionError, ValueError)):  # ValueError since torchvision 0.2x
        _create_feature_extractor(model, return_nodes=train_nodes, train_return_nodes=train_nodes)
    with pytest.raises((AssertionError, ValueError)):  # ValueError since torchvision 0.2x
        _create_feature_extractor(model, train_return_nodes=train_nodes)
    if not any(n.startswith("l") for n in chain(train_nodes, eval_nodes)):
        with pytest.raises(ValueError):
            _create_feature_extractor(model, train_return_nodes=["l"], eval_return_nodes=["l"])


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    model = _model(name, num_classes=1).train()
    train_nodes, eval_nodes = _get_return_nodes(model)
    model = _create_feature_extractor(model, train_return_nodes=train_nodes, eval_return_nodes=eval_nodes)
    _aggregate(model(_input(name, 2))).backward()


@pytest.mark.parametrize("name", NAMES)
def test_jit_forward_backward(name):
    model = _model(name, num_classes=1).train()
    train_nodes, eval_nodes = _get_return_nodes(model)
    model = _create_feature_extractor(model, train_return_nodes=train_nodes, eval_return_nodes=eval_nodes)
    model = torch.jit.script(model)
    _aggregate(model(_input(name, 2))).backward()


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "vgg11_bn", "googlenet", "inception_v3"])
def test_the_stages_extractor_scripts(name):
    """The stages `feature_info` names, extracted by torchvision and compiled, give `forward_intermediates`."""
    model = _model(name).eval()
    nodes = model.feature_info.module_name()
    scripted = torch.jit.script(_create_feature_extractor(model, return_nodes=nodes))
    x = _input(name, 2)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        out = scripted(x)
    assert list(out) == nodes
    for got, want in zip(out.values(), maps, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_feature_extraction_methods_equivalence():
    model = _model("resnet18", num_classes=1).eval()
    return_layers = {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}
    ilg_model = IntermediateLayerGetter(model, return_layers).eval()
    fx_model = _create_feature_extractor(model, return_layers)
    # the same parameters (torchvision zips the two lists: FX registers them in the order forward uses
    # them, and cnnzoo's blocks compute the shortcut before conv1, so the order differs, not the set)
    ilg, fx = dict(ilg_model.named_parameters()), dict(fx_model.named_parameters())
    assert set(ilg) == set(fx) and all(ilg[k].equal(fx[k]) for k in ilg)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ilg_out, fgn_out = ilg_model(x), fx_model(x)
    assert list(ilg_out) == list(fgn_out)
    assert all(ilg_out[k].equal(fgn_out[k]) for k in ilg_out)
