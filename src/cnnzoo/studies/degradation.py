"""`cnnzoo study degradation`: the motivation of ResNet, measured on a CPU budget.

K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition", CVPR 2016. Fig. 1 and
Fig. 6: on CIFAR-10 a 56-layer plain network has higher *training* error than a 20-layer one (so it is not
overfitting: the deeper net is harder to optimise), while with identity shortcuts the 56-layer net trains
at least as well as the 20-layer one.

Here: plain-20, plain-56, resnet-20 and resnet-56 (`cnnzoo.models.resnet`: the same layers, the plain ones
without shortcuts), one recipe for all four, Fashion-MNIST resized once to a small square (CIFAR-10 needs a
download; Fashion-MNIST is on disk), several seeds:
1. training and test error per epoch, drawn like the paper's figures (thin dashed: training, bold: test);
2. the final training error measured on the whole training subset in eval mode: the claim holds if
   plain-56 trains worse than plain-20 (beyond the spread over seeds) while resnet-56 does not train worse
   than resnet-20;
3. the gradient norm of every convolution's weights on one fixed batch, at initialisation and after one
   epoch of the same recipe: does the gradient reaching the first layers vanish without shortcuts?
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_dataset
from ..data.base import Splits
from ..models import count_params, create_model
from . import _md as md
from ._common import (
    ONE_SEED,
    PLATEAU,
    StudyRun,
    accuracy_on,
    budget_verdict,
    fit_quiet,
    load_results,
    loss_figure,
    mean_std,
    pm,
    provenance_lines,
    pyplot,
    rerun_hint,
    save_figure,
    study_runner,
    subset_index,
    train_config,
    write_readme,
)
from ._pictures import batch_of
from ._registry import Study, register_study

__all__ = ["run_degradation_study", "rewrite_report", "gradient_norms", "PRESETS", "MODELS"]

NAME = "degradation"
DATA = "fashion-mnist"
MODELS = ("plain20", "plain56", "resnet20", "resnet56")
# CIFAR-10 test error (%), He et al. 2016, Table 6; plain networks are published only as curves (Fig. 6)
PAPER_TEST_ERROR = {"resnet20": 8.75, "resnet56": 6.97}


@dataclass(frozen=True)
class Preset:
    seeds: int
    image_size: int  # Fashion-MNIST's 28x28 resized once to this side
    train_subset: int
    test_subset: int
    epochs: int
    batch_size: int = 32  # small: a thousand images give 32 steps an epoch
    lr: float = 0.1  # the paper's rate, with its momentum 0.9 and weight decay 1e-4
    weight_decay: float = 1e-4
    grad_batch: int = 128  # images of the fixed batch the per-layer gradient norms are measured on


PRESETS = {
    # 1,920 steps of 32 (the first report's 190 stopped on falling curves); 8x8 images and two seeds buy the
    # steps on a shared 2-core CPU. The paper's rate 0.1 is for batch 128: 0.05 at batch 32 (linear rule)
    "full": Preset(seeds=2, image_size=8, train_subset=1_000, test_subset=500, epochs=60, lr=0.05),
    # sized for one H100-class GPU (never run here): the paper's batch and rate, 32x32, 20k steps
    "cuda": Preset(
        seeds=3, image_size=32, train_subset=50_000, test_subset=10_000, epochs=50, batch_size=128, lr=0.1
    ),
    "quick": Preset(seeds=1, image_size=16, train_subset=800, test_subset=500, epochs=3),
    "tiny": Preset(
        seeds=1, image_size=8, train_subset=64, test_subset=64, epochs=1, batch_size=32, grad_batch=16
    ),
}


def _config(p: Preset, model: str, seed: int, device: str, epochs: int):
    return train_config(
        model=model, data=DATA, epochs=epochs, batch_size=p.batch_size, lr=p.lr, momentum=0.9,
        weight_decay=p.weight_decay, seed=seed, device=device, eval_every=1, augment="none",
    )  # fmt: skip


def gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """L2 norm of the cross-entropy gradient of each convolution's weight (forward order), then the fc's,
    on one batch, in training mode (BatchNorm on batch statistics, as in training)."""
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    norms = [m.weight.grad.norm().item() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.zero_grad(set_to_none=True)
    model.eval()
    return norms


def _measure(run: StudyRun, out: Path, device: str) -> None:
    """The four networks trained with one recipe per seed (curves every epoch), then the per-layer
    gradient norms at initialisation and after one epoch."""
    p, seeds, results = run.preset, run.seeds, run.results
    splits = load_dataset(DATA)
    info = splits.info
    test = splits.test.subset(subset_index(len(splits.test), p.test_subset, 0))
    runs = {
        m: {"params": count_params(create_model(m, num_classes=10, in_chans=1)), "seeds": []} for m in MODELS
    }
    for seed in range(seeds):
        train = splits.train.subset(subset_index(len(splits.train), p.train_subset, seed))
        for model_name in MODELS:  # the four take turns within a seed: load drifts hit them alike
            torch.manual_seed(seed)
            model = create_model(model_name, num_classes=info.num_classes, in_chans=info.channels)
            fit = fit_quiet(
                model,
                Splits(train, test),
                _config(p, model_name, seed, device, p.epochs),
                image_size=p.image_size,
            )
            runs[model_name]["seeds"].append(
                {
                    "seed": seed,
                    "train_error_curve": [100 - r["train_acc"] for r in fit.history],
                    "test_error_curve": [100 - r["test_acc"] for r in fit.history],
                    "final_train_error": 100 - accuracy_on(fit.model, train, p.image_size, device),
                    "final_test_error": 100 - fit.final_acc,
                    "seconds": fit.seconds,
                    "train_loss_curve": [round(r["train_loss"], 5) for r in fit.history],
                }
            )
    results["runs"] = runs
    results["gradients"] = _gradients(splits, test, p, device)
    results["train_images"], results["test_images"] = min(p.train_subset, len(splits.train)), len(test)


def _gradients(splits: Splits, test, p: Preset, device: str) -> dict:
    """Per-layer gradient norms of each model (seed 0) at initialisation and after one epoch of the recipe."""
    train = splits.train.subset(subset_index(len(splits.train), p.train_subset, 0))
    fixed = train.subset(torch.arange(min(p.grad_batch, len(train))))
    x, y = batch_of(fixed, p.image_size), fixed.labels
    out = {}
    for model_name in MODELS:
        torch.manual_seed(0)
        model = create_model(model_name, num_classes=10, in_chans=1)
        at_init = gradient_norms(model, x, y)
        cfg = _config(p, model_name, 0, device, 1)
        fit_quiet(model, Splits(train, test), cfg, image_size=p.image_size, label=f"{model_name}-gradients")
        out[model_name] = {"init": at_init, "epoch1": gradient_norms(model.cpu(), x, y)}
    return out


def rewrite_report(out: str | Path = "reports/degradation") -> Path:
    return write_report(load_results(out, NAME), Path(out))


# --- the report ---------------------------------------------------------------------------------------


def _final(results: dict, model: str, key: str = "final_train_error") -> list[float]:
    return [s[key] for s in results["runs"][model]["seeds"]]


def images_seen(p: dict) -> int:
    """Training images a preset's runs see: four networks, every seed, every epoch."""
    return len(MODELS) * p["seeds"] * p["train_subset"] * p["epochs"]


