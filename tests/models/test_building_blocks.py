"""Shared layers: the fast 2x2 max-pool equals max_pool2d, values and gradients, ties included."""

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.layers import MaxPool2x2, max_pool_2x2


@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (3, 2, 7, 9), (2, 1, 2, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_max_pool_matches_max_pool2d(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, shape, generator=gen).to(dtype)  # few distinct values: many ties
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast, ref = max_pool_2x2(a), F.max_pool2d(b, 2)
    assert torch.equal(fast, ref)
    g = torch.randn(ref.shape, generator=gen).to(dtype)
    fast.backward(g)
    ref.backward(g)
    assert torch.equal(a.grad, b.grad)  # each window's gradient goes to its first maximum


def test_module_uses_the_standard_op_in_eval():
    pool = MaxPool2x2()
    assert isinstance(pool, torch.nn.MaxPool2d) and pool.kernel_size == 2 and pool.stride == 2
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(pool.eval()(x), F.max_pool2d(x, 2))
    assert torch.equal(pool.train()(x.requires_grad_()), F.max_pool2d(x, 2))
