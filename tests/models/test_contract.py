"""The model contract timm's and torchvision's own test suites assert, over the whole registry.

Every registered model, built once at its smallest input (Inception v3 at its eval minimum, 75): compiles
with `torch.jit.script` (eval outputs equal eager), traces with `torch.fx.symbolic_trace`, gives its pooled
features with `num_classes=0` / `reset_classifier(0)` (and its map with `global_pool=""` where the head pools
globally), returns per-stage maps from `forward_intermediates` as `feature_info` describes them, and carries a
`pretrained_cfg` that names its first convolution and classifier. `torch.export` with a dynamic batch runs
on one model of each family and variant (the others differ from it only in depth, widths or block type),
ONNX export on five of them (two run in onnxruntime); `CNNZOO_CONTRACT_FULL=1` runs both on every model.
"""

import os
import warnings

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.models import list_models, model_info
from cnnzoo.models._base import FeatureListNet
from cnnzoo.models.inception_v3 import EVAL_MIN_SIZE

NAMES = list_models()
FULL = bool(os.environ.get("CNNZOO_CONTRACT_FULL"))
# one of each family and variant: the others differ only in depth, widths or block type
EXPORT_NAMES = (
    NAMES
    if FULL  # ONNX conversion costs 2-8 s of CPU per model
    else ["lenet5", "lenet5_1998", "alexnet2012", "vgg11_bn", "resnet18", "resnet20", "plain20", "googlenet",
          "inception_v3"]
)  # fmt: skip
ONNX_NAMES = NAMES if FULL else ["lenet5", "lenet5_1998", "alexnet2012", "vgg11_bn", "resnet20"]
POOLED = {"resnet", "inception"}  # families whose head pools globally (global_pool="" makes sense)


def side(name: str) -> int:
    return EVAL_MIN_SIZE if name == "inception_v3" else model_info(name).min_size


def batch(name: str, n: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, model_info(name).in_chans, side(name), side(name), generator=gen)


@pytest.fixture(scope="class", params=NAMES)
def built(request):
    """(name, model in eval mode with 3 classes): built once per model for all the checks below."""
    torch.manual_seed(0)
    return request.param, cnnzoo.create_model(request.param, num_classes=3).eval()


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = max(1.0, b.abs().max().item())
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


