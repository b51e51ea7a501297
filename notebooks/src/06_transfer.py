# %% [markdown]
# # 6. Transfer learning: keep the early layers, retrain the later ones
#
# A network trained on one task has learned, in its first layers, features that are not specific to it
# (edges, strokes, corners: Yosinski et al. 2014, *How transferable are features in deep neural
# networks?*), and in its last layers features that are. Transfer learning keeps the first and
# retrains the last. How far back to retrain depends on two things (CS231n's transfer-learning notes):
#
# |                  | similar data                     | different data                        |
# |------------------|----------------------------------|---------------------------------------|
# | **little data**  | retrain the head only            | head, or the last stage               |
# | **lots of data** | fine-tune the later stages       | fine-tune everything, or from scratch |
#
# Here a LeNet-5 that learned Latin letters from fonts (bundled: `lenet5:glyphs-latin`) learns Cyrillic
# letters, a similar task (many letters share shapes), from 5 to a few hundred images per class; then a
# LeNet-5 that learned clothes (`lenet5:fashion-mnist`) tries the same, a dissimilar source. Finally
# `cnnzoo advise`'s measurements, which choose the strategy from data instead of from the table.

# %%
import os
import time

import matplotlib.pyplot as plt
import torch

import cnnzoo
from cnnzoo.data import load_dataset
from cnnzoo.transfer import advise, freeze, group_table

QUICK = os.environ.get("CNNZOO_QUICK", "0") not in ("", "0")
print(f"preset: {'quick' if QUICK else 'full'}; cnnzoo {cnnzoo.__version__}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")

# %% [markdown]
# ## The data: Latin and Cyrillic letters from fonts
#
# Each glyph dataset types its letters in every installed font; training and test fonts are disjoint,
# so the test measures unseen typefaces.

# %%
latin, cyrillic = load_dataset("glyphs-latin"), load_dataset("glyphs-cyrillic")
for splits in (latin, cyrillic):
    info = splits.info
    print(f"{info.name}: {info.num_classes} classes, {len(splits.train):,} training and {len(splits.test):,} test images")
