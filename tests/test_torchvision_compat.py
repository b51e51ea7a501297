"""cnnzoo's models lay out their weights exactly as torchvision's, so its checkpoints load with strict=True.

Part (a) needs no torchvision: it compares each cnnzoo model's state_dict (keys, order, shapes) with
``tests/fixtures/torchvision_state_dicts.json``, recorded once by ``scripts/make_torchvision_fixture.py``
in a side environment that has torchvision. Part (b) runs only where torchvision is importable: it
copies a randomly initialised torchvision model into ours and checks both give the same outputs.

    /work/tvenv/bin/python -m pytest tests/test_torchvision_compat.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnzoo

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_state_dicts.json"
DATA = json.loads(FIXTURE.read_text())
MODELS: dict[str, dict] = DATA["models"]

# cnnzoo keyword arguments giving the layout the fixture recorded (torchvision's pretrained
# GoogLeNet has no auxiliary heads; Inception-v3's keeps them, which is both libraries' default).
CNNZOO_KWARGS: dict[str, dict] = {"googlenet": {"aux_logits": False}}


def _zoo_layout(name: str) -> list[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):  # no memory, no init cost
        model = cnnzoo.create_model(name, **CNNZOO_KWARGS.get(name, {}))
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _tv_layout(name: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(shape)) for k, shape in MODELS[name]["state_dict"]]


def _diff_report(ours: dict, theirs: dict, limit: int = 25) -> str:
    missing = [k for k in theirs if k not in ours]
    unexpected = [k for k in ours if k not in theirs]
    wrong = [
        f"{k}: ours {list(ours[k])} vs torchvision {list(theirs[k])}"
        for k in theirs
        if k in ours and ours[k] != theirs[k]
    ]
    parts = []
    for title, items in (("missing (in torchvision, not in cnnzoo)", missing),
                         ("unexpected (in cnnzoo, not in torchvision)", unexpected),
                         ("wrong shape", wrong)):  # fmt: skip
        if items:
            more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"  {title}: {len(items)}\n    " + "\n    ".join(items[:limit]) + more)
    return "\n".join(parts)


def test_fixture_covers_the_shared_architectures():
    assert DATA["torchvision_version"]
    expected = {"alexnet", "googlenet", "inception_v3"}
    expected |= {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")}
    expected |= {f"resnet{d}" for d in (18, 34, 50, 101, 152)}
    assert set(MODELS) == expected


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_dict_matches_torchvision(name):
    ours, theirs = dict(_zoo_layout(name)), dict(_tv_layout(name))
    report = _diff_report(ours, theirs)
    assert not report, f"{name}: state_dict differs from torchvision {DATA['torchvision_version']}:\n{report}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_dict_order_matches_torchvision(name):
    ours, theirs = [k for k, _ in _zoo_layout(name)], [k for k, _ in _tv_layout(name)]
    if set(ours) != set(theirs):
        pytest.skip("keys differ; see test_state_dict_matches_torchvision")
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), None)
    assert first is None, (
        f"{name}: key #{first} is {ours[first]!r} in cnnzoo but {theirs[first]!r} in torchvision"
    )


# --- (b) same outputs as torchvision, weights copied over ------------------------------------

# name -> (torchvision builder kwargs, cnnzoo kwargs, input side). Both models run in eval mode, where the
# sides below work for both: torchvision needs >= 63 for AlexNet and >= 75 for Inception-v3 (cnnzoo
# registers 299 for the latter because its auxiliary head needs it in training; eval skips that head).
# init_weights=False only skips torchvision's slow truncated-normal init: the weights stay random.
OUTPUT_CASES: dict[str, tuple[dict, dict, int]] = {
    "alexnet": ({}, {}, 64),
    "vgg11_bn": ({}, {}, 32),
    "googlenet": ({"aux_logits": False, "init_weights": False}, {"aux_logits": False}, 32),
    "inception_v3": ({"aux_logits": True, "init_weights": False}, {}, 75),
    "resnet18": ({}, {}, 64),
    "resnet50": ({}, {}, 64),
}


def _randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial running stats and affine terms, so eps and stat handling show up in the outputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)


def _hyperparams(m: nn.Module) -> dict | None:
    if isinstance(m, nn.Conv2d):
        return {k: getattr(m, k) for k in ("stride", "padding", "dilation", "groups", "padding_mode")}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return {"eps": m.eps}
    return None


def _logits(out):
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out[0]


def _zoo_from(name: str, kwargs: dict, state_dict: dict) -> nn.Module:
    """cnnzoo's model holding `state_dict`, loaded with strict=True (built on meta: skips its init)."""
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **kwargs)
    model.load_state_dict(state_dict, strict=True, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # a non-persistent buffer
        model = cnnzoo.create_model(name, **kwargs)
        model.load_state_dict(state_dict, strict=True)
    return model


def _assert_same_outputs(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, what: str) -> None:
    with torch.no_grad():
        expected = _logits(theirs(x))
        got = _logits(ours(x))
    assert got.shape == expected.shape == (x.shape[0], 1000), what
    scale = max(expected.abs().max().item(), 1e-6)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name", list(OUTPUT_CASES))
def test_outputs_match_torchvision(name):
    tv_models = pytest.importorskip("torchvision.models")
    tv_kwargs, zoo_kwargs, side = OUTPUT_CASES[name]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    theirs = getattr(tv_models, name)(weights=None, **tv_kwargs)
    _randomise_batchnorm(theirs, gen)
    ours = _zoo_from(name, zoo_kwargs, theirs.state_dict())

    # same-named conv / batch-norm layers must agree on what the state_dict does not carry
    tv_modules = dict(theirs.named_modules())
    wrong = []
    for mname, m in ours.named_modules():
        a = _hyperparams(m)
        b = _hyperparams(tv_modules[mname]) if mname in tv_modules else None
        if a is not None and b is not None and a != b:
            wrong.append(f"{mname}: ours {a} vs torchvision {b}")
    assert not wrong, f"{name}: {len(wrong)} layers differ:\n  " + "\n  ".join(wrong[:25])

    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, side, side, generator=gen)
    _assert_same_outputs(ours, theirs, x, f"{name} at {side}x{side}")
    if hasattr(theirs, "transform_input"):  # torchvision's pretrained GoogLeNet/Inception-v3 set it
        assert hasattr(ours, "transform_input"), f"{name}: cnnzoo has no transform_input"
        theirs.transform_input = ours.transform_input = True
        _assert_same_outputs(ours, theirs, x, f"{name} at {side}x{side}, transform_input=True")
