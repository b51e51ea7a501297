"""What a network computes inside, as arrays: feature maps, first-layer filters, Grad-CAM, saliency.

- `feature_maps(model, x)`: the output of every convolution and pooling layer, in the order the forward
  pass runs them (Zeiler & Fergus 2014 look at these).
- `dense_activations(model, x)`: what each fully connected layer hands on (LeNet-5's 120, 84 and 10).
- `first_layer_filters(model)`: the first convolution's kernels (the AlexNet paper's Fig. 3 view).
- `gradcam(model, x)`: Selvaraju et al. 2017. The gradient of the class score with respect to a layer's
  output, averaged over space, weights that layer's channels; the ReLU of the weighted sum says where
  in the image the evidence for the class lies. Default layer: the last conv stage (`feature_info[-1]`,
  whose output is `forward_features`').
- `saliency(model, x)`: Simonyan et al. 2014. |d score / d pixel|, the largest over colour channels.

Every function takes a preprocessed (B, C, H, W) batch (`Predictor.preprocess`), leaves the model's
train/eval mode as it found it, and returns float32 numpy arrays; heat maps are (B, H, W) at the input's
size, scaled to 0..1 per image.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CnnzooError
from ..layers import PartialConv, Subsampling

__all__ = [
    "LayerMaps",
    "Heatmap",
    "feature_layers",
    "feature_maps",
    "DenseActivations",
    "dense_activations",
    "first_layer_filters",
    "first_conv_name",
    "default_layer",
    "gradcam",
    "saliency",
]


@dataclass
class LayerMaps:
    name: str  # dotted module name, as in model.named_modules()
    kind: str  # "conv" or "pool"
    maps: np.ndarray  # (B, C, H, W) float32: the layer's output


@dataclass
class Heatmap:
    maps: np.ndarray  # (B, H, W) float32 in 0..1, at the input's size
    target: list[int]  # the class each map explains
    logits: np.ndarray  # (B, classes) of the same forward pass
    layer: str = ""  # Grad-CAM: the layer whose output was weighted


# PartialConv and Subsampling: LeNet-5 (1998)'s own C3 and S2/S4
_CONVS = (nn.Conv2d, PartialConv)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, Subsampling)


def _kind_of(module: nn.Module) -> str | None:
    if isinstance(module, _CONVS):
        return "conv"
    if isinstance(module, _POOLS):
        return "pool"
    return None


def feature_layers(model: nn.Module) -> list[tuple[str, str]]:
    """[(name, "conv" | "pool")] of every convolution and pooling module, in registration order."""
    return [(n, k) for n, m in model.named_modules() if n and (k := _kind_of(m)) is not None]


def feature_maps(model: nn.Module, x: Tensor) -> list[LayerMaps]:
    """Every conv/pool layer's output for the batch `x`, in the order the forward pass ran them."""
    found: list[LayerMaps] = []

    def keep(name: str, kind: str):
        def hook(_m, _inputs, out):
            if isinstance(out, Tensor) and out.dim() == 4:
                # copied now: an in-place ReLU after a convolution would overwrite its output
                found.append(LayerMaps(name, kind, out.detach().float().cpu().numpy().copy()))

        return hook

    modules = dict(model.named_modules())
    _forward_hooked(
        model, x, [modules[n].register_forward_hook(keep(n, k)) for n, k in feature_layers(model)]
    )
    return found


def _forward_hooked(model: nn.Module, x: Tensor, hooks: list) -> None:
    """One inference pass of `x` for what the `hooks` record; the hooks are removed however it ends."""
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()


@dataclass
class DenseActivations:
    name: str  # dotted module name of a fully connected layer (or of the model's classifier)
    values: np.ndarray  # (B, N) float32: what it hands on, after its nonlinearity (the last: its outputs)