fig, axes = plt.subplots(2, 12, figsize=(10, 2))
for row, splits in zip(axes, (latin, cyrillic), strict=True):
    for i, ax in enumerate(row):
        index = int((splits.train.labels == i * (splits.info.num_classes // 12)).nonzero()[0])
        ax.imshow(splits.train.images[index, 0], cmap="gray")
        ax.set_title(splits.info.classes[int(splits.train.labels[index])], fontsize=9)
        ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Which layers: groups, frozen and trainable
#
# cnnzoo splits every model into named groups from the input (stem) to the classifier (head). A
# strategy says which groups learn: `head` (the new classifier only), `last:N` (the last N groups before
# the head, and the head), `full` (everything, starting from the source's weights), `scratch` (the same
# network from random weights: the baseline transfer must beat).

# %%
model = cnnzoo.create_model("lenet5", pretrained="glyphs-latin")
for strategy in ("head", "last:1", "last:2", "full"):
    freeze(model, strategy)
    table = group_table(model)
    trainable = sum(n for _, n, t in table if t)
    print(f"{strategy:7s} " + "  ".join(f"{g}{'*' if t else ' '}" for g, _, t in table)
          + f"   trainable {trainable:>6,} of {sum(n for _, n, _ in table):,} weights")
print("(* = trains)")

# %% [markdown]
# ## How far back, by data size: Latin -> Cyrillic
#
# `cnnzoo.finetune` replaces the 52-letter classifier with a 33-letter one and trains with the recipe
# the transfer study measured for each strategy and data size. Each cell draws `samples_per_class`
# training images per letter (seeded); the test split is always the whole Cyrillic test set.

# %%
sizes = [5, 50] if QUICK else [5, 25, 150]
strategies = ["head", "full", "scratch"] if QUICK else ["head", "last:2", "full", "scratch"]
budget = dict(epochs=2) if QUICK else {}


def grid(source, data, sizes, strategies):
    results = {}
    for n in sizes:
        for strategy in strategies:
            start = time.perf_counter()
            run = cnnzoo.finetune(source, data=data, strategy=strategy, samples_per_class=n, quiet=True, **budget)
            results[(n, strategy)] = run.final_acc
            print(f"{n:>4} per class  {strategy:8s} {run.final_acc:6.2f}%  ({time.perf_counter() - start:4.1f} s)")
    return results


start = time.perf_counter()
similar = grid("lenet5:glyphs-latin", "glyphs-cyrillic", sizes, strategies)
print(f"{len(similar)} fine-tuning runs in {time.perf_counter() - start:.0f} s")

# %%
def plot_grid(results, title, ax):
    for strategy in strategies:
        if strategy == "scratch":  # random weights: the same runs whatever the source
            ax.plot(sizes, [similar[(n, strategy)] for n in sizes], "k--", label=strategy)
        else:
            ax.plot(sizes, [results[(n, strategy)] for n in sizes], "o-", label=strategy)
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("training images per class")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


fig, ax = plt.subplots(figsize=(5, 3.2))
plot_grid(similar, "source: Latin letters -> Cyrillic", ax)
ax.set_ylabel("Cyrillic test accuracy (%)")
plt.tight_layout()
plt.show()
for n in sizes:
    best = max(strategies, key=lambda s: similar[(n, s)])
    print(f"{n:>4} per class: best {best} ({similar[(n, best)]:.1f}%), transfer's gain over scratch "
          f"{max(similar[(n, s)] for s in strategies if s != 'scratch') - similar[(n, 'scratch')]:+.1f} points")

# %% [markdown]
# With few images per class the Latin features carry most of the way and scratch is far behind; the
# gain printed above is what the source's weights are worth at each size, and it shrinks as the images
# per class grow: the "lots of data" row of the table. (The quick preset trains 2 epochs per cell, far
# below the recipe's 300 steps, so its figures are lower across the board, scratch's most of all.)
#
# ## A dissimilar source: clothes -> Cyrillic
#
# The same grid from LeNet-5 trained on Fashion-MNIST. Its first layers have seen edges and textures,
# not strokes, and its later layers shapes of shirts and shoes.

# %%
start = time.perf_counter()
# scratch starts from random weights whatever the source: its runs above are the baseline here too
dissimilar = grid("lenet5:fashion-mnist", "glyphs-cyrillic", sizes, [s for s in strategies if s != "scratch"])
print(f"{len(dissimilar)} fine-tuning runs in {time.perf_counter() - start:.0f} s")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
plot_grid(similar, "source: Latin letters (similar)", axes[0])
plot_grid(dissimilar, "source: clothes (dissimilar)", axes[1])
axes[0].set_ylabel("Cyrillic test accuracy (%)")
plt.tight_layout()
plt.show()
for n in sizes:
    best_latin = max(similar[(n, s)] for s in strategies if s != "scratch")
    best_clothes = max(dissimilar[(n, s)] for s in strategies if s != "scratch")
    print(f"{n:>4} per class: head only, Latin source {similar[(n, 'head')]:.1f}% vs clothes source "
          f"{dissimilar[(n, 'head')]:.1f}%;  best transfer over scratch ({similar[(n, 'scratch')]:.1f}%): Latin "
          f"{best_latin - similar[(n, 'scratch')]:+.1f}, clothes {best_clothes - similar[(n, 'scratch')]:+.1f} points")

# %% [markdown]
# The clothes features are worth much less as features: a new classifier on top of them (`head`) is
# far below the Latin source's at every size. What is left of the transfer when the whole network is
# retrained is printed below as the gain of the best clothes-sourced strategy over scratch, beside the
# Latin source's: where it is near zero, transfer is of little value and training from scratch loses
# nothing.
#
# ## `cnnzoo advise`: measuring instead of guessing
#
# Where does a new problem sit in the table? `advise` measures both axes: images per class, and how
# good the source's features are on the new data (a linear probe, cross-validated on the training
# images, on the source's features against the same probe on random features of the same network).
# The rules that turn these figures into a strategy were chosen on the transfer study's grids and scored
# on grids committed before they were measured (`reports/transfer/`). The same as `cnnzoo advise --from lenet5:glyphs-latin --data
# glyphs-cyrillic --samples-per-class 20`:

# %%
for source in ("lenet5:glyphs-latin", "lenet5:fashion-mnist"):
    advice = advise(source, cyrillic, samples_per_class=20, probe_epochs=3 if QUICK else 15)
    print(f"--- from {source}")
    print(advice.describe())
    print(f"probe accuracy on the source's features {advice.probe_source:.1f}%, on random features "
          f"{advice.probe_random:.1f}% (gap {advice.probe_source - advice.probe_random:+.1f} points)\n")

# %% [markdown]
# The probe gap is the similarity axis measured: large for the Latin source, small for the clothes
# one. Where a figure lies near one of the rules' thresholds, `advise` says it is unsure and suggests
# `--trial`, which races the strategies on a validation split carved from the training images.
#
# ## d2l.ai's fine-tuning experiment, for comparison
#
# *Dive into Deep Learning*, chapter 14.2 "Fine-Tuning"
# (<https://d2l.ai/chapter_computer-vision/fine-tuning.html>), fine-tunes an ImageNet-pretrained
# ResNet-18 on its hot-dog dataset (2,000 training photos, 2 classes) for 5 epochs on GPUs: the output
# layer from scratch at ten times the base rate, the rest from the pretrained weights, against the same
# network from random weights; its conclusion is that "the fine-tuned model tends to perform better for
# the same epoch because its initial parameter values are more effective". Its printed accuracies are
# in the rendered page, not reproduced here (no network access from this notebook, and a ResNet-18 on
# 224x224 photos is not a CPU-minutes experiment). The Latin -> Cyrillic grid above is the same
# experiment at LeNet scale, with the wall time of every cell printed.
