# %% [markdown]
# # 3. VGG: small kernels, stacked deep
#
# Simonyan and Zisserman, *Very deep convolutional networks for large-scale image recognition* (ICLR
# 2015). VGG replaced AlexNet's 11x11 and 5x5 kernels with stacks of 3x3 convolutions. Their argument,
# section 2.3: two stacked 3x3 layers see a 5x5 region and three see 7x7, with fewer weights and more
# non-linearities. Here each part of that argument is measured rather than asserted.

# %%
import os
import time

import matplotlib.pyplot as plt
import torch
from torch import nn

import cnnzoo
from cnnzoo.summary import summarize

QUICK = os.environ.get("CNNZOO_QUICK", "0") not in ("", "0")
print(f"preset: {'quick' if QUICK else 'full'}; cnnzoo {cnnzoo.__version__}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")


def stack(kernel, layers, channels=1, relu=True):
    """`layers` convolutions of size `kernel`, 'same' padding, no bias (so weights = C*C*k*k per layer)."""
    parts = []
    for _ in range(layers):
        parts.append(nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False))
        if relu:
            parts.append(nn.ReLU())
    return nn.Sequential(*parts)


# %% [markdown]
# ## Receptive field, measured
#
# Which input pixels can change the centre output? Backpropagate from that one output unit and look at
# where the input gradient is non-zero (a few random inputs and weights, so that no pixel's influence
# cancels by accident). The bounding box of that support is the receptive field. The summary's tracer computes it
# from kernel sizes and strides instead; both must agree.

# %%
def measured_rf(module, side=31, trials=4):
    support = torch.zeros(side, side, dtype=torch.bool)
    for seed in range(trials):
        torch.manual_seed(seed)
        for p in module.parameters():
            nn.init.normal_(p)
        x = torch.randn(1, 1, side, side, requires_grad=True)
        out = module(x)
        out[0, :, side // 2, side // 2].sum().backward()
        support |= x.grad[0, 0] != 0
    rows = support.any(1).nonzero().flatten()
    cols = support.any(0).nonzero().flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1), support


# without the ReLUs: a unit that happens to be off for all four random inputs would hide the pixels
# behind it; the receptive field is where the output *can* depend on the input
cases = {"one 3x3": stack(3, 1, relu=False), "two 3x3": stack(3, 2, relu=False), "one 5x5": stack(5, 1, relu=False),
         "three 3x3": stack(3, 3, relu=False), "one 7x7": stack(7, 1, relu=False)}
supports = {}
for name, module in cases.items():
    h, w, support = measured_rf(module)
    traced = summarize(module, (1, 31, 31)).rows[-1].receptive_field
    supports[name] = support
    print(f"{name:10s} measured {h}x{w}   traced by the summary {traced[0]}x{traced[1]}")
    assert (h, w) == tuple(traced)
assert measured_rf(cases["two 3x3"])[:2] == measured_rf(cases["one 5x5"])[:2] == (5, 5)
assert measured_rf(cases["three 3x3"])[:2] == measured_rf(cases["one 7x7"])[:2] == (7, 7)

