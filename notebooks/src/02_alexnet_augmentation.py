# %% [markdown]
# # 2. AlexNet and data augmentation
#
# Krizhevsky, Sutskever and Hinton, *ImageNet classification with deep convolutional neural networks*
# (NeurIPS 2012). AlexNet is LeNet's template made large: convolutions with ReLUs, max-pooling, fully
# connected layers, a softmax. What made 60 million weights trainable on 1.2 million images was as much
# the data as the network: random crops and mirror images multiplied the training set.
#
# Training AlexNet itself takes GPU-days; here we read its structure from the model, then show and
# measure the augmentations on real images (Fashion-MNIST clothes and MNIST digits) with small networks.

# %%
import os
import time

import matplotlib.pyplot as plt
import torch

import cnnzoo
from cnnzoo.data import load_dataset
from cnnzoo.data.augment import cutout, random_affine, random_crop, random_flip, random_resized_crop
from cnnzoo.summary import summarize_model

QUICK = os.environ.get("CNNZOO_QUICK", "0") not in ("", "0")
print(f"preset: {'quick' if QUICK else 'full'}; cnnzoo {cnnzoo.__version__}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")

# %% [markdown]
# ## The template
#
# Five convolutions (each followed by a ReLU), three max-pools, three fully connected layers; the last
# one's 1,000 outputs become class probabilities through a softmax. The summary traces a 224x224 image
# through torchvision's layout of the network (`alexnet`; the paper's own, with local response
# normalisation and two-GPU grouped convolutions, is `alexnet2012`).

# %%
summary = summarize_model("alexnet")
print(f"{'layer':14s}{'type':19s}{'output':>14s}{'params':>12s}{'MACs':>14s}{'RF':>6s}")
for r in summary.rows:
    if r.type in ("Conv2d", "MaxPool2d", "Linear"):
        shape = "x".join(map(str, r.output_shape))
        rf = r.receptive_field if isinstance(r.receptive_field, str) else r.receptive_field[0]
        print(f"{r.name:14s}{r.type:19s}{shape:>14s}{r.params:>12,}{r.macs:>14,}{rf!s:>6}")
conv = sum(r.params for r in summary.rows if r.type == "Conv2d")
fc = sum(r.params for r in summary.rows if r.type == "Linear")
conv_macs = sum(r.macs for r in summary.rows if r.type == "Conv2d")
print(f"\ntotal {summary.total_params:,} parameters: convolutions {conv:,} ({conv / summary.total_params:.0%}), "
      f"fully connected {fc:,} ({fc / summary.total_params:.0%})")
print(f"multiply-adds per image: {summary.total_macs / 1e6:.0f} M, {conv_macs / summary.total_macs:.0%} of them in the convolutions")
assert summary.total_params == 61_100_840

# %% [markdown]
# LeNet's trade again, a thousand times larger: 96% of the weights are in the fully connected layers,
# 92% of the arithmetic in the convolutions. The 11x11 stride-4 first layer shrinks 224 to 55 at once;
# by the last pool one unit sees 195x195 of the 224x224 input.
#
# **Softmax** turns the last layer's scores (logits) into probabilities, $p_i = e^{z_i} / \sum_j e^{z_j}$.
# On the bundled LeNet-5 (MNIST) and one test digit:

# %%
mnist = load_dataset("mnist")
lenet = cnnzoo.create_model("lenet5", pretrained="mnist").eval()


def normalise(images01, info):
    """Images in 0..1, (B, C, H, W) -> the input a model trained on `info`'s dataset takes."""
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (images01 - mean) / std


with torch.no_grad():
    logits = lenet(normalise(mnist.test.images[:1].float() / 255, mnist.test.info))[0]
probs = torch.softmax(logits, 0)
for digit, (z, p) in enumerate(zip(logits.tolist(), probs.tolist(), strict=True)):
    print(f"class {digit}: logit {z:7.2f}  probability {p:.4f}")
print(f"label {int(mnist.test.labels[0])}; probabilities sum to {probs.sum():.4f}")

# %% [markdown]
# ## Augmentation, shown on real images
#
# AlexNet trained on random 224x224 crops of 256x256 images and their mirror images: $32 \times 32$
# positions $\times 2$ mirrors $= 2{,}048$ variants of each picture (strongly correlated ones, so
# not 2,048 times the information). Below, each of cnnzoo's batched augmentations applied to the same
# eight Fashion-MNIST test images (one random draw per image).