def _checks(results: dict) -> list[dict]:
    """The plateau check (`PLATEAU`) of every run; one recorded without its loss curve counts as not converged."""
    return [
        PLATEAU.check(s.get("train_loss_curve", [])) for r in results["runs"].values() for s in r["seeds"]
    ]


def verdict(results: dict) -> tuple[str, list[str]]:
    """(verdict, the figures) for He et al.'s claim, in two parts: plain-56 trains worse than plain-20 (beyond
    the larger standard deviation), and resnet-56 does not train worse than resnet-20 (not beyond it).
    Held when both hold, Partly held when only the first does, Inconclusive with one seed or when the plain
    difference is within the spread, Did not hold otherwise; Budget-bound whatever it reads when a run was
    still learning (`budget_verdict`), since the claim is about errors at convergence."""
    (p20, s20), (p56, s56) = mean_std(_final(results, "plain20")), mean_std(_final(results, "plain56"))
    (r20, t20), (r56, t56) = mean_std(_final(results, "resnet20")), mean_std(_final(results, "resnet56"))
    n = len(results["runs"]["plain20"]["seeds"])
    plain_worse = p56 - p20 > max(s20, s56)
    plain_unclear = abs(p56 - p20) <= max(s20, s56)
    res_not_worse = r56 - r20 <= max(t20, t56)
    figures = [
        f"plain-56 final training error {p56:.2f} ± {s56:.2f}% vs plain-20 {p20:.2f} ± {s20:.2f}% "
        f"({'worse: degradation' if plain_worse else 'not worse'})",
        f"resnet-56 {r56:.2f} ± {t56:.2f}% vs resnet-20 {r20:.2f} ± {t20:.2f}% "
        f"({'not worse' if res_not_worse else 'also worse'})",
        f"depth 56 minus depth 20: {p56 - p20:+.1f} points without shortcuts, {r56 - r20:+.1f} with them",
    ]
    if n < 2:
        read = "Inconclusive"
        figures.append(ONE_SEED)
    elif plain_unclear:
        read = "Inconclusive"
    elif plain_worse and res_not_worse:
        read = "Held"
    else:
        read = "Partly held" if plain_worse else "Did not hold"
    factor = images_seen(asdict(PRESETS["cuda"])) / images_seen(results["preset_config"])
    final, note = budget_verdict(read, _checks(results), rerun_hint(NAME, results, "cuda", factor))
    return final, figures + ([note] if note else [])


