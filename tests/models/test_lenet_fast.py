"""LeNet-5's fast path computes what its layers compute, in float32 and under autocast, and steps aside
for hooks and tracing; `relu_max_pool_2x2` equals `max_pool2d(relu(x), 2)` and the polyphase
`conv_relu_max_pool_2x2` equals conv + ReLU + pool, gradients and ties included."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import cnnzoo
from cnnzoo.data import load_dataset
from cnnzoo.layers import conv_relu_max_pool_2x2, relu_max_pool_2x2


@pytest.fixture(scope="module")
def mnist_batch():
    """Real digits: their black background makes whole pooling windows tie (conv output = bias)."""
    splits = load_dataset("mnist")
    x = splits.train.images[:48].float().div(255).sub(0.1307).div(0.3081)
    return x, splits.train.labels[:48].long()


def perturbed_lenet5(**kwargs):
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5", **kwargs)
    with torch.no_grad():
        for p in model.parameters():  # biases of both signs, so that background windows pass gradient
            p.add_(torch.randn_like(p) * 0.05)
    return model


def outputs_and_grads(model, x, y, layers: bool):
    model.zero_grad()
    out = model.forward_head(model.features(x)) if layers else model(x)
    F.cross_entropy(out, y).backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (3, 2, 7, 9), (2, 1, 2, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu_max_pool_equals_max_pool_of_relu(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-2, 3, shape, generator=gen).to(dtype)  # few distinct values: ties, and zeros
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast, ref = relu_max_pool_2x2(a), F.max_pool2d(F.relu(b), 2)
    assert torch.equal(fast, ref)
    g = torch.randn(ref.shape, generator=gen).to(dtype)
    fast.backward(g)
    ref.backward(g)
    assert torch.equal(a.grad, b.grad)
    with torch.no_grad():
        assert torch.equal(relu_max_pool_2x2(x), ref.detach())


@pytest.mark.parametrize(
    "batch, c_in, c_out, kernel, size, padding",
    [(4, 1, 6, 5, 28, 2), (3, 6, 16, 5, 14, 0), (2, 2, 3, 3, 8, 1), (2, 3, 4, 5, 32, 0)],
)
def test_polyphase_conv_relu_pool_equals_the_three_ops(batch, c_in, c_out, kernel, size, padding):
    gen = torch.Generator().manual_seed(0)
    # small integers in float64: every sum is exact, so ties are real ties and results compare with ==
    x = torch.randint(-1, 2, (batch, c_in, size, size), generator=gen).double()
    x[0] = 0  # a blank image: every window ties (output = bias)
    w = torch.randint(-2, 3, (c_out, c_in, kernel, kernel), generator=gen).double()
    b = torch.randint(-2, 3, (c_out,), generator=gen).double()
    params = [(w.clone().requires_grad_(), b.clone().requires_grad_()) for _ in range(2)]
    fast = conv_relu_max_pool_2x2(x, *params[0], padding)
    ref = F.max_pool2d(F.relu(F.conv2d(x, *params[1], padding=padding)), 2)
    assert torch.equal(fast, ref)
    g = torch.randint(-3, 4, ref.shape, generator=gen).double()
    fast.backward(g)
    ref.backward(g)
    assert torch.equal(params[0][0].grad, params[1][0].grad) and torch.equal(
        params[0][1].grad, params[1][1].grad
    )
    with torch.no_grad():
        assert torch.equal(conv_relu_max_pool_2x2(x, w, b, padding), ref.detach())


def test_fast_path_equals_the_layers_in_training_and_eval(mnist_batch):
    """The same function up to float rounding: the polyphase conv1 sums its products in another order."""
    x, y = mnist_batch
    model = perturbed_lenet5().train()
    fast_out, fast_grads = outputs_and_grads(model, x, y, layers=False)
    ref_out, ref_grads = outputs_and_grads(model, x, y, layers=True)
    torch.testing.assert_close(fast_out, ref_out, rtol=1e-5, atol=1e-5)
    for fast, ref in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.features(x)), rtol=1e-5, atol=1e-5)


class ConvDtypes(TorchDispatchMode):
    """The input dtype of every convolution, in order."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.convolution, torch.ops.aten._convolution):
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("training", [True, False])
def test_fast_path_under_autocast_is_the_layers_under_autocast(mnist_batch, training):
    """Both convolutions run in bf16 as autocast says, and the logits stay within bf16's rounding of the
    layers' own; the weights and their gradients stay float32."""
    x, y = mnist_batch
    model = perturbed_lenet5().train(training)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(training):
        with ConvDtypes() as seen:
            out = model(x)
        ref = model.forward_head(model.features(x))
        if training:
            F.cross_entropy(out, y).backward()
    assert seen.dtypes == [torch.bfloat16, torch.bfloat16]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=0.05, atol=0.05)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.95
    if training:
        assert model.features[1].weight.grad.dtype == torch.float32


