"""The weight average (`ModelEma`) the default LeNet-5 recipe evaluates."""

import torch
from torch import nn

from cnnzoo.engine.optim import ModelEma


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.LazyLinear(2))


def _perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.dtype.is_floating_point:
                t.add_(torch.randn(t.shape, generator=g))
            else:
                t.add_(1)


def test_bias_corrected_average_is_the_weighted_mean_of_the_models_seen():
    """With the step count, the average holds no trace of the initial weights: after the first update it
    is the model itself, after k updates the decay-weighted mean of the k models seen."""
    model = _net()
    model(torch.zeros(1, 1, 5, 5))  # materialise the lazy layer
    ema, decay = ModelEma(model, 0.9), 0.9
    seen = []
    for step in range(1, 5):
        _perturb(model, step)
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        ema.update(model, step=step)
        if step == 1:
            for k, v in ema.module.state_dict().items():
                assert torch.equal(v, seen[0][k]), k
    weights = torch.tensor([decay ** (len(seen) - 1 - i) for i in range(len(seen))])
    weights /= weights.sum()
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            expected = sum(w * s[k] for w, s in zip(weights, seen, strict=True))
            torch.testing.assert_close(v, expected, rtol=1e-5, atol=1e-5)
        else:  # BatchNorm's counter is copied, not averaged
            assert torch.equal(v, seen[-1][k])


def test_without_step_it_is_the_plain_exponential_average():
    model = _net()
    model(torch.zeros(1, 1, 5, 5))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = ModelEma(model, 0.75)
    _perturb(model, 1)
    ema.update(model)
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, 0.75 * start[k] + 0.25 * model.state_dict()[k])