def _plots(results: dict, out: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True)
    colors = {"20": "C0", "56": "C3"}
    for ax, family in zip(axes, ("plain", "resnet"), strict=True):
        for depth in ("20", "56"):
            name = f"{family}{depth}"
            seeds = results["runs"][name]["seeds"]
            for key, style, width in (("train_error_curve", "--", 1), ("test_error_curve", "-", 2.2)):
                curves = [s[key] for s in seeds]
                epochs = list(range(1, len(curves[0]) + 1))
                m = [mean_std(c[e - 1] for c in curves)[0] for e in epochs]
                label = f"{family}-{depth} {'train' if key.startswith('train') else 'test'}"
                ax.plot(epochs, m, style, color=colors[depth], lw=width, label=label)
        ax.set_title(
            f"{'plain networks' if family == 'plain' else 'ResNets'} (cf. He et al. Fig. {'6 left' if family == 'plain' else '6 middle'})"
        )
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%): dashed training (running), bold test")
    p = results["preset_config"]
    fig.suptitle(
        f"{DATA} at {p['image_size']}x{p['image_size']}, {results['train_images']:,} training images, mean of "
        f"{len(results['runs']['plain20']['seeds'])} seed(s)",
        fontsize=10,
    )
    save_figure(fig, out / "curves.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True)
    for ax, when in zip(axes, ("init", "epoch1"), strict=True):
        for name, g in results["gradients"].items():
            style = "-" if name.startswith("resnet") else "--"
            ax.plot(range(1, len(g[when]) + 1), g[when], style, lw=1.5 if "56" in name else 1, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("layer (convolutions in forward order, then the fc)")
        ax.set_title("at initialisation" if when == "init" else "after one epoch")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("gradient norm of the layer's weights (log scale)")
    fig.suptitle("Per-layer gradient norms on one fixed batch (seed 0)", fontsize=10)
    save_figure(fig, out / "gradients.png")
    panels = {
        family: {
            f"{family}-{depth}": [
                s.get("train_loss_curve") or [math.nan] for s in results["runs"][f"{family}{depth}"]["seeds"]
            ]
            for depth in ("20", "56")
        }
        for family in ("plain", "resnet")
    }
    loss_figure(panels, out / "loss.png", "Training loss per epoch")


def _ratio(g: list[float]) -> float:
    """First conv's gradient norm over the median of all layers': how much reaches the bottom."""
    s = sorted(g)
    return g[0] / s[len(s) // 2]


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    p = results["preset_config"]
    lines = md.document(
        "Degradation: deeper plain networks train worse, ResNets do not",
        provenance_lines(results),
        f"Budget: {DATA} resized to {p['image_size']}x{p['image_size']}, {results['train_images']:,} training "
        f"images (a seeded random subset per seed), {p['epochs']} epochs; test on {results['test_images']:,} test "
        f"images. One recipe for all four: SGD momentum 0.9, one-cycle learning rate peaking at {p['lr']}, weight "
        f"decay {p['weight_decay']}, batch {p['batch_size']}, no augmentation: {_steps(results):,} optimizer steps "
        "per run, against the paper's 64k iterations of 128 on CIFAR-10. The claim is about errors at "
        "convergence, so the verdict is read only when every run converged: "
        + PLATEAU.describe()
        + "; otherwise it is **Budget-bound**, with the command of a budget that can answer.",
        _errors_section(results),
        _gradients_section(results["gradients"]),
        "Raw numbers, every run and epoch: [results.json](results.json).",
    )
    _plots(results, out)
    return write_readme(out, lines)


def _errors_section(results: dict) -> list[str]:
    """Final training and test errors of the four networks, and the verdict on He et al.'s claim."""
    rows = [
        [
            f"`{name}`",
            f"{run['params']:,}",
            pm(_final(results, name)),
            pm(_final(results, name, "final_test_error")),
            f"{PAPER_TEST_ERROR[name]}% (CIFAR-10, Table 6)"
            if name in PAPER_TEST_ERROR
            else "curves only (Fig. 6)",
            f"{mean_std(s['seconds'] for s in run['seeds'])[0]:.0f} s",
        ]
        for name, run in results["runs"].items()
    ]
    v, figures = verdict(results)
    return md.section(
        "Final errors",
        md.table(
            ["model", "parameters", "training error % (eval mode)", "test error %", "paper", "time per run"],
            rows,
        ),
        f"**{v} here**: the claim is that plain-56 trains worse than plain-20 while resnet-56 does not train worse "
        f"than resnet-20 ({'; '.join(figures)}; a difference counts only beyond the larger standard deviation).",
        md.figure("curves.png"),
        _convergence_table(results),
        md.figure("loss.png"),
    )


def _steps(results: dict) -> int:
    p = results["preset_config"]
    return -(-results["train_images"] // p["batch_size"]) * p["epochs"]


def _convergence_table(results: dict) -> list[str]:
    """Each network's runs against the plateau criterion, read from the training-loss curves below."""
    rows = []
    for name, run in results["runs"].items():
        checks = [PLATEAU.check(s.get("train_loss_curve", [])) for s in run["seeds"]]
        falls = [f"{100 * c['improvement']:.1f}%" for c in checks if c["improvement"] is not None]
        losses = [f"{c['loss']:.3f}" for c in checks if c["loss"] is not None]
        rows.append(
            [
                f"`{name}`",
                f"{sum(c['converged'] for c in checks)}/{len(checks)}",
                ", ".join(falls) or "no curve recorded",
                ", ".join(losses) or "-",
            ]
        )
    return md.join(
        md.table(
            ["model", "converged", "share of the run's loss fall in the last window", "final loss"], rows
        )
    )


def _gradients_section(gradients: dict) -> list[str]:
    """The gradient reaching each network's first convolution, against the median layer's."""
    rows = [
        [
            f"`{name}`",
            f"{g['init'][0]:.3g}",
            f"{_ratio(g['init']):.2f}",
            f"{g['epoch1'][0]:.3g}",
            f"{_ratio(g['epoch1']):.2f}",
        ]
        for name, g in gradients.items()
    ]
    g56, r56 = gradients["plain56"], gradients["resnet56"]
    grows = _ratio(g56["init"]) > 1
    return md.section(
        "Gradients per layer",
        md.table(
            [
                "model",
                "first conv's gradient norm, init",
                "first / median layer, init",
                "first conv, after 1 epoch",
                "first / median, after 1 epoch",
            ],
            rows,
        ),
        f"At initialisation the gradient reaching plain-56's first convolution is {_ratio(g56['init']):.1f}x the "
        f"median layer's ({'larger: it grows towards the input' if grows else 'smaller: it shrinks towards the input'}); "
        f"after one epoch it is {_ratio(g56['epoch1']):.2f}x, against {_ratio(r56['epoch1']):.2f}x in resnet-56.",
        "The gradient of the cross-entropy on one fixed batch of training images, per layer. With BatchNorm in "
        "every block (as in the paper) the plain networks' gradients need not vanish; the paper itself argues the "
        "degradation is not caused by vanishing gradients (sec. 4.1), and these numbers show whether that held "
        "here.",
        md.figure("gradients.png"),
    )


def finding(results: dict) -> tuple[str, str]:
    v, figures = verdict(results)
    return v, "; ".join(figures) + f" (final training error, {results['preset_config']['epochs']} epochs)"


run_degradation_study = study_runner(NAME, PRESETS, _measure, write_report, default_out="reports/degradation")

register_study(
    Study(
        name=NAME,
        summary="He et al.'s degradation: plain-20/56 vs resnet-20/56, training and test error, per-layer gradients",
        run=run_degradation_study,
        report=rewrite_report,
        default_out="reports/degradation",
        finding=finding,
        presets=tuple(PRESETS),
    )
)