def dense_activations(model: nn.Module, x: Tensor) -> list[DenseActivations]:
    """Each fully connected layer's activations for the batch `x`, in the order the forward pass ran them.

    A layer's activation is what the next fully connected layer reads (its output after the nonlinearity
    between them: LeNet-5's ReLU or scaled tanh); the last one's is its output (the logits, or the
    1998 net's RBF distances). The classifier counts as fully connected whatever its class."""
    classifier_path = getattr(model, "classifier_path", None)  # ZooModel's; other modules: Linear only
    named = dict(model.named_modules())
    dense = [n for n, m in named.items() if n and (isinstance(m, nn.Linear) or n == classifier_path)]
    inputs: list[tuple[str, Tensor]] = []  # (layer, the input it read), in call order
    outputs: dict[str, Tensor] = {}

    def keep(name: str):
        def pre(_m, args):
            if args and isinstance(args[0], Tensor):
                inputs.append((name, args[0].detach().float().flatten(1).cpu()))

        def post(_m, _args, out):
            if isinstance(out, Tensor):
                outputs[name] = out.detach().float().flatten(1).cpu()

        return pre, post

    hooks = []
    for n in dense:
        pre, post = keep(n)
        hooks += [named[n].register_forward_pre_hook(pre), named[n].register_forward_hook(post)]
    _forward_hooked(model, x, hooks)
    found = [
        DenseActivations(a, nxt.numpy().copy()) for (a, _), (_, nxt) in zip(inputs, inputs[1:], strict=False)
    ]
    if inputs:
        last = inputs[-1][0]
        found.append(DenseActivations(last, outputs[last].numpy().copy()))
    return found


def _first_conv(model: nn.Module) -> tuple[str, nn.Module]:
    name = getattr(model, "first_conv", None)
    if name:
        try:
            return name, model.get_submodule(name)
        except AttributeError:
            pass
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return n, m
    raise CnnzooError(f"{type(model).__name__} has no convolution")


def first_conv_name(model: nn.Module) -> str:
    """The dotted name of the first convolution (the one `first_layer_filters` reads)."""
    return _first_conv(model)[0]


def first_layer_filters(model: nn.Module) -> np.ndarray:
    """The first convolution's weights, (out_channels, in_channels, k, k) float32."""
    return _first_conv(model)[1].weight.detach().float().cpu().numpy().copy()


def default_layer(model: nn.Module) -> str:
    """The last conv stage: the module whose output `forward_features` returns (`feature_info[-1]`)."""
    return _stages(model)[-1]


def _stages(model: nn.Module) -> list[str]:
    """Candidate Grad-CAM layers, first to last: the stages of `feature_info`, else every conv/pool."""
    info = getattr(model, "feature_info", None)
    if info:
        return [stage["module"] for stage in info]
    layers = [name for name, _ in feature_layers(model)]
    if not layers:
        raise CnnzooError(f"{type(model).__name__} has no convolution or pooling layer")
    return layers


def _targets(logits: Tensor, target: int | list[int] | None) -> Tensor:
    b, classes = logits.shape
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor([target] * b if isinstance(target, int) else list(target), device=logits.device)
    if t.numel() != b or bool(((t < 0) | (t >= classes)).any()):
        raise CnnzooError(f"target class must be 0..{classes - 1}, one per image, got {target}")
    return t


