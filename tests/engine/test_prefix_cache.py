"""The frozen prefix computed once (engine/frozen.py): cached outputs train exactly as the whole network."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cnnzoo.data.base import ArrayDataset, DatasetInfo
from cnnzoo.data.loader import InMemoryLoader
from cnnzoo.engine.frozen import CachedLoader, PrefixCache, set_frozen_bn_eval, split_frozen
from cnnzoo.models import create_model
from cnnzoo.transfer.freeze import freeze


def _frozen(name: str, strategy: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, **kw)
    freeze(model, strategy)
    model.train()
    set_frozen_bn_eval(model)  # as the engine does after model.train()
    return model


CASES = [
    ("resnet18", "last:1", {"in_chans": 3}, 32),
    ("resnet20", "last:2", {}, 32),
    ("lenet5", "last:2", {}, 28),
]


@pytest.mark.parametrize("name, strategy, kw, size", CASES)
def test_cached_path_gives_the_same_outputs_gradients_and_step(name, strategy, kw, size):
    model = _frozen(name, strategy, **kw)
    split, why = split_frozen(model)
    assert split is not None, why
    x = torch.randn(6, model.get_submodule(model.first_conv).in_channels, size, size)
    y = torch.randint(0, 7, (6,))
    twin = copy.deepcopy(model)  # the uncached run: the whole network, every step
    with torch.no_grad():
        cached = split.prefix.eval()(x)  # once, in eval mode, as PrefixCache runs it
    split.suffix.train()
    out_cached, out_whole = split.suffix(cached), twin(x)
    torch.testing.assert_close(out_cached, out_whole, rtol=1e-5, atol=1e-5)
    loss_c = nn.functional.cross_entropy(out_cached, y)
    loss_w = nn.functional.cross_entropy(out_whole, y)
    loss_c.backward()
    loss_w.backward()
    named = dict(twin.named_parameters())
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and len(trained) < len(named)  # something frozen, something learning
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, named[n].grad, rtol=1e-4, atol=1e-6)
        else:
            assert p.grad is None and named[n].grad is None
    for net in (model, twin):
        torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1).step()
    for (n, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)  # weights and BN statistics alike
    # the suffix holds the model's own layers: what it trains is what the model saves
    suffix_params = {id(p) for p in split.suffix.parameters()}
    assert all(id(p) in suffix_params for p in model.parameters() if p.requires_grad)


def test_the_cut_sits_before_the_first_trainable_group():
    split, _ = split_frozen(_frozen("resnet18", "last:1", in_chans=3))
    assert not any(n.startswith("layer4") or n.startswith("fc") for n, _ in split.prefix.named_parameters())
    assert {n.split(".")[0] for n, _ in split.suffix.named_parameters()} == {"layer4", "fc"}
    assert split.boundary.startswith("layer3")


def test_what_cannot_be_cached_says_why():
    assert split_frozen(_frozen("lenet5", "full")) == (None, "nothing is frozen")
    model = _frozen("lenet5", "last:2")
    model.features.insert(3, nn.Dropout(0.5))  # a random layer in the frozen part
    split, why = split_frozen(model)
    assert split is None and "dropout" in why


def _loader(n=50, shuffle=True, batch=8):
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n) % 7
    info = DatasetInfo("toy", tuple(map(str, range(7))), 28, 1, (0.5,), (0.25,))
    return InMemoryLoader(ArrayDataset(images, labels, info), batch, shuffle=shuffle, seed=3)


@pytest.mark.parametrize("limit", [1 << 30, 0])  # in memory; in a file mapped from disk
def test_cache_is_per_sample_and_follows_every_epochs_order(limit):
    model = _frozen("lenet5", "last:2")
    split, _ = split_frozen(model)
    loader = _loader()
    cache = PrefixCache(split.prefix, loader, batch_size=16, memory_limit=limit)
    assert cache.on_disk == (limit == 0)
    folder = cache.folder
    cached = CachedLoader(cache, loader)
    assert len(cached) == len(loader)
    orders = []
    for epoch in (0, 1):  # two epochs, two orders: batch for batch what the images would give
        loader.set_epoch(epoch)
        images = list(loader)
        cached.set_epoch(epoch)
        rows = list(cached)
        assert len(rows) == len(images)
        orders.append(torch.cat([y for _, y in rows]))
        for (x, y), (f, fy) in zip(images, rows, strict=True):
            assert torch.equal(y, fy)
            with torch.no_grad():
                torch.testing.assert_close(f, split.prefix.eval()(x), rtol=1e-5, atol=1e-6)
    assert not torch.equal(*orders)  # shuffled anew each epoch
    cache.close()
    assert folder is None or not folder.exists()
