# %% [markdown]
# # 5. ResNet: why deeper plain networks train worse, and F(x) + x
#
# He, Zhang, Ren and Sun, *Deep residual learning for image recognition* (CVPR 2016). Their Figure 1:
# on CIFAR-10 a 56-layer plain network has a higher **training** error than a 20-layer one. That is
# not overfitting (the training error is worse too): the deeper network is harder to optimise, even
# though it could copy the shallow one and set its extra layers to the identity. Residual blocks make
# that identity the default: each block computes $F(x) + x$.
#
# cnnzoo has the paper's CIFAR networks, `resnet20/32/44/56/110`, and their twins without shortcuts,
# `plain20/...`: the same layers and weights, only the `+ x` removed.
#
# **What a CPU budget can and cannot show.** The paper trains 64,000 iterations (about 160 epochs) on
# CIFAR-10. Here: Fashion-MNIST (on disk) resized to 16x16, a thousand training images, a few epochs of
# one recipe for all four networks: minutes, not GPU-hours. That shows the *start* of training, where
# the gap between plain-56 and plain-20 opens first; it cannot show the final errors, and with one seed
# a difference of a few points is within noise (`cnnzoo study degradation` runs three seeds:
# `reports/degradation/`).

# %%
import os
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.data import load_dataset

QUICK = os.environ.get("CNNZOO_QUICK", "0") not in ("", "0")
print(f"preset: {'quick' if QUICK else 'full'}; cnnzoo {cnnzoo.__version__}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")

# %% [markdown]
# ## F(x) + x, inside one block
#
# A block of ResNet-20: two 3x3 convolutions with BatchNorm are $F$; the shortcut adds the block's input
# back before the last ReLU. Computing the two paths by hand reproduces the block's output exactly; the
# plain twin's block is the same computation without the addition.

# %%
torch.manual_seed(0)
resnet = cnnzoo.create_model("resnet20", num_classes=10, in_chans=1).eval()
block = resnet.layer1[0]
print(block)
x = torch.randn(4, 16, 16, 16)
with torch.no_grad():
    fx = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))  # F(x)
    by_hand = torch.relu(fx + x)
    out = block(x)
print("block(x) == relu(F(x) + x):", torch.equal(out, by_hand))
assert torch.equal(out, by_hand)
print(f"|F(x)| / |x| = {fx.norm() / x.norm():.2f}: the block adds a correction to its input")

plain = cnnzoo.create_model("plain20", num_classes=10, in_chans=1)
print("same number of weights:", cnnzoo.count_params(resnet), "and", cnnzoo.count_params(plain))
assert cnnzoo.count_params(resnet) == cnnzoo.count_params(plain)
print("plain20's first block has no shortcut:", plain.layer1[0].shortcut is None)

# %% [markdown]
# If the best thing a block can do is nothing, a residual block only has to drive $F$ to zero (weight
# decay pushes that way anyway); a plain block has to learn the identity through two convolutions and
# two ReLUs.
#
# ## The degradation curves
#
# Four networks, one recipe (the paper's SGD: momentum 0.9, peak rate 0.1, weight decay 1e-4; cnnzoo's
# one-cycle schedule; batch 32; no augmentation), same seed, same images. The training error is read
# from every epoch's batches; the test error at the end, on all 10,000 test images.

# %%
models = ("plain20", "plain56", "resnet20", "resnet56")
budget = dict(image_size=8, train_subset=400, epochs=2) if QUICK else dict(image_size=16, train_subset=1_000, epochs=5)
recipe = dict(batch_size=32, lr=0.1, momentum=0.9, weight_decay=1e-4, augment="none", seed=0, eval_every=budget["epochs"])
runs = {}
start = time.perf_counter()
for name in models:
    run = cnnzoo.train(name, data="fashion-mnist", quiet=True, **budget, **recipe)
    runs[name] = run
    errors = [100 - r["train_acc"] for r in run.history]
    print(f"{name:9s} {cnnzoo.count_params(run.model):>8,} weights  training error by epoch "
          f"{' '.join(f'{e:5.1f}' for e in errors)}  test error {100 - run.final_acc:5.1f}%  ({run.seconds:.0f} s)")
