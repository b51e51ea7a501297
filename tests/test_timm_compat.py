"""timm's own model tests, run on cnnzoo's models, and cnnzoo's export folders loaded by timm.

Part (a) ports timm's `tests/test_models.py` (timm 1.0.x: `test_model_default_cfgs`, `_backward`,
`_forward_torchscript`, `_forward_features`, `_forward_intermediates`, `_forward_fx`, `_backward_fx`,
`_forward_fx_torchscript`) to every registered cnnzoo model: the same calls, sizes and assertions, with
`cnnzoo.create_model` for `timm.create_model`. Where a cnnzoo model differs from timm's assumptions by
design, the assertion says so (LeNet-5 has two stages where timm's models have three or more; LeNet-5
(1998)'s classifier is an RBF layer of fixed prototypes, a buffer, not a weight; heads that flatten a
fixed map cannot drop their pooling, as timm's `EARLY_POOL_MODELS`).

Part (b): an export folder is a timm model folder. `timm.create_model("local-dir:DIR", pretrained=True)`,
in a Python that never imports cnnzoo, gives cnnzoo's logits on every architecture timm has; the
card's front matter reads with huggingface_hub's `ModelCard`.

torchvision and timm need a CUDA build of torch, so they are not in CI: `make test-peers` builds a side
environment with both and runs this file (skipped without them, as `tests/test_torchvision_compat.py`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")
pytest.importorskip("torchvision")
from timm.models import get_notrace_functions, get_notrace_modules  # noqa: E402
from torchvision.models.feature_extraction import (  # noqa: E402
    NodePathTracer,
    create_feature_extractor,
    get_graph_node_names,
)

import cnnzoo  # noqa: E402
from cnnzoo.artifacts.checkpoint import save_checkpoint  # noqa: E402
from cnnzoo.inference.export import export_model  # noqa: E402
from cnnzoo.inference.export import safetensors as export_safetensors  # noqa: E402
from cnnzoo.inference.export.hub import TIMM_MODELS  # noqa: E402

NAMES = cnnzoo.list_models()
# timm's size targets (tests/test_models.py)
TARGET_BWD_SIZE, TARGET_JIT_SIZE, TARGET_FFEAT_SIZE, TARGET_FWD_FX_SIZE = 128, 128, 96, 128
MAX_FWD_OUT_SIZE = 448


def _get_input_size(model: nn.Module, target: int | None = None) -> tuple[int, ...]:
    """timm's `_get_input_size`, reading the model's `default_cfg` (the min_input_size when the input is
    above the target)."""
    cfg = model.default_cfg
    input_size, min_input_size = cfg["input_size"], cfg.get("min_input_size")
    if cfg.get("fixed_input_size"):
        return input_size
    if min_input_size:
        if target and max(input_size) > target:
            input_size = min_input_size
    elif target and max(input_size) > target:
        input_size = tuple(min(x, target) for x in input_size)
    return tuple(input_size)


def _pools_globally(model: nn.Module) -> bool:
    """What timm's EARLY_POOL_MODELS marks the other way: can the head drop its pooling?"""
    return "" in type(model).global_pool_options()


# --- (a) timm's model tests -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_model_default_cfgs(name):
    model = cnnzoo.create_model(name).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state_dict = model.state_dict()
    cfg = model.default_cfg
    pool_size, input_size = cfg["pool_size"], cfg["input_size"]
    assert all(x <= MAX_FWD_OUT_SIZE for x in input_size)
    x = torch.randn(1, *input_size)
    with torch.no_grad():
        outputs = model.forward_features(x)
        outputs_pre = model.forward_head(outputs, pre_logits=True)
        assert tuple(outputs.shape[2:]) == tuple(pool_size), f"unpooled feature shape {outputs.shape}"
        assert outputs.shape[1] == model.num_features and outputs_pre.shape[1] == model.head_hidden_size
        model.reset_classifier(0)
        assert model.num_classes == 0
        outputs = model(x)
        assert outputs.ndim == 2 and outputs.shape == outputs_pre.shape
        if _pools_globally(model):
            model.reset_classifier(0, "")
            assert tuple(model(x).shape[2:]) == tuple(pool_size)
            unpooled = cnnzoo.create_model(name, num_classes=0, global_pool="").eval()
            assert tuple(unpooled(x).shape[2:]) == tuple(pool_size)
    for c in (cfg["classifier"],) if cfg.get("num_classes") else ():
        # timm looks for c + ".weight"; LeNet-5 (1998)'s RBF output holds its prototypes (a buffer)
        assert any(k.startswith(c + ".") for k in state_dict), f"{c} not in model params"
    assert cfg["first_conv"] + ".weight" in state_dict