_CENTRES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe_centres(model: nn.Module, module: nn.Module, x: Tensor, h: int, w: int) -> tuple[np.ndarray, ...]:
    """Where each row and column of `module`'s (h, w) output is centred in the input, in input pixels.

    Measured, not computed: the gradient of one output row (column) with respect to seeded noise images
    shows the input rows (columns) it reads; their weighted mean is its centre. Plain upsampling would
    assume the map spans the whole image, which is wrong after unpadded convolutions (LeNet-5's 5x5 map
    of a padded 32x32 input is centred on input pixels 5.5 ... 21.5, not spread over 0 ... 27).
    """
    n = max(1, -(-64 // (h + w)))  # noise images per row and column: about 64 in all, averaged
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn((n * (h + w), *x.shape[1:]), generator=gen).to(x.device, x.dtype).requires_grad_(True)
    seen: list[Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        model(probe)
    finally:
        hook.remove()
    act = seen[0].unflatten(0, (n, h + w))  # (n, h + w, C, h, w)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    score = act[:, rows, :, rows, :].sum() + act[:, h + cols, :, :, cols].sum()  # image i probes row i, ...
    (grad,) = torch.autograd.grad(score, probe)
    g = grad.detach().abs().sum(1).unflatten(0, (n, h + w)).sum(0).double().cpu()  # (h + w, H, W)
    centres = []
    for profile, cells, size in ((g[:h].sum(2), h, x.shape[-2]), (g[h:].sum(1), w, x.shape[-1])):
        pos = torch.arange(size, dtype=torch.float64)
        mass = profile.sum(1)
        if bool((mass <= 0).any()):  # a dead row: assume the map spans the image evenly
            centres.append((np.arange(cells) + 0.5) * size / cells - 0.5)
        else:
            centres.append(((profile * pos).sum(1) / mass).numpy())
    return tuple(centres)


def _interp_matrix(centres: np.ndarray, size: int) -> np.ndarray:
    """(size, n): linear interpolation between cells centred at `centres`, constant beyond the ends."""
    n = len(centres)
    eye = np.eye(n)
    return np.stack([np.interp(np.arange(size), centres, eye[i]) for i in range(n)], 1)


def _to_input_grid(cam: Tensor, centres: tuple[np.ndarray, ...], x: Tensor) -> Tensor:
    """(B, h, w) -> (B, H, W) at x's size, each cell's value placed at its measured centre."""
    ry = torch.from_numpy(_interp_matrix(centres[0], x.shape[-2])).float()
    rx = torch.from_numpy(_interp_matrix(centres[1], x.shape[-1])).float()
    return ry @ cam.cpu() @ rx.T


def _unit_scale(maps: Tensor) -> np.ndarray:
    """Each (H, W) map divided by its maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (maps / peak).clamp(0, 1).detach().float().cpu().numpy()


def _forward_at(model: nn.Module, layer: str, x: Tensor, target) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One forward and backward pass: (logits, targets, the layer's output, d score / d output)."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        names = ", ".join(n for n, _ in feature_layers(model))
        raise CnnzooError(
            f"no layer {layer!r} in {type(model).__name__} (conv/pool layers: {names})"
        ) from None
    seen: dict[str, Tensor] = {}

    def grab(_m, _inputs, out):
        if not isinstance(out, Tensor) or out.dim() != 4:
            raise CnnzooError(f"layer {layer!r} does not output a (B, C, H, W) map")
        seen["act"] = out
        return out.clone()  # the rest of the network (an in-place ReLU) works on a copy

    hook = module.register_forward_hook(grab)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            logits = model(x).float()
            t = _targets(logits, target)
            score = logits.gather(1, t[:, None]).sum()
            (grad,) = torch.autograd.grad(score, seen["act"])
    finally:
        hook.remove()
    return logits, t, seen["act"], grad


def gradcam(
    model: nn.Module, x: Tensor, *, target: int | list[int] | None = None, layer: str | None = None
) -> Heatmap:
    """Grad-CAM heat maps (B, H, W) for `target` (default: the predicted class) at `layer` (default: the
    last conv stage; the one before it where that is a single 1x1 cell, as LeNet-5 (1998)'s C5 is)."""
    x = x.detach().clone()
    candidates = [layer] if layer else _stages(model)[::-1]
    for i, name in enumerate(candidates):
        logits, t, act, grad = _forward_at(model, name, x, target)
        if act.shape[-2:] != (1, 1) or i == len(candidates) - 1:
            break
    layer, module = name, model.get_submodule(name)
    key = (layer, tuple(x.shape[1:]), tuple(act.shape[-2:]))
    centres = _CENTRES.setdefault(model, {}).get(key)
    if centres is None:  # measured once per model, layer and input size
        with torch.inference_mode(False), torch.enable_grad():
            centres = _CENTRES[model][key] = _probe_centres(model, module, x, *act.shape[-2:])
    # 1. a weight per channel: the gradient averaged over space; 2. the weighted sum of the channels, ReLU'd
    weights = grad.float().mean((2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * act.detach().float()).sum(1))  # (B, h, w)
    cam = _to_input_grid(cam, centres, x)
    return Heatmap(_unit_scale(cam), t.tolist(), logits.detach().cpu().numpy(), layer)


def saliency(model: nn.Module, x: Tensor, *, target: int | list[int] | None = None) -> Heatmap:
    """Gradient saliency (B, H, W): |d score / d pixel|, the largest over channels, scaled to 0..1."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = model(x).float()
        t = _targets(logits, target)
        (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
    return Heatmap(_unit_scale(grad.abs().amax(1)), t.tolist(), logits.detach().cpu().numpy())