def test_hooks_and_other_layers_get_the_standard_path(mnist_batch):
    x, _ = mnist_batch
    model = perturbed_lenet5().train()
    seen = []
    handle = model.features[3].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    model(x)
    handle.remove()
    assert seen == [(48, 6, 14, 14)]  # the pool ran as a module, so its hook fired
    _, maps = model.forward_intermediates(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(6, 14, 14), (16, 5, 5)]
    for kwargs in ({"activation": "tanh"}, {"pool": "avg"}):
        other = perturbed_lenet5(**kwargs)
        assert not other._fast_path_applies(x)
        assert torch.equal(other(x), other.forward_head(other.features(x)))


def test_polyphase_after_inference_mode_still_trains():
    """The polyphase taps are cached: made first under inference_mode, they must still serve autograd."""
    from cnnzoo.layers import polyphase

    polyphase._phase_taps_cached.cache_clear()
    x, w, b = torch.randn(2, 1, 28, 28), torch.randn(6, 1, 5, 5), torch.randn(6)
    with torch.inference_mode():
        conv_relu_max_pool_2x2(x, w, b, 2)
    w.requires_grad_()
    conv_relu_max_pool_2x2(x, w, b, 2).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("amp", [False, True])
def test_eval_mode_equals_the_traced_graphs_bit_for_bit(mnist_batch, grad, amp):
    """In eval mode the fast path computes conv1 as the layer itself (no polyphase sums in another order)
    and only exact rewrites after it: eager = FX = TorchScript, bit for bit (timm's FX test asserts ==)."""
    x, _ = mnist_batch
    model = perturbed_lenet5().eval()
    traced, scripted = torch.fx.symbolic_trace(model), torch.jit.script(model)
    assert model._fast_path_applies(x)
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = model(x)
        assert torch.equal(out, traced(x)) and torch.equal(out, model.forward_head(model.features(x)))
        if not amp:
            assert torch.equal(out, scripted(x))


def test_training_still_takes_the_polyphase_convolution(mnist_batch):
    """Training keeps its fast path (the polyphase conv1: 4 input channels), eval uses conv1 (1 channel)."""
    x, y = mnist_batch
    model = perturbed_lenet5()

    class ConvInputs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.channels = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.convolution, torch.ops.aten._convolution):
                self.channels.append(args[0].shape[1])
            return func(*args, **(kwargs or {}))

    with ConvInputs() as train:
        F.cross_entropy(model.train()(x), y).backward()
    with ConvInputs() as evaluation, torch.no_grad():
        model.eval()(x)
    assert train.channels[0] == 4 and evaluation.channels == [1, 6]


def test_fx_records_the_standard_pooling_in_training():
    """FX traces `MaxPool2x2` in training as `max_pool2d` (its autograd Function is eager-only): no shape
    arithmetic nodes, which torchvision's feature extractor would return as ints."""
    model = perturbed_lenet5().train()
    targets = [n.target for n in torch.fx.symbolic_trace(model).graph.nodes if n.op == "call_function"]
    names = [getattr(t, "__name__", str(t)) for t in targets]
    assert names.count("max_pool2d") == 2 and "ge" not in names and "mul" not in names