@pytest.mark.parametrize("name", NAMES)
def test_model_backward(name):
    model = cnnzoo.create_model(name, num_classes=42).train()
    input_size = _get_input_size(model, TARGET_BWD_SIZE)
    num_params = sum(p.numel() for p in model.parameters())
    outputs = model(torch.randn(2, *input_size))
    if isinstance(outputs, tuple):  # Inception's (logits, auxiliary logits) in training
        outputs = torch.cat(outputs)
    outputs.mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
    assert sum(p.grad.numel() for p in model.parameters()) == num_params
    assert outputs.shape[-1] == 42 and not torch.isnan(outputs).any()


@pytest.mark.parametrize("name", NAMES)
def test_model_forward_torchscript(name):
    model = cnnzoo.create_model(name).eval()
    input_size = _get_input_size(model, TARGET_JIT_SIZE)
    scripted = torch.jit.script(model)
    outputs = scripted(torch.randn(1, *input_size))
    assert outputs.shape[0] == 1 and not torch.isnan(outputs).any()


@pytest.mark.parametrize("name", NAMES)
def test_model_forward_features(name):
    model = cnnzoo.create_model(name, features_only=True).eval()
    expected_channels = model.feature_info.channels()
    expected_reduction = model.feature_info.reduction()
    assert len(expected_channels) >= (2 if name == "lenet5" else 3)  # LeNet-5: two conv stages
    input_size = _get_input_size(model, TARGET_FFEAT_SIZE)
    with torch.no_grad():
        outputs = model(torch.randn(1, *input_size))
    assert len(expected_channels) == len(outputs)
    for e, r, o in zip(expected_channels, expected_reduction, outputs, strict=True):
        assert e == o.shape[1] and o.shape[0] == 1 and not torch.isnan(o).any()
        assert (
            o.shape[2] <= math.ceil(input_size[1] / r) + 1 and o.shape[3] <= math.ceil(input_size[2] / r) + 1
        )
    assert model.feature_info.module_name() == [f["module"] for f in model.feature_info]


@pytest.mark.parametrize("name", NAMES)
def test_model_forward_intermediates(name):
    model = cnnzoo.create_model(name).eval()
    feature_info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    expected_channels, expected_reduction = feature_info.channels(), feature_info.reduction()
    assert expected_channels == model.feature_info.channels()
    input_size = _get_input_size(model, TARGET_FFEAT_SIZE)
    x = torch.randn(1, *input_size)
    with torch.no_grad():
        output, intermediates = model.forward_intermediates(x, output_fmt="NCHW")
        assert torch.allclose(output, model.forward_features(x))
    assert len(expected_channels) == len(intermediates)
    for e, r, o in zip(expected_channels, expected_reduction, intermediates, strict=True):
        assert e == o.shape[1] and o.shape[2] <= math.ceil(input_size[1] / r) + 1


def _create_fx_model(model: nn.Module, train: bool = False) -> nn.Module:
    """timm's `_create_fx_model`: torchvision's feature extractor returning the model's output node(s).

    In training, timm finds the nodes feeding the graph's output by their positions; here by the
    tracer's own names, and through a NamedTuple's constructor: cnnzoo's GoogLeNet and Inception v3
    return `GoogLeNetOutputs` / `InceptionOutputs` in training, as torchvision's do (timm's a tuple)."""
    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(),
        autowrap_functions=get_notrace_functions(),
        param_shapes_constant=True,
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes, train_return_nodes = [eval_nodes[-1]], [train_nodes[-1]]
    if train:
        tracer = NodePathTracer(**tracer_kwargs)
        graph = tracer.trace(model)
        inputs = list(next(n for n in graph.nodes if n.op == "output")._input_nodes)
        if len(inputs) == 1 and inputs[0].op == "call_function" and hasattr(inputs[0].target, "_fields"):
            inputs = list(inputs[0]._input_nodes)
        train_return_nodes = [tracer.node_to_qualname[n] for n in inputs]
    return create_feature_extractor(
        model,
        train_return_nodes=train_return_nodes,
        eval_return_nodes=eval_return_nodes,
        tracer_kwargs=tracer_kwargs,
    )