class TestEveryModel:
    def test_torchscript_equals_eager(self, built):
        name, model = built
        x = batch(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(model)
        with torch.no_grad():
            close(scripted(x), model(x))

    def test_fx_trace_equals_eager(self, built):
        name, model = built
        traced = torch.fx.symbolic_trace(model)
        x = batch(name)
        with torch.no_grad():
            close(traced(x), model(x))

    def test_num_classes_zero_gives_pooled_features(self, built):
        name, model = built
        x = batch(name)
        with torch.no_grad():
            pre = model.forward_head(model.forward_features(x), pre_logits=True)
            assert pre.shape == (2, model.head_hidden_size)
            model.reset_classifier(0)
            try:
                assert isinstance(model.get_classifier(), nn.Identity) and model.num_classes == 0
                close(model(x), pre)
            finally:
                model.reset_classifier(3)
            assert model(x).shape == (2, 3)

    def test_num_features_are_the_channels_of_forward_features(self, built):
        name, model = built
        with torch.no_grad():
            feats = model.forward_features(batch(name))
        assert feats.ndim == 4 and feats.shape[1] == model.num_features

    def test_forward_intermediates_match_feature_info(self, built):
        name, model = built
        x = batch(name)
        info = model.feature_info
        with torch.no_grad():
            final, maps = model.forward_intermediates(x)
            close(final, model.forward_features(x))
            assert [m.shape[1] for m in maps] == [f["num_chs"] for f in info]
            close(maps[-1], final)
            last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [m.shape for m in last_two] == [m.shape for m in maps[-2:]]
        sides = [m.shape[-1] for m in maps]
        assert sides == sorted(sides, reverse=True)  # stages only ever shrink the map
        reductions = [f["reduction"] for f in info]
        assert reductions == sorted(reductions) and all(r >= 1 for r in reductions)

    def test_pretrained_cfg_names_first_conv_and_classifier(self, built):
        name, model = built
        cfg = model.pretrained_cfg
        info = model_info(name)
        conv = model.get_submodule(cfg["first_conv"])
        assert isinstance(conv, nn.Conv2d) and conv.in_channels == info.in_chans
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
        assert first is conv or isinstance(first, nn.Linear)  # it is the first convolution applied
        assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
        for aux in cfg["aux_classifiers"]:
            assert model.get_submodule(aux).out_features == 3
        assert cfg["input_size"] == (info.in_chans, info.input_size, info.input_size)
        assert len(cfg["mean"]) == len(cfg["std"]) == info.in_chans and cfg["num_classes"] == 3

    def test_default_cfg_has_the_pool_size_timms_tests_read(self, built):
        """`default_cfg` is `pretrained_cfg`, with `pool_size`: forward_features' map at input_size (found
        on the meta device; checked here against a real forward at the test's side)."""
        name, model = built
        cfg = model.default_cfg
        assert cfg is model.pretrained_cfg
        assert cfg["pool_size"] == model.feature_map_size(cfg["input_size"][-1])
        with torch.no_grad():
            feats = model.forward_features(batch(name))
        assert model.feature_map_size(side(name)) == tuple(feats.shape[-2:])

    def test_feature_info_answers_timms_accessors(self, built):
        _, model = built
        info = model.feature_info
        assert info.channels() == [f["num_chs"] for f in info] and info.reduction(0) == info[0]["reduction"]
        assert info.module_name([-1]) == [info[-1]["module"]]
        assert info.get_dicts(keys=["num_chs"], idx=0) == {"num_chs": info[0]["num_chs"]}


@pytest.mark.parametrize("name", NAMES)
def test_create_model_num_classes_zero_and_global_pool(name):
    """Built on the meta device: the structure alone, no memory and no initialisation."""
    with torch.device("meta"):
        model = cnnzoo.create_model(name, num_classes=0)
        assert isinstance(model.get_classifier(), nn.Identity) and model.pretrained_cfg["num_classes"] == 0
        x = batch(name).to("meta")
        assert model.eval()(x).shape == (2, model.head_hidden_size)
        if model_info(name).family in POOLED:
            unpooled = cnnzoo.create_model(name, num_classes=0, global_pool="").eval()
            assert unpooled(x).shape == unpooled.forward_features(x).shape
            with pytest.raises(CnnzooError, match="num_classes=0"):  # a map cannot feed a linear layer
                cnnzoo.create_model(name, num_classes=5, global_pool="")
        else:  # the head flattens a fixed-size map: pooling cannot be turned off
            with pytest.raises(CnnzooError, match="global_pool"):
                cnnzoo.create_model(name, num_classes=0, global_pool="")


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "googlenet"])
def test_features_only(name):
    torch.manual_seed(0)
    net = cnnzoo.create_model(name, features_only=True, out_indices=(-2, -1)).eval()
    assert isinstance(net, FeatureListNet) and len(net.feature_info) == 2
    with torch.no_grad():
        maps = net(batch(name))
    assert [m.shape[1] for m in maps] == net.feature_info.channels()
    with pytest.raises(CnnzooError, match="stages"):
        cnnzoo.create_model(name, features_only=True, out_indices=(99,))


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "googlenet", "alexnet2012"])
def test_features_only_scripts_traces_and_holds_only_the_stages(name):
    """The feature model is the network traced down to its stages: it compiles with TorchScript and traces
    again with FX (timm's and torchvision's feature tests do both), giving `forward_intermediates`' maps;
    its weights keep their names under `model.`, without the head."""
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=3).eval()
    net = cnnzoo.create_model(name, features_only=True)
    own = {k.removeprefix("model."): v for k, v in net.state_dict().items()}
    assert set(own) < set(model.state_dict()) and not [k for k in own if k.startswith(model.classifier_path)]
    model.load_state_dict(own, strict=False)
    x = batch(name)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model.forward_intermediates(x, intermediates_only=True)
        for out in (net.eval()(x), torch.jit.script(net)(x), torch.fx.symbolic_trace(net)(x)):
            assert len(out) == len(expected)
            for got, want in zip(out, expected, strict=True):
                close(got, want)
    cfg = net.default_cfg
    assert "classifier" not in cfg and "num_classes" not in cfg and cfg["pool_size"]
    net.train()
    sum(m.mean() for m in net(x)).backward()  # trains like any module


@pytest.mark.parametrize("name", EXPORT_NAMES)
def test_torch_export_and_onnx_with_dynamic_batch(name, tmp_path):
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=3).eval()
    dim = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (batch(name),), dynamic_shapes=({0: dim},))
    with torch.no_grad():
        for n in (1, 3):  # sizes other than the example's
            x = batch(name, n, seed=n)
            close(program.module()(x), model(x))
    if name not in ONNX_NAMES:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(program, dynamo=True, opset_version=18, verbose=False)
    graph_input = onnx_program.model.graph.inputs[0]
    assert not isinstance(graph_input.shape[0], int)  # a symbolic batch axis
    if name in ("lenet5", "resnet20"):  # small enough to run in onnxruntime here
        ort = pytest.importorskip("onnxruntime")
        path = tmp_path / "m.onnx"
        onnx_program.save(str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for n in (1, 5):
            x = batch(name, n, seed=n)
            (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            close(torch.from_numpy(out), model(x).detach())