# %%
fig, axes = plt.subplots(1, 5, figsize=(10, 2.3))
for ax, (name, support) in zip(axes, supports.items(), strict=True):
    ax.imshow(support[8:23, 8:23], cmap="Greys", vmin=0, vmax=1)
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("input pixels the centre output depends on (15x15 crop)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The same region, but not the same function: inside a 3x3 stack the centre pixels reach the output
# along many more paths than the corners, so the *effective* receptive field is concentrated in the
# middle (Luo et al. 2016). The count of paths from each input pixel (all weights 1, no ReLU) shows it:

# %%
ones = stack(3, 3, relu=False)
for p in ones.parameters():
    nn.init.ones_(p)
x = torch.zeros(1, 1, 15, 15, requires_grad=True)
ones(x)[0, 0, 7, 7].backward()
print("paths from each pixel of the 7x7 field to the centre output, three 3x3 layers:")
print(x.grad[0, 0, 4:11, 4:11].int())

# %% [markdown]
# ## Weights: 27 against 49
#
# With $C$ channels in and out, one $k \times k$ layer holds $C^2 k^2$ weights: three 3x3 layers
# $27C^2$, one 7x7 layer $49C^2$, 45% fewer; two 3x3 layers $18C^2$ against $25C^2$, 28% fewer. Counted
# from the modules, for one channel and for VGG's 512:

# %%
for channels in (1, 64, 512):
    counts = {name: cnnzoo.count_params(stack(k, n, channels))
              for name, (k, n) in {"two 3x3": (3, 2), "one 5x5": (5, 1), "three 3x3": (3, 3), "one 7x7": (7, 1)}.items()}
    print(f"C={channels:3d}: two 3x3 {counts['two 3x3']:>10,} vs one 5x5 {counts['one 5x5']:>10,} "
          f"({1 - counts['two 3x3'] / counts['one 5x5']:.0%} fewer);  three 3x3 {counts['three 3x3']:>10,} vs "
          f"one 7x7 {counts['one 7x7']:>10,} ({1 - counts['three 3x3'] / counts['one 7x7']:.0%} fewer)")
assert cnnzoo.count_params(stack(3, 3)) == 27 and cnnzoo.count_params(stack(7, 1)) == 49
assert round(1 - 27 / 49, 2) == 0.45

# %% [markdown]
# ## Depth against accuracy, at an equal weight budget
#
# Fewer weights per receptive field means that, for the same budget, the deeper stack can afford more
# channels. Two networks of two stages each (a stage: convolutions, then a 2x2 max-pool), a global
# average pool and a linear classifier:
#
# * **shallow**: one 7x7 convolution per stage, 16 channels;
# * **deep**: three 3x3 convolutions per stage, 17 channels, so that the total weight count matches
#   within a few percent (the first layer, from one input channel, is cheap either way, so the deep
#   net's 45% saving per stage goes into depth here rather than width).
#
# Both see 7x7 per stage and train with the same recipe (cnnzoo's loop through `cnnzoo.fit_module`:
# in-memory Fashion-MNIST resized once to 16x16 to fit the CPU budget, one-cycle SGD, the test split
# evaluated after the last epoch) from the same seeds. BatchNorm after every convolution keeps the
# deeper one trainable.

# %%
def net(kernel, per_stage, width, stages=2, classes=10):
    layers, cin = [], 1
    for _ in range(stages):
        for _ in range(per_stage):
            layers += [nn.Conv2d(cin, width, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            cin = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


designs = {"shallow: 1 x 7x7 per stage": (7, 1, 16), "deep: 3 x 3x3 per stage": (3, 3, 17)}
SIDE = 16
weights = {}
for name, (k, n, w) in designs.items():
    model = net(k, n, w)
    s = summarize(model, (1, SIDE, SIDE))
    weights[name] = s.total_params
    convs = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    print(f"{name:28s} {convs} conv layers, {s.total_params:>7,} weights, {s.total_macs / 1e6:5.1f} M MACs per image")
ratio = max(weights.values()) / min(weights.values())
print(f"weight budgets within {ratio - 1:.1%}")
assert ratio < 1.05

# %%
seeds = [0] if QUICK else [0, 1]
options = dict(train_subset=3_000, epochs=2) if QUICK else dict(train_subset=10_000, epochs=4)
curves = {}
start = time.perf_counter()
for name, (k, n, w) in designs.items():
    for seed in seeds:
        torch.manual_seed(seed)
        run = cnnzoo.fit_module(net(k, n, w), data="fashion-mnist", image_size=SIDE, seed=seed, batch_size=128,
                                lr=0.1, eval_every=options["epochs"], **options)
        curves[(name, seed)] = run.history
        print(f"{name:28s} seed {seed}: test {run.final_acc:.2f}%  train (augmented) {run.history[-1]['train_acc']:.2f}%  "
              f"{run.seconds:.0f} s")
print(f"total {time.perf_counter() - start:.0f} s")

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for (name, seed), history in curves.items():
    style = "-" if name.startswith("deep") else "--"
    ax.plot([r["epoch"] for r in history], [r["train_acc"] for r in history], style + "o",
            color="tab:blue" if name.startswith("deep") else "tab:orange", label=f"{name.split(':')[0]}, seed {seed}")
ax.set_xlabel("epoch")
ax.set_ylabel("training accuracy (%), per epoch")
ax.set_title("equal weights, different depth (Fashion-MNIST 16x16)")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
for name in designs:
    final = [curves[(name, s)][-1]["test_acc"] for s in seeds]
    print(f"{name:28s} mean final test accuracy {sum(final) / len(final):.2f}% over {len(seeds)} seed(s)")

# %% [markdown]
# What this budget can show: whether, at an equal weight budget and the same receptive field per stage,
# the deeper stack of small kernels learns faster and generalises better here (the printed means above).
# What it cannot: VGG's own comparison was on ImageNet at 224x224 (section 4.1: replacing each pair of
# 3x3 layers of net B by one 5x5 layer raised the top-1 error by 7%); on 16x16 clothes, a few thousand
# images and a few epochs, a difference under about a point is within seed-to-seed noise.
# `cnnzoo study vgg-stacks` runs the larger version (`reports/vgg-stacks/`).
#
# ## VGG itself
#
# The configurations are lists: numbers are 3x3 convolutions of that many channels, "M" a max-pool. More
# depth adds few weights, because most sit in the first fully connected layer (512x7x7 -> 4096):

# %%
for name in ("vgg11", "vgg16", "vgg19"):
    model = cnnzoo.create_model(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fc1 = model.classifier[0]
    print(f"{name}: {len(convs):2d} conv layers (all {set(c.kernel_size for c in convs)}), "
          f"{cnnzoo.count_params(model):>12,} parameters, {cnnzoo.count_params(fc1):,} of them in the first FC layer")
    del model

# %% [markdown]
# **Next:** notebook 4, Inception: instead of choosing one kernel size, use several side by side.
