"""`cnnzoo study vgg-stacks`: stacked 3x3 convolutions against one large kernel, as VGG argues.

K. Simonyan, A. Zisserman, "Very deep convolutional networks for large-scale image recognition", ICLR 2015,
sec. 2.3: two stacked 3x3 layers see 5x5, three see 7x7; three 3x3 layers of C channels have
3 (3^2 C^2) = 27 C^2 weights against 7^2 C^2 = 49 C^2 for one 7x7 (81% more), and put three ReLUs where
the 7x7 has one, "which makes the decision function more discriminative".

1. Weights per (input channel, output channel) pair, from the modules: 18 vs 25, 27 vs 49.
2. Receptive fields: computed by the summary's tracer, and measured as the support of the gradient of
   one output unit with respect to the input, with and without the ReLUs between the 3x3s.
3. Small networks of equal width (a 3x3 stem, then three blocks of the kind under test at 28, 14 and 7
   pixels, global pooling, a linear classifier), trained on Fashion-MNIST over several seeds: test accuracy,
   parameters, MACs, and measured forward and training speed, for one 5x5 / one 7x7 against two / three
   stacked 3x3s with and without the ReLUs between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import load_dataset
from ..data.base import Splits
from ..models import count_params
from ..summary import summarize
from . import _md as md
from ._common import (
    ONE_SEED,
    PLATEAU,
    StudyRun,
    budget_verdict,
    computed_rf,
    fit_quiet,
    images_per_second,
    load_results,
    loss_figure,
    mean_std,
    measured_rf,
    pm,
    provenance_lines,
    pyplot,
    rerun_hint,
    save_figure,
    spread_verdict,
    study_runner,
    subset_index,
    train_config,
    write_readme,
)
from ._registry import Study, register_study

__all__ = ["run_vgg_stacks_study", "rewrite_report", "StackNet", "stack", "KINDS", "PRESETS"]

NAME = "vgg-stacks"
DATA = "fashion-mnist"
# "the top-1 error of the shallow net [B with each pair of 3x3 layers replaced by one 5x5] was measured to be
# 7% higher than that of B": Simonyan & Zisserman 2015, sec. 4.1 (ImageNet, centre crop)
PAPER_5X5_TOP1_GAP = 7.0
# kind -> (kernel, number of stacked convolutions, ReLU between them)
KINDS = {
    "5x5": (5, 1, True),
    "3x3x2": (3, 2, True),
    "3x3x2 linear": (3, 2, False),
    "7x7": (7, 1, True),
    "3x3x3": (3, 3, True),
    "3x3x3 linear": (3, 3, False),
}
PAIRS = (("5x5", "3x3x2"), ("7x7", "3x3x3"))


@dataclass(frozen=True)
class Preset:
    seeds: int
    width: int  # channels of every layer
    train_subset: int
    test_subset: int
    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    speed_batch: int = 64
    speed_repeats: int = 3


PRESETS = {
    "full": Preset(
        seeds=3,
        width=16,
        train_subset=4_000,
        test_subset=2_000,
        epochs=4,
        batch_size=64,
        lr=0.1,
        speed_repeats=7,
    ),
    # sized for one H100-class GPU (never run here): all 60,000 training images for 30 epochs, the whole test set
    "cuda": Preset(seeds=3, width=16, train_subset=0, test_subset=0, epochs=30, batch_size=128, lr=0.1),
    "quick": Preset(
        seeds=1, width=16, train_subset=1_500, test_subset=1_000, epochs=3, batch_size=64, lr=0.1
    ),
    "tiny": Preset(
        seeds=1, width=4, train_subset=128, test_subset=128, epochs=1, speed_batch=4, speed_repeats=1
    ),
}


def stack(kind: str, cin: int, cout: int, *, bias: bool = False, norm: bool = True) -> nn.Sequential:
    """One block: a k x k convolution, or n stacked 3x3s (with or without ReLUs between them), ending in
    a ReLU. With `norm`, BatchNorm follows each convolution."""
    k, n, relu_between = KINDS[kind]
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, k, padding=k // 2, bias=bias))
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        if relu_between or i == n - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class StackNet(nn.Module):
    """3x3 stem, then [block, pool, block, pool, block] of one kind at equal width, average pool, linear."""

    def __init__(self, kind: str, width: int, in_chans: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            stack(kind, width, width), nn.MaxPool2d(2),  # (B, w, 14, 14) at 28x28
            stack(kind, width, width), nn.MaxPool2d(2),  # (B, w, 7, 7)
            stack(kind, width, width),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# --- no training: weights and receptive fields ------------------------------------------------------


def per_channel_pair() -> dict:
    """Weights per (input, output) channel pair of each kind, counted on a 1 -> 1 channel block, and the
    saving of each 3x3 stack over the large kernel it replaces."""
    counts = {kind: count_params(stack(kind, 1, 1, norm=False)) for kind in KINDS}
    savings = {f"{a} vs {b}": 1 - counts[b] / counts[a] for a, b in PAIRS}
    return {"weights": counts, "savings": savings}


def receptive_fields(trials: int) -> dict:
    """Computed and measured receptive field of each block (8 channels, random weights, 15x15 input)."""
    torch.manual_seed(0)
    out = {}
    for kind in KINDS:
        block = stack(kind, 8, 8, bias=True, norm=False)
        size = (8, 15, 15)
        out[kind] = {
            "computed": list(computed_rf(block, size)),
            "measured": list(measured_rf(block, size, trials=trials)),
        }
    return out


# --- training -----------------------------------------------------------------------------------------


def _cost(kind: str, width: int) -> dict:
    net = StackNet(kind, width)
    s = summarize(net, (1, 28, 28))
    return {"params": s.total_params, "macs": s.total_macs}


def _measure(run: StudyRun, out: Path, device: str) -> None:
    """Weights per channel pair, receptive fields computed and measured, then each kind of network trained
    per seed and timed."""
    p, seeds, results = run.preset, run.seeds, run.results
    results["per_channel_pair"] = per_channel_pair()
    results["receptive_fields"] = receptive_fields(trials=8 if results["preset"] != "tiny" else 3)
    splits = load_dataset(DATA)
    test = splits.test.subset(subset_index(len(splits.test), p.test_subset, 0))
    nets = {kind: {"cost": _cost(kind, p.width), "runs": []} for kind in KINDS}
    for seed in range(seeds):
        train = splits.train.subset(subset_index(len(splits.train), p.train_subset, seed))
        for kind in KINDS:  # kinds take turns within a seed, so drifts in the machine's load hit them alike
            cfg = train_config(
                model=f"stacknet-{kind}", data=DATA, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                weight_decay=5e-4, seed=seed, device=device, eval_every=p.epochs, augment="none",
            )  # fmt: skip
            torch.manual_seed(seed)
            fit = fit_quiet(StackNet(kind, p.width), Splits(train, test), cfg, image_size=28)
            last = fit.history[-1]
            nets[kind]["runs"].append(
                {
                    "seed": seed,
                    "test_acc": fit.final_acc,
                    "train_acc": last["train_acc"],
                    "seconds": fit.seconds,
                    "train_loss_curve": [round(r["train_loss"], 5) for r in fit.history],
                }
            )
    x = torch.randn(p.speed_batch, 1, 28, 28)
    torch.manual_seed(0)
    fresh = {kind: StackNet(kind, p.width) for kind in KINDS}
    forward = images_per_second(fresh, x, train=False, repeats=p.speed_repeats)
    training = images_per_second(fresh, x, train=True, repeats=p.speed_repeats)
    for kind in KINDS:
        nets[kind]["speed"] = {"forward": forward[kind], "train": training[kind]}
    results["networks"] = nets
    results["test_images"], results["train_images"] = len(test), min(p.train_subset or 60_000, 60_000)


def rewrite_report(out: str | Path = "reports/vgg-stacks") -> Path:
    return write_report(load_results(out, NAME), Path(out))


# --- the report ---------------------------------------------------------------------------------------


def _acc(results: dict, kind: str) -> tuple[float, float]:
    return mean_std(r["test_acc"] for r in results["networks"][kind]["runs"])


def compare(a: list[float], b: list[float]) -> tuple[str, str]:
    """('Held' | 'Did not hold' | 'Inconclusive', figures) for the claim mean(a) > mean(b): inconclusive
    when the difference is within the larger standard deviation, or there is one seed only."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if len(a) < 2:  # one seed: no spread to read a verdict from (not "0.00 ± 0.00")
        return "Inconclusive", f"{ma:.2f}% vs {mb:.2f}%, {ONE_SEED}"
    figures = f"{ma:.2f} ± {sa:.2f}% vs {mb:.2f} ± {sb:.2f}%, {len(a)} seeds"
    verdict, note = spread_verdict([(ma - mb, max(sa, sb))], len(a))
    return verdict, figures + (f": {note}" if note else "")


