# %% [markdown]
# # 4. Inception: several kernel sizes side by side
#
# Szegedy et al., *Going deeper with convolutions* (CVPR 2015), and *Rethinking the Inception
# architecture for computer vision* (CVPR 2016, Inception v3). Instead of choosing one kernel size per
# layer, an Inception module runs 1x1, 3x3 and 5x5 convolutions and a max-pool in parallel and
# concatenates what they find; 1x1 convolutions in front of the expensive branches keep the cost down.
# This notebook takes GoogLeNet's first module apart and counts what the 1x1 reductions save.

# %%
import os

import matplotlib.pyplot as plt
import torch
from torch import nn

import cnnzoo
from cnnzoo.summary import summarize

QUICK = os.environ.get("CNNZOO_QUICK", "0") not in ("", "0")
print(f"preset: {'quick' if QUICK else 'full'}; cnnzoo {cnnzoo.__version__}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")

# %% [markdown]
# ## The branches of inception (3a)
#
# GoogLeNet's first Inception module takes the stem's 192 maps of 28x28 (at a 224x224 input). Its four
# branches, as cnnzoo builds them (torchvision's layout, so its published weights load):

# %%
googlenet = cnnzoo.create_model("googlenet", aux_logits=False).eval()
block = googlenet.inception3a
for name, branch in block.named_children():
    print(f"{name}: {branch}".replace("\n", "\n    "))

# %% [markdown]
# Each branch keeps the 28x28 size ("same" padding, stride 1), so their outputs can be stacked along the
# channel axis: 64 + 128 + 32 + 32 = 256 maps. The receptive field of each branch (traced by the
# summary: what one output unit of the branch sees of the module's input):

# %%
x = torch.randn(2, 192, 28, 28)
with torch.no_grad():
    outputs = {name: branch(x) for name, branch in block.named_children()}
    joined = block(x)
for name, out in outputs.items():
    rf = summarize(getattr(block, name), (192, 28, 28)).rows[-1].receptive_field
    print(f"{name}: output {tuple(out.shape[1:])}, receptive field {rf[0]}x{rf[1]}")
print("concatenated:", tuple(joined.shape[1:]), "=", " + ".join(str(o.shape[1]) for o in outputs.values()))
assert joined.shape[1] == sum(o.shape[1] for o in outputs.values()) == 256
assert torch.equal(joined, torch.cat(list(outputs.values()), 1))

# %% [markdown]
# Note `branch3`: the paper's "5x5" branch is a **3x3** convolution in torchvision's GoogLeNet (a quirk
# of its port of the TensorFlow weights, kept so that the weights load), so its receptive field is 3x3,
# not 5x5. The module of the paper, written out with plain `nn.Conv2d` layers, has the four receptive
# fields 1, 3, 5 and 3:

# %%
def conv(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU())