print(f"{budget}: {time.perf_counter() - start:.0f} s for the four")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
for ax, family in zip(axes, ("plain", "resnet"), strict=True):
    for name, color in ((f"{family}20", "tab:blue"), (f"{family}56", "tab:red")):
        history = runs[name].history
        ax.plot([r["epoch"] for r in history], [100 - r["train_acc"] for r in history], "o-", color=color,
                label=f"{name} training error")
        ax.plot(history[-1]["epoch"], 100 - history[-1]["test_acc"], "x", color=color, ms=10,
                label=f"{name} test error")
    ax.set_title("plain networks" if family == "plain" else "residual networks")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
axes[0].set_ylabel("error (%)")
plt.tight_layout()
plt.show()
gap_plain = (100 - runs["plain56"].history[-1]["train_acc"]) - (100 - runs["plain20"].history[-1]["train_acc"])
gap_res = (100 - runs["resnet56"].history[-1]["train_acc"]) - (100 - runs["resnet20"].history[-1]["train_acc"])
print(f"last epoch's training error, 56 minus 20 layers: plain {gap_plain:+.1f} points, residual {gap_res:+.1f} points")
print("degradation without shortcuts (plain-56 trains worse than plain-20):", "yes" if gap_plain > 0 else "no")
print("shortcuts shrink it here (the residual gap is the smaller):", "yes" if gap_res < gap_plain else "no",
      f"(one seed, {budget['epochs']} epochs: the paper's claim is about converged training, ours the first epochs)")

# %% [markdown]
# ## Gradients per layer
#
# Where does the signal go? The gradient of the loss on one batch of training images, per convolution
# (input to output), for the 56-layer networks at initialisation and after training. With BatchNorm in
# every block the plain network's gradients do not simply vanish (the paper says as much, section 4.1),
# but they are badly distributed across depth: the shortcut gives every block a direct path to the loss.

# %%
splits = load_dataset("fashion-mnist")
info = splits.info
side = budget["image_size"]
images = splits.train.images[:128].float() / 255
images = F.interpolate(images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
batch = (images - info.mean[0]) / info.std[0]
labels = splits.train.labels[:128]


def conv_gradient_norms(model):
    """L2 norm of each convolution's weight gradient (forward order) on the fixed batch, training mode."""
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(batch), labels).backward()
    norms = [m.weight.grad.norm().item() for m in model.modules() if isinstance(m, nn.Conv2d)]
    model.zero_grad(set_to_none=True)
    model.eval()
    return norms


gradients = {}
for name in ("plain56", "resnet56"):
    torch.manual_seed(0)
    gradients[(name, "at initialisation")] = conv_gradient_norms(cnnzoo.create_model(name, num_classes=10, in_chans=1))
    gradients[(name, "after training")] = conv_gradient_norms(runs[name].model)

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, when in zip(axes, ("at initialisation", "after training"), strict=True):
    for name, color in (("plain56", "tab:red"), ("resnet56", "tab:green")):
        norms = gradients[(name, when)]
        ax.semilogy(range(1, len(norms) + 1), norms, ".-", color=color, label=name)
    ax.set_title(f"gradient norm per conv layer, {when}", fontsize=10)
    ax.set_xlabel("convolution (input -> output)")
    ax.legend()
plt.tight_layout()
plt.show()
for (name, when), norms in gradients.items():
    median = sorted(norms)[len(norms) // 2]
    print(f"{name:9s} {when:18s} first conv {norms[0]:.3g}, median {median:.3g}, last {norms[-1]:.3g}, "
          f"max/min over layers {max(norms) / min(norms):.0f}x")

# %% [markdown]
# **Next:** notebook 6, transfer learning: reusing what a trained network's layers learned.