def _trained(results: dict, a: str, b: str) -> tuple[str, str, str]:
    """(verdict, figures, note) for "networks of kind `a` are more accurate than of kind `b`": `compare`'s
    verdict, read only when every run of both converged (`budget_verdict`; note: why not, and what can)."""
    nets = results["networks"]
    verdict, figures = compare(*([r["test_acc"] for r in nets[k]["runs"]] for k in (a, b)))
    checks = [PLATEAU.check(r.get("train_loss_curve", [])) for k in (a, b) for r in nets[k]["runs"]]
    p = results["preset_config"]
    factor = (60_000 * PRESETS["cuda"].epochs) / ((p["train_subset"] or 60_000) * p["epochs"])
    verdict, note = budget_verdict(verdict, checks, rerun_hint(NAME, results, "cuda", factor))
    return verdict, figures, note


def claims(results: dict) -> list[tuple[str, str, str]]:
    """(verdict, claim, figures): verdict is Held, Did not hold, Inconclusive or Budget-bound (the trained
    networks' comparisons, when a run was still learning)."""
    w, rf = results["per_channel_pair"]["weights"], results["receptive_fields"]

    out = []
    for big, small in PAIRS:
        same_rf = rf[big]["measured"] == rf[small]["measured"] == rf[f"{small} linear"]["measured"]
        out.append(
            (
                "Held" if same_rf and w[small] < w[big] else "Did not hold",
                f"{small} sees what one {big} sees, with fewer weights",
                f"measured fields {'x'.join(map(str, rf[small]['measured']))} and "
                f"{'x'.join(map(str, rf[big]['measured']))}; {w[small]} vs {w[big]} weights per channel pair "
                f"({100 * (1 - w[small] / w[big]):.0f}% fewer)",
            )
        )
    for big, small in PAIRS:
        paper = (
            f" (paper: 5x5s {PAPER_5X5_TOP1_GAP:.0f} points worse in ImageNet top-1, sec. 4.1)"
            if big == "5x5"
            else ""
        )
        verdict, figures, note = _trained(results, small, big)
        out.append(
            (
                verdict,
                f"a network of {small} stacks is more accurate than one of {big}s{paper}",
                figures + (f"; {note}" if note else ""),
            )
        )
    for _, small in PAIRS:
        verdict, figures, note = _trained(results, small, f"{small} linear")
        out.append(
            (
                verdict,
                f"the ReLUs between the stacked 3x3s help ({small} vs {small} linear)",
                figures + (f"; {note}" if note else ""),
            )
        )
    return out