# %%
assert 32 * 32 * 2 == 2048
fashion = load_dataset("fashion-mnist")
classes = fashion.test.info.classes
originals = fashion.test.images[:8].float() / 255  # (8, 1, 28, 28) in 0..1
gen = torch.Generator().manual_seed(0)
variants = {
    "original": originals,
    "crop (pad 4)": random_crop(originals, 4, gen),
    "flip": random_flip(originals, gen),
    "affine": random_affine(originals, gen, degrees=15, scale=(0.85, 1.15), shear=10, translate=0.1),
    "resized crop": random_resized_crop(originals, gen),
    "cutout 10": cutout(originals, gen, 10),
}
fig, axes = plt.subplots(len(variants), 8, figsize=(9, 7))
for row, (name, batch) in zip(axes, variants.items(), strict=True):
    for i, ax in enumerate(row):
        ax.imshow(batch[i, 0], cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    row[0].set_ylabel(name, fontsize=9)
for i, ax in enumerate(axes[0]):
    ax.set_title(classes[int(fashion.test.labels[i])], fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## ...and measured
#
# **What each manipulation changes.** On 10,000 test images, the fraction of pixels that moved by more
# than 0.1 (of the 0..1 range), and how many images a "flip" actually mirrored:

# %%
test_images = fashion.test.images.float() / 255
gen = torch.Generator().manual_seed(1)
for name, fn in [
    ("crop (pad 2)", lambda x: random_crop(x, 2, gen)),
    ("crop (pad 4)", lambda x: random_crop(x, 4, gen)),
    ("flip", lambda x: random_flip(x, gen)),
    ("affine", lambda x: random_affine(x, gen)),
    ("resized crop", lambda x: random_resized_crop(x, gen)),
    ("cutout 10", lambda x: cutout(x, gen, 10)),
]:
    changed = (fn(test_images) - test_images).abs() > 0.1
    per_image = changed.flatten(1).any(1).float().mean()
    print(f"{name:13s} pixels changed {changed.float().mean():6.1%}   images changed {per_image:6.1%}")

# %% [markdown]
# **Which changes keep the label.** A network only learns invariances it is shown. The bundled LeNet-5
# was trained on MNIST with small affine distortions, never mirrored: on mirrored digits it fails
# (a mirrored 3 is not a digit, a mirrored 2 looks like a 5), while small shifts cost it almost nothing.
# This is why cnnzoo never flips digits or letters by default (`cnnzoo datasets` says per dataset).

# %%
digits = mnist.test.images.float() / 255
labels = mnist.test.labels
info = mnist.test.info
gen = torch.Generator().manual_seed(2)


@torch.no_grad()
def accuracy(model, images01, labels, info):
    return (model(normalise(images01, info)).argmax(1) == labels).float().mean().item() * 100


for name, images in [
    ("original", digits),
    ("shifted (crop, pad 2)", random_crop(digits, 2, gen)),
    ("affine (10 deg, ±10%)", random_affine(digits, gen)),
    ("mirrored (all)", digits.flip(3)),
]:
    print(f"bundled LeNet-5 on {name:24s} {accuracy(lenet, images, labels, info):6.2f}%")

# %% [markdown]
# **What augmentation buys, and what it costs.** The same network trained with and without crops and
# flips, on a few thousand Fashion-MNIST images (where flips keep the label), the test split untouched.
# Augmentation is a regulariser: it narrows the gap between what a network scores on its training
# images and on new ones. Whether that raises test accuracy depends on how much the plain network
# overfits: AlexNet's 60 million weights on 1.2 million images over 90 epochs overfit badly without
# it; LeNet-5's 61,706 weights on a few thousand small images for a few epochs hardly do, and there the
# harder, augmented task mostly costs accuracy. (The quick preset: one size, one seed, 4 epochs; the
# full one: two sizes, 10 epochs. `cnnzoo study augmentation` found the same over three seeds.)

# %%
sizes = [2_000] if QUICK else [2_000, 10_000]
epochs = 4 if QUICK else 10
results, gaps = {}, {}
start = time.perf_counter()
for n in sizes:
    for augment in ("none", "crop=2,flip"):
        run = cnnzoo.train("lenet5", data="fashion-mnist", train_subset=n, epochs=epochs, augment=augment,
                           batch_size=64, quiet=True)
        train_acc = run.history[-1]["train_acc"]
        results[(n, augment)] = run.final_acc
        gaps[(n, augment)] = train_acc - run.final_acc  # on the batches it trained on, augmented or not
        print(f"{n:>6,} images, augment {augment:12s}: test {run.final_acc:.2f}%  (train batches {train_acc:.1f}%)")
print(f"{len(results)} runs in {time.perf_counter() - start:.0f} s")

# %%
fig, ax = plt.subplots(figsize=(5, 3))
for augment, marker in (("none", "o"), ("crop=2,flip", "s")):
    ax.plot(sizes, [results[(n, augment)] for n in sizes], marker + "-", label=f"augment={augment}")
ax.set_xscale("log")
ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
ax.set_xlabel("training images")
ax.set_ylabel("test accuracy (%)")
ax.set_title(f"LeNet-5 on Fashion-MNIST, {epochs} epochs")
ax.legend()
plt.tight_layout()
plt.show()
for n in sizes:
    print(f"{n:,} images, {epochs} epochs: augmentation changes test accuracy by "
          f"{results[(n, 'crop=2,flip')] - results[(n, 'none')]:+.2f} points and the train-test gap by "
          f"{gaps[(n, 'crop=2,flip')] - gaps[(n, 'none')]:+.2f} points")

# %% [markdown]
# `cnnzoo study augmentation` runs this grid with several seeds and sizes and reports whether the gains
# exceed the seed-to-seed spread (`reports/augmentation/`).
#
# **Next:** notebook 3, VGG: why AlexNet's large kernels gave way to stacks of 3x3 ones.