class PaperInception(nn.Module):
    """Figure 2(b) of the paper: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1, concatenated."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp, reduce=True):
        super().__init__()
        self.b1 = conv(cin, c1, 1)
        self.b2 = nn.Sequential(conv(cin, c3r, 1), conv(c3r, c3, 3)) if reduce else conv(cin, c3, 3)
        self.b3 = nn.Sequential(conv(cin, c5r, 1), conv(c5r, c5, 5)) if reduce else conv(cin, c5, 5)
        pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.b4 = nn.Sequential(pool, conv(cin, pp, 1)) if reduce else pool

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


paper_3a = PaperInception(192, 64, 96, 128, 16, 32, 32)
for name in ("b1", "b2", "b3", "b4"):
    rf = summarize(getattr(paper_3a, name), (192, 28, 28)).rows[-1].receptive_field
    print(f"paper's {name}: receptive field {rf[0]}x{rf[1]}")

# %% [markdown]
# ## What the 1x1 reductions save
#
# The "naive" module of the paper's figure 2(a) applies the 3x3 and 5x5 convolutions straight to the
# 192 input maps and passes the pool's 192 maps through. The module with reductions first squeezes the
# input to 96 and 16 maps with 1x1 convolutions, and projects the pool to 32. Counted at 28x28:

# %%
naive = PaperInception(192, 64, 0, 128, 0, 32, 0, reduce=False)
costs = {}
for name, module in (("naive (figure 2a)", naive), ("with 1x1 reductions (figure 2b)", paper_3a)):
    s = summarize(module, (192, 28, 28))
    costs[name] = (s.total_params, s.total_macs, s.rows[-1].output_shape[0] if s.rows[-1].output_shape else None)
    out_channels = module(torch.zeros(1, 192, 28, 28)).shape[1]
    print(f"{name:32s} {s.total_params:>9,} weights  {s.total_macs / 1e6:7.1f} M MACs  -> {out_channels} maps")
(naive_p, naive_m, _), (red_p, red_m, _) = costs.values()
print(f"the reductions cut weights {naive_p / red_p:.1f}x and multiply-adds {naive_m / red_m:.1f}x")
# the 5x5 branch alone: 192*32*25 weights against 192*16 + 16*32*25
print("5x5 branch weights: naive", 192 * 32 * 25, " reduced", 192 * 16 + 16 * 32 * 25)

# %%
fig, ax = plt.subplots(figsize=(6, 2.4))
labels = list(costs)
ax.barh(labels, [c[1] / 1e6 for c in costs.values()], color=["tab:red", "tab:green"])
for i, c in enumerate(costs.values()):
    ax.text(c[1] / 1e6, i, f" {c[1] / 1e6:.0f} M", va="center")
ax.set_xlabel("multiply-adds per image (millions), one module at 28x28")
ax.set_xlim(0, max(c[1] for c in costs.values()) / 1e6 * 1.2)
plt.tight_layout()
plt.show()

# %% [markdown]
# The naive module is also a dead end: its output (64 + 128 + 32 + 192 = 416 maps) is wider than its
# input, because the pool branch passes every input map through, so stacking such modules would grow
# the width (and the cost) at every step. The pool projection keeps it at 256.
#
# ## GoogLeNet against AlexNet
#
# Twenty-two layers deep (counting only layers with weights on the longest path) against eight, yet
# with about a ninth of AlexNet's weights (the paper says "12 times fewer"; its global average pool
# replaces AlexNet's huge fully connected layers), for about twice the multiply-adds:

# %%
alexnet = cnnzoo.create_model("alexnet").eval()
table = {}
for name, model in (("alexnet", alexnet), ("googlenet", googlenet)):
    s = summarize(model, (3, 224, 224))
    convs = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    table[name] = (s.total_params, s.total_macs, convs)
    print(f"{name:10s} {s.total_params:>12,} parameters  {s.total_macs / 1e9:5.2f} G MACs per 224x224 image  {convs} conv layers")
(ap, am, _), (gp, gm, _) = table.values()
print(f"GoogLeNet: {ap / gp:.1f}x fewer parameters, {gm / am:.1f}x the multiply-adds")
print("published ImageNet top-5 error: AlexNet 18.2% (one model, ten crops; five models 16.4%), GoogLeNet 10.07% "
      "(one model, one crop; 7.89% with 144 crops; seven models and 144 crops 6.67%, the paper's Table 4)")
assert gp == 6_624_904

# %% [markdown]
# ## Inception v3: factorising the kernels further
#
# Inception v3 (Szegedy et al. 2016) pushes VGG's argument inside the modules: a 5x5 becomes two 3x3s,
# and an $n \times n$ convolution becomes a $1 \times n$ followed by an $n \times 1$ (same receptive
# field, $2n$ instead of $n^2$ weights per channel pair). Module `Mixed_6b` uses 1x7 and 7x1 pairs:

# %%
v3 = cnnzoo.create_model("inception_v3").eval()
m = v3.Mixed_6b
for name in ("branch7x7_1", "branch7x7_2", "branch7x7_3"):
    print(name, getattr(m, name).conv)
pair = nn.Sequential(nn.Conv2d(128, 128, (1, 7), padding=(0, 3), bias=False),
                     nn.Conv2d(128, 128, (7, 1), padding=(3, 0), bias=False))
square = nn.Conv2d(128, 128, 7, padding=3, bias=False)
rf_pair = summarize(pair, (128, 17, 17)).rows[-1].receptive_field
rf_square = summarize(square, (128, 17, 17)).rows[-1].receptive_field
print(f"1x7 then 7x1: {cnnzoo.count_params(pair):,} weights, receptive field {rf_pair}; "
      f"one 7x7: {cnnzoo.count_params(square):,} weights, receptive field {rf_square} "
      f"({1 - cnnzoo.count_params(pair) / cnnzoo.count_params(square):.0%} fewer)")
assert tuple(rf_pair) == tuple(rf_square) == (7, 7)

# %%
s = summarize(v3, (3, 299, 299), depth=1)
print(f"inception_v3: {s.total_params:,} parameters (with its auxiliary classifier), "
      f"{s.total_macs / 1e9:.2f} G MACs per 299x299 image")
blocks = [r for r in s.rows if r.name.startswith("Mixed")]
fig, ax = plt.subplots(figsize=(8, 2.8))
ax.bar([r.name.replace("Mixed_", "") for r in blocks], [r.macs / 1e6 for r in blocks], color="tab:purple")
ax.set_ylabel("M MACs")
ax.set_title("Inception v3: multiply-adds per module (299x299 input)")
plt.tight_layout()
plt.show()
print("published: 21.2% top-1 / 5.6% top-5 error, single model and crop (299x299)")

# %% [markdown]
# What this notebook does not do is train these networks: they need ImageNet-sized images to be what
# they are, and `cnnzoo study inception` and `cnnzoo study architectures` measure their speed here
# instead (`reports/inception/`, `reports/architectures/`).
#
# **Next:** notebook 5, ResNet: what goes wrong when plain networks get deeper, and the shortcut that
# fixed it.