def _plots(results: dict, out: Path) -> None:
    plt = pyplot()
    nets = results["networks"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for kind, n in nets.items():
        m, s = _acc(results, kind)
        marker = "o" if "linear" not in kind else "x"
        axes[0].errorbar(n["cost"]["macs"] / 1e6, m, yerr=s, fmt=marker, capsize=3, label=kind)
        axes[1].errorbar(n["speed"]["train"], m, yerr=s, fmt=marker, capsize=3, label=kind)
    axes[0].set_xlabel("MACs per image (millions)")
    axes[1].set_xlabel("training speed on this CPU (images/s)")
    for ax in axes:
        ax.set_ylabel(f"{DATA} test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("accuracy against computation")
    axes[1].set_title("accuracy against measured speed")
    fig.suptitle(
        f"Equal-width networks (width {results['preset_config']['width']}), mean ± std over seeds",
        fontsize=10,
    )
    save_figure(fig, out / "accuracy.png")

    w = results["per_channel_pair"]["weights"]
    rf = results["receptive_fields"]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    kinds = list(KINDS)
    ax.bar(range(len(kinds)), [w[k] for k in kinds], color=["C0" if "3x3" not in k else "C1" for k in kinds])
    for i, k in enumerate(kinds):
        ax.text(i, w[k] + 0.5, f"RF {rf[k]['measured'][0]}", ha="center", fontsize=8)
    ax.set_xticks(range(len(kinds)), kinds, fontsize=8)
    ax.set_xlabel("block (RF: measured receptive field, pixels)")
    ax.set_ylabel("weights per channel pair")
    ax.set_title("Same receptive field, fewer weights")
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, out / "weights.png")


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    p = results["preset_config"]
    lines = md.document(
        "VGG's stacks: 3x3 convolutions against one large kernel",
        provenance_lines(results),
        f"Budget: each network trains on {p['train_subset']:,} {DATA} images for {p['epochs']} epochs (SGD, "
        f"one-cycle lr {p['lr']}, batch {p['batch_size']}, no augmentation) and is tested on "
        f"{results['test_images']:,} test images; width {p['width']} channels everywhere.",
        _weights_section(results),
        _networks_section(results),
        md.section(
            "Which claims held here",
            md.verdicts(claims(results)),
            "Caveat: small networks on 28x28 clothing images for a few epochs; the paper's claims are about 16-19 "
            "layer networks on ImageNet. Differences within one standard deviation are not differences. The "
            "accuracy comparisons are read only from runs that converged: "
            + PLATEAU.describe()
            + "; otherwise they are **Budget-bound** (runs recorded before the criterion carry no loss curve, "
            "and count as not converged).",
            "Raw numbers, every run: [results.json](results.json).",
        ),
    )
    if _has_curves(results):
        lines += md.join(
            "Training loss per epoch of every network (the curves the accuracy verdicts are read from):",
            md.figure("loss.png"),
        )
        curves = {k: [r["train_loss_curve"] for r in n["runs"]] for k, n in results["networks"].items()}
        panels = {
            f"{big} vs {small} stacks": {k: curves[k] for k in (big, small, f"{small} linear")}
            for big, small in PAIRS
        }
        loss_figure(panels, out / "loss.png", "Training loss per epoch")
    _plots(results, out)
    return write_readme(out, lines)


def _has_curves(results: dict) -> bool:
    """Whether the runs carry their loss curves (runs recorded before the convergence criterion do not)."""
    return all("train_loss_curve" in r for n in results["networks"].values() for r in n["runs"])


def _weights_section(results: dict) -> list[str]:
    """Weights per channel pair and receptive fields (computed, measured) of each block."""
    pair, fields = results["per_channel_pair"], results["receptive_fields"]
    rows = [
        [
            kind,
            pair["weights"][kind],
            "x".join(map(str, fields[kind]["computed"])),
            "x".join(map(str, fields[kind]["measured"])),
        ]
        for kind in KINDS
    ]
    return md.section(
        "Weights and receptive fields",
        md.table(
            [
                "block",
                "weights per channel pair (C=1, no bias)",
                "RF computed",
                "RF measured (input gradient)",
            ],
            rows,
        ),
        "Savings of the 3x3 stacks per channel pair (and for any C, as every count scales with C^2): "
        + "; ".join(f"{k}: {100 * v:.0f}% fewer weights" for k, v in pair["savings"].items())
        + ". The measured field is the bounding box of the input pixels whose gradient is non-zero for the "
        "centre output unit of a block with random weights (the union over 8 random inputs, as a ReLU can "
        "switch a path off).",
        md.figure("weights.png"),
    )


def _networks_section(results: dict) -> list[str]:
    """Each kind of network: cost, measured speed, train and test accuracy."""
    p = results["preset_config"]
    rows = [
        [
            kind,
            f"{n['cost']['params']:,}",
            f"{n['cost']['macs'] / 1e6:.1f} M",
            f"{n['speed']['forward']:,.0f}",
            f"{n['speed']['train']:,.0f}",
            pm([r["train_acc"] for r in n["runs"]]),
            pm([r["test_acc"] for r in n["runs"]]),
        ]
        for kind, n in results["networks"].items()
    ]
    headers = ["blocks", "parameters", "MACs/image", "forward img/s", "train img/s"]
    return md.section(
        "Small networks of each kind",
        md.table([*headers, "train acc % (last epoch)", "test acc %"], rows),
        f"Speeds are measured on this CPU (batch {p['speed_batch']}, best of {p['speed_repeats']}, the networks "
        "taking turns); train accuracy is the running accuracy of the last epoch.",
        md.figure("accuracy.png"),
    )


def finding(results: dict) -> tuple[str, str]:
    c = claims(results)
    rf = [v for v, *_ in c[:2]]
    acc = [v for v, *_ in c[2:]]
    w = results["per_channel_pair"]["weights"]
    return (
        f"RF/weights {'held' if set(rf) == {'Held'} else 'did not hold'}; accuracy: {', '.join(a.lower() for a in acc)}"
    ), (
        f"{w['3x3x2']} vs {w['5x5']} and {w['3x3x3']} vs {w['7x7']} weights per channel pair with the same measured "
        f"receptive field; accuracy (3x3x2 vs 5x5, 3x3x3 vs 7x7, ReLU vs linear x2): "
        + "; ".join(_trained(results, a, b)[1] for a, b in _ACCURACY)
    )


# the trained comparisons of `claims`, in its order: (more accurate?, than)
_ACCURACY = [(small, big) for big, small in PAIRS] + [(small, f"{small} linear") for _, small in PAIRS]


run_vgg_stacks_study = study_runner(NAME, PRESETS, _measure, write_report, default_out="reports/vgg-stacks")

register_study(
    Study(
        name=NAME,
        summary="two/three stacked 3x3 convs vs one 5x5/7x7: weights, measured receptive fields, accuracy, speed",
        run=run_vgg_stacks_study,
        report=rewrite_report,
        default_out="reports/vgg-stacks",
        finding=finding,
        presets=tuple(PRESETS),
    )
)