@pytest.mark.parametrize("name", NAMES)
def test_model_forward_fx(name):
    """Eager and the FX graph give the same logits bit for bit (LeNet-5's fast path included)."""
    model = cnnzoo.create_model(name).eval()
    input_size = _get_input_size(model, TARGET_FWD_FX_SIZE)
    with torch.inference_mode():
        inputs = torch.randn(1, *input_size)
        outputs = model(inputs)
        fx_outputs = torch.cat(tuple(_create_fx_model(model)(inputs).values()))
    assert torch.all(fx_outputs == outputs)
    assert not torch.isnan(outputs).any()


@pytest.mark.parametrize("name", NAMES)
def test_model_backward_fx(name):
    model = cnnzoo.create_model(name, num_classes=42).train()
    input_size = _get_input_size(model, TARGET_BWD_SIZE)
    num_params = sum(p.numel() for p in model.parameters())
    fx_model = _create_fx_model(model, train=True)
    outputs = torch.cat(tuple(fx_model(torch.randn(2, *input_size)).values()))
    outputs.mean().backward()
    for n, p in fx_model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
    assert sum(p.grad.numel() for p in fx_model.parameters()) == num_params
    assert outputs.shape[-1] == 42 and not torch.isnan(outputs).any()


@pytest.mark.parametrize("name", NAMES)
def test_model_forward_fx_torchscript(name):
    model = cnnzoo.create_model(name).eval()
    input_size = _get_input_size(model, TARGET_JIT_SIZE)
    scripted = torch.jit.script(_create_fx_model(model))
    with torch.inference_mode():
        outputs = torch.cat(tuple(scripted(torch.randn(1, *input_size)).values()))
    assert outputs.shape[0] == 1 and not torch.isnan(outputs).any()


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "vgg11_bn", "inception_v3"])
def test_features_only_scripts_and_traces(name):
    """timm's test_model_forward_torchscript_with_features_fx, on cnnzoo's FX-built feature models."""
    model = cnnzoo.create_model(name, features_only=True).eval()
    input_size = _get_input_size(model, TARGET_JIT_SIZE)
    x = torch.randn(1, *input_size)
    with torch.inference_mode():
        expected = model(x)
        scripted = torch.jit.script(model)(x)
        traced = torch.fx.symbolic_trace(model)(x)
    assert isinstance(scripted, list) and len(scripted) == len(expected) == len(model.feature_info)
    for a, b, c in zip(expected, scripted, traced, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        assert torch.equal(c, a)


# --- (b) export folders are timm model folders -------------------------------------------------------

# (architecture, in_chans, image_size): every architecture timm has, at a small size (VGG's 2x2 map is
# pooled up to 7x7 by both), plus ResNet-50 and VGG-16 at ImageNet's 224 and a one-channel ResNet-18
TIMM_CASES = [(name, 3, 75 if name == "inception_v3" else 64) for name in sorted(TIMM_MODELS)] + [
    ("resnet50", 3, 224),
    ("vgg11_bn", 3, 224),
    ("resnet18", 1, 28),
]

_TIMM_LOAD = """
import json, sys, torch, timm
out = {}
for folder in sys.argv[1:]:
    model = timm.create_model("local-dir:" + folder, pretrained=True).eval()
    with torch.no_grad():
        torch.save(model(torch.load(folder + "/x.pt")), folder + "/timm.pt")
    out[folder] = [type(model).__name__, model.num_classes, list(model.pretrained_cfg["label_names"])]
assert not [m for m in sys.modules if m.split(".")[0] == "cnnzoo"], "cnnzoo was imported"
print(json.dumps(out))
"""


def _randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)


@pytest.fixture(scope="module")
def timm_exports(tmp_path_factory):
    """Each case exported by `cnnzoo export` from a checkpoint (random weights, non-trivial BatchNorm),
    then loaded by timm in one Python process that never imports cnnzoo. (The export's own timm check,
    a process per folder, is left to `test_the_export_checks_timm_itself`.)"""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_safetensors, "timm_check", lambda *args: None)
        return _export_and_load(tmp_path_factory.mktemp("timm"))


def _export_and_load(root) -> dict:
    cases, classes = {}, [f"class {i}" for i in range(7)]
    for name, chans, size in TIMM_CASES:
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = cnnzoo.create_model(name, num_classes=len(classes), in_chans=chans).eval()
        _randomise_batchnorm(model, gen)
        meta = dict(model=name, model_kwargs={}, classes=classes, in_chans=chans, image_size=size,
                    mean=[0.5] * chans, std=[0.25] * chans)  # fmt: skip
        case = root / f"{name}-{chans}x{size}"
        export_model(save_checkpoint(root / f"run-{case.name}", "best", model, meta), case, "safetensors")
        x = torch.randn(4, chans, size, size, generator=gen)
        torch.save(x, case / "x.pt")
        with torch.no_grad():
            cases[case] = model(x)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.pop("PYTHONPATH", None)
    args = [sys.executable, "-I", "-c", _TIMM_LOAD, *map(str, cases)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return {case: (ours, loaded[str(case)], torch.load(case / "timm.pt")) for case, ours in cases.items()}


def test_timm_gives_cnnzoos_logits(timm_exports):
    rows = []
    for case, (ours, (cls, num_classes, labels), theirs) in timm_exports.items():
        scale, diff = ours.abs().max().item(), (theirs - ours).abs().max().item()
        rows.append(
            f"{case.name:22} timm {cls:12} max |diff| {diff:.1e} = {diff / scale:.1e} of the logit scale"
        )
        assert theirs.shape == ours.shape and num_classes == ours.shape[1]
        assert labels == [f"class {i}" for i in range(7)]
        assert diff <= 1e-5 * scale, rows[-1]
    print("\n".join(["", "timm local-dir logits against cnnzoo's:", *rows]))


def test_the_export_checks_timm_itself(tmp_path):
    """Where timm is installed, `cnnzoo export` runs it on the folder and puts the figure on the card."""
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet18", num_classes=3, in_chans=1).eval()
    meta = dict(model="resnet18", model_kwargs={}, classes=["a", "b", "c"], in_chans=1, image_size=28,
                mean=[0.5], std=[0.25])  # fmt: skip
    report = export_model(
        save_checkpoint(tmp_path / "run", "best", model, meta), tmp_path / "out", "safetensors"
    )
    line = report.checks[-1]
    assert line.startswith("timm: timm.create_model('local-dir:...') in a Python process without cnnzoo")
    assert f"- {line}" in (tmp_path / "out" / "README.md").read_text()


def test_the_folder_reads_back_in_cnnzoo(timm_exports):
    for case, (ours, _, _) in timm_exports.items():
        x = torch.load(case / "x.pt")
        with torch.no_grad():
            assert torch.equal(cnnzoo.load(case).model(x), ours)


def test_the_card_is_a_hub_model_card(timm_exports):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    case = next(c for c in timm_exports if c.name == "vgg11_bn-3x224")
    card = huggingface_hub.ModelCard.load(case / "README.md")
    assert card.data.library_name == "timm" and "image-classification" in card.data.tags
    assert card.data.license == "mit" and card.data.metrics == ["accuracy"]
    config = json.loads((case / "config.json").read_text())
    assert config["architecture"] == "vgg11_bn" and config["pretrained_cfg"]["classifier"] == "head.fc"
    assert "timm.create_model('local-dir:" in card.text


def test_a_network_timm_lacks_says_so(tmp_path):
    """LeNet-5: timm refuses the folder by name (`cnnzoo/lenet5`) and the card shows torch.hub instead."""
    export_model("lenet5:mnist", tmp_path / "lenet5", "safetensors")
    config = json.loads((tmp_path / "lenet5" / "config.json").read_text())
    assert config["architecture"] == "cnnzoo/lenet5" and config["label_names"] == [str(i) for i in range(10)]
    with pytest.raises(RuntimeError, match="Unknown model"):
        timm.create_model(f"local-dir:{tmp_path / 'lenet5'}", pretrained=True)
    card = (tmp_path / "lenet5" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: cnnzoo\n") and "torch.hub.load(" in card
