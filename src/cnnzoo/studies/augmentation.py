"""`cnnzoo study augmentation`: AlexNet-style data augmentation on and off, at several training-set sizes.

A. Krizhevsky, I. Sutskever, G. Hinton, "ImageNet classification with deep convolutional neural networks",
NIPS 2012, sec. 4.1: random crops and horizontal reflections ("without this scheme, our network suffers from
substantial overfitting") and altered intensities (PCA lighting). On grayscale 28x28 images the crops are
2-pixel shifts (`crop=2`), the reflections `flip`, and the other manipulations LeCun's small rotations,
scalings and shears (`affine`); all run batched in `cnnzoo.data.augment`.

One model (the lecture's LeNet-5), two datasets: Fashion-MNIST, where a mirrored shirt is a shirt, and
MNIST, where a mirrored digit is another glyph (a flipped 2 is no 2). For each training-set size and
augmentation, several seeds; each run takes at least `min_seen` training images (many epochs of a small
set, a few of a large one). Measured: test accuracy, accuracy on the (un-augmented) training set, and the
gap between them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data import load_dataset
from ..data.base import Splits
from ..models import create_model
from . import _md as md
from ._common import (
    BUDGET_BOUND,
    PLATEAU,
    StudyRun,
    accuracy_on,
    budget_verdict,
    fit_quiet,
    load_results,
    loss_figure,
    mean_std,
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

__all__ = ["run_augmentation_study", "rewrite_report", "PRESETS", "CONDITIONS", "claims"]

NAME = "augmentation"
MODEL = "lenet5"
# "[PCA lighting] reduces the top-1 error rate by over 1%": Krizhevsky et al. 2012, sec. 4.1 (ImageNet)
PAPER_LIGHTING_GAIN = 1.0
CONDITIONS = {  # name -> cnnzoo augmentation string
    "none": "none",
    "crop": "crop=2",
    "crop+flip": "crop=2,flip",
    "crop+flip+affine": "crop=2,flip,affine",
}
DATASETS = {  # dataset -> the conditions run on it (the flip question needs only crop vs crop+flip on digits)
    "fashion-mnist": ("none", "crop", "crop+flip", "crop+flip+affine"),
    "mnist": ("crop", "crop+flip"),
}


@dataclass(frozen=True)
class Preset:
    seeds: int
    sizes: tuple[int, ...]  # training images
    min_seen: int  # every run sees at least this many training images...
    max_epochs: int  # ...within this many epochs (and at least 2)
    test_subset: int
    batch_size: int = 64
    # AdamW: on 200 images SGD at 0.05 left one seed in three stuck near chance, and at 0.1 every one
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4


PRESETS = {
    # 50k images seen per run (150 epochs of 200 images, 25 of 2,000), and every run converges (`PLATEAU`):
    # the 12k of the first report left 5,000 images at 3 epochs, under-fitted (train barely above test), so
    # crops "lowered" accuracy by slowing convergence; 5,000 images at 10 epochs did not converge either.
    # Two seeds buy the steps on a shared 2-core CPU
    "full": Preset(seeds=2, sizes=(200, 1_000, 2_000), min_seen=50_000, max_epochs=150, test_subset=2_000),
    # sized for one H100-class GPU (never run here): the whole test set, 20,000 training images, 400k seen
    "cuda": Preset(
        seeds=5, sizes=(200, 1_000, 5_000, 20_000), min_seen=400_000, max_epochs=1_000, test_subset=10_000
    ),
    "quick": Preset(seeds=1, sizes=(200, 2_000), min_seen=6_000, max_epochs=30, test_subset=1_000),
    "tiny": Preset(seeds=1, sizes=(64, 256), min_seen=256, max_epochs=4, test_subset=128, batch_size=64),
}


def epochs_for(n: int, p: Preset) -> int:
    return max(2, min(p.max_epochs, math.ceil(p.min_seen / n)))


def _run(data: str, condition: str, n: int, seed: int, splits: Splits, test, p: Preset, device: str) -> dict:
    train = splits.train.subset(subset_index(len(splits.train), n, seed))
    epochs = epochs_for(len(train), p)
    cfg = train_config(
        model=MODEL, data=data, epochs=epochs, batch_size=min(p.batch_size, len(train)), lr=p.lr,
        optimizer=p.optimizer, weight_decay=p.weight_decay, seed=seed, device=device, eval_every=epochs,
        augment=CONDITIONS[condition],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = create_model(MODEL, num_classes=splits.info.num_classes, in_chans=1)
    fit = fit_quiet(
        model, Splits(train, test), cfg, image_size=28, label=f"{data}-{condition}-n{n}-seed{seed}"
    )
    train_acc = accuracy_on(fit.model, train, 28, device)
    return {
        "seed": seed,
        "test_acc": fit.final_acc,
        "train_acc": train_acc,
        "gap": train_acc - fit.final_acc,
        "epochs": epochs,
        "seconds": fit.seconds,
        "train_loss_curve": [round(r["train_loss"], 5) for r in fit.history],
    }


def _measure(run: StudyRun, out: Path, device: str) -> None:
    """Every (dataset, training-set size, seed, condition) cell trained once, conditions taking turns."""
    p, seeds, results = run.preset, run.seeds, run.results
    results["conditions"] = CONDITIONS
    grid = {}
    for data, conditions in DATASETS.items():
        splits = load_dataset(data)
        test = splits.test.subset(subset_index(len(splits.test), p.test_subset, 0))
        grid[data] = {}
        for n in p.sizes:
            cells = {c: [] for c in conditions}
            for seed in range(seeds):
                for c in conditions:  # conditions take turns: load drifts hit them alike
                    cells[c].append(_run(data, c, n, seed, splits, test, p, device))
            grid[data][str(n)] = cells
        results[f"test_images_{data}"] = len(test)
    results["grid"] = grid


def rewrite_report(out: str | Path = "reports/augmentation") -> Path:
    return write_report(load_results(out, NAME), Path(out))


# --- the report ---------------------------------------------------------------------------------------


def _m(cell: list[dict], key: str) -> tuple[float, float]:
    return mean_std(r[key] for r in cell)


def _diff(a: list[dict], b: list[dict], key: str) -> tuple[float, float]:
    """mean(a) - mean(b) and the larger of the two standard deviations."""
    (ma, sa), (mb, sb) = _m(a, key), _m(b, key)
    return ma - mb, max(sa, sb)


def _per_size(sizes: list[str], diffs: list[tuple[float, float]], what: str = "", unit: str = "") -> str:
    """'N{what}: +d{unit} (± s); ...' for one difference (and its spread) per training-set size."""
    return "; ".join(f"{n}{what}: {d:+.1f}{unit} (± {s:.1f})" for n, (d, s) in zip(sizes, diffs, strict=True))


def _converged(cells: list[list[dict]]) -> list[dict]:
    """The plateau check (`PLATEAU`) of every run of `cells`; a run recorded without its loss curve (the
    reports before the criterion) counts as not converged."""
    return [PLATEAU.check(r.get("train_loss_curve", [])) for cell in cells for r in cell]


def images_seen(p: dict) -> int:
    """Training images a preset's runs see, over every dataset, condition, size and seed."""
    preset = _preset(p)
    per_seed = sum(len(c) * n * epochs_for(n, preset) for c in DATASETS.values() for n in preset.sizes)
    return per_seed * preset.seeds


def rerun(results: dict) -> str:
    """The command and estimated time of the cuda preset, from this run's wall time."""
    factor = images_seen(asdict(PRESETS["cuda"])) / images_seen(results["preset_config"])
    return rerun_hint(NAME, results, "cuda", factor)


def claims(results: dict) -> list[tuple[str, str, str]]:
    """(verdict, claim, figures) for what the grid can test: a spread verdict (`spread_verdict`) read only
    when every run it compares converged (`budget_verdict`: else Budget-bound, with the command that can)."""
    grid = results["grid"]
    fashion, mnist = grid["fashion-mnist"], grid["mnist"]
    sizes = list(fashion)
    seeds = results["seeds"]
    hint = rerun(results)
    out = []

    def add(diffs, claim: str, figures: str, cells, want_positive: bool = True, verdict: str | None = None):
        """`cells`: per size compared (in the order of `diffs`), the cells of the runs compared there."""
        spread, note = spread_verdict(diffs, seeds, want_positive=want_positive)
        per_size = [_converged(c) for c in cells]
        v, budget = budget_verdict(verdict or spread, [c for checks in per_size for c in checks], hint)
        done = [i for i, checks in enumerate(per_size) if all(c["converged"] for c in checks)]
        if v == BUDGET_BOUND and verdict is None and done:  # what the sizes that converged can say
            partial = spread_verdict([diffs[i] for i in done], seeds, want_positive=want_positive)[0]
            at = ", ".join(sizes[i] for i in done)
            budget = f"at the sizes whose runs all converged ({at} images) it reads {partial}; {budget}"
        notes = "; ".join(x for x in (note if seeds < 2 else "", budget) if x)
        out.append((v, claim, figures + (f"; {notes}" if notes else "")))

    def cells(data, *conditions, at=None):
        return [[grid[data][n][c] for c in conditions] for n in (at or sizes)]

    gaps = [_diff(fashion[n]["none"], fashion[n]["crop+flip"], "gap") for n in sizes]
    add(
        gaps,
        "crops and flips narrow the gap between training and test accuracy (Fashion-MNIST, every size)",
        _per_size(sizes, gaps, " images", " points"),
        cells("fashion-mnist", "none", "crop+flip"),
    )
    gains = [_diff(fashion[n]["crop+flip"], fashion[n]["none"], "test_acc") for n in sizes]
    add(
        gains,
        "crops and flips raise test accuracy (Fashion-MNIST, every size)",
        _per_size(sizes, gains, " images", " points"),
        cells("fashion-mnist", "none", "crop+flip"),
    )
    (g_small, s_small), (g_large, s_large) = gains[0], gains[-1]
    largest = [(g_small - g_large, max(s_small, s_large))]
    word = spread_verdict(largest, seeds)[0]
    if word == "Held" and g_small <= s_small:  # "largest" of losses is no gain
        word = "Did not hold" if g_small < -s_small else "Inconclusive"
    add(
        largest,
        "the gain in test accuracy is largest, and positive, with the least data",
        f"{g_small:+.1f} points at {sizes[0]} images, {g_large:+.1f} at {sizes[-1]}",
        cells("fashion-mnist", "none", "crop+flip", at=[sizes[0], sizes[-1]]),
        verdict=word,
    )
    flip_fashion = [_diff(fashion[n]["crop+flip"], fashion[n]["crop"], "test_acc") for n in sizes]
    flip_mnist = [_diff(mnist[n]["crop+flip"], mnist[n]["crop"], "test_acc") for n in sizes]
    add(
        flip_mnist,
        "flips stop helping on digits: adding them to crops lowers MNIST test accuracy",
        "flip's effect on MNIST: "
        + _per_size(sizes, flip_mnist)
        + "; on Fashion-MNIST: "
        + _per_size(sizes, flip_fashion),
        cells("mnist", "crop", "crop+flip"),
        want_positive=False,
    )
    extra = [_diff(fashion[n]["crop+flip+affine"], fashion[n]["crop+flip"], "test_acc") for n in sizes]
    add(
        extra,
        f"other manipulations on top help further (AlexNet: PCA lighting, over {PAPER_LIGHTING_GAIN:.0f}% "
        "top-1 on ImageNet; here: small affine distortions)",
        _per_size(sizes, extra),
        cells("fashion-mnist", "crop+flip", "crop+flip+affine"),
    )
    return out


def _plots(results: dict, out: Path) -> list[str]:
    plt = pyplot()
    names = []
    for data, cells_by_size in results["grid"].items():
        sizes = [int(n) for n in cells_by_size]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
        for c in DATASETS[data]:
            acc = [_m(cells_by_size[str(n)][c], "test_acc") for n in sizes]
            gap = [_m(cells_by_size[str(n)][c], "gap") for n in sizes]
            axes[0].errorbar(
                sizes, [m for m, _ in acc], yerr=[s for _, s in acc], marker="o", capsize=3, label=c
            )
            axes[1].errorbar(
                sizes, [m for m, _ in gap], yerr=[s for _, s in gap], marker="o", capsize=3, label=c
            )
        axes[0].set_ylabel("test accuracy (%)")
        axes[1].set_ylabel("train accuracy - test accuracy (points)")
        axes[0].set_title("test accuracy")
        axes[1].set_title("generalisation gap")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xticks(sizes, [f"{n:,}" for n in sizes])  # the sizes run, not log ticks that overlap
            ax.minorticks_off()
            ax.set_xlabel("training images (log scale)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.suptitle(f"{MODEL} on {data}: augmentation on and off (mean ± std over seeds)", fontsize=10)
        name = f"{data}.png"
        save_figure(fig, out / name)
        names.append(name)
    return names


def _loss_plot(results: dict, out: Path) -> None:
    panels = {
        f"{data}, {int(n):,} images": {
            c: [r.get("train_loss_curve") or [math.nan] for r in cell] for c, cell in cells.items()
        }
        for data, by_size in results["grid"].items()
        for n, cells in by_size.items()
    }
    loss_figure(panels, out / "loss.png", f"{MODEL}: training loss per epoch")


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    p = results["preset_config"]
    epochs = ", ".join(f"{n} images: {epochs_for(n, _preset(p))} epochs" for n in p["sizes"])
    lines = md.document(
        "Augmentation: when crops and flips help, and when they stop",
        provenance_lines(results),
        f"Model `{MODEL}`; {p.get('optimizer', 'sgd')}, one-cycle lr {p['lr']}, batch {p['batch_size']}, weight "
        f"decay {p.get('weight_decay', 5e-4)}. Each run takes at least {p['min_seen']:,} training images "
        f"({epochs}). Training accuracy is measured after training, in eval mode, on the run's own training images "
        "without augmentation; the gap is training minus test accuracy. Augmentations: "
        + ", ".join(f"**{k}** (`{v}`)" for k, v in results["conditions"].items())
        + ".",
        *(_grid_section(results, data) for data in results["grid"]),
        md.section(
            "Which claims held here",
            md.verdicts(claims(results)),
            "A verdict needs every difference beyond the larger standard deviation over seeds; otherwise it is "
            "inconclusive. It is read only from runs that converged: "
            + PLATEAU.describe()
            + "; a claim resting on a run still learning is **Budget-bound**, with the command of a budget that "
            "can answer. Raw numbers, every run: [results.json](results.json).",
        ),
        md.section(
            "Did the runs converge?",
            "Training loss per epoch of every run (on the augmented images the run trained on), one panel per "
            "dataset and training-set size; the table's *converged* column counts the runs that pass the "
            "criterion above.",
            md.figure("loss.png"),
        ),
    )
    _plots(results, out)
    _loss_plot(results, out)
    return write_readme(out, lines)


def _grid_section(results: dict, data: str) -> list[str]:
    """One dataset's grid: accuracies and gap per training-set size and augmentation."""
    rows = []
    for n, cells in results["grid"][data].items():
        for c in DATASETS[data]:
            (ta, ts), (tr, _), (g, gs) = (
                _m(cells[c], "test_acc"),
                _m(cells[c], "train_acc"),
                _m(cells[c], "gap"),
            )
            seconds = _m(cells[c], "seconds")[0]
            checks = _converged([cells[c]])
            fall = [ch["improvement"] for ch in checks if ch["improvement"] is not None]
            converged = f"{sum(ch['converged'] for ch in checks)}/{len(checks)}" + (
                f" ({100 * max(fall):.1f}%)" if fall else " (no curve)"
            )
            rows.append(
                [
                    n,
                    c,
                    cells[c][0]["epochs"],
                    f"{tr:.1f}",
                    f"{ta:.2f} ± {ts:.2f}",
                    f"{g:.1f} ± {gs:.1f}",
                    converged,
                    f"{seconds:.0f} s",
                ]
            )
    return md.section(
        f"{data} ({results[f'test_images_{data}']:,} test images)",
        md.table(
            [
                "train images",
                "augmentation",
                "epochs",
                "train acc %",
                "test acc %",
                "gap (points)",
                "converged (largest share of the loss fall in the last window)",
                "time per run",
            ],
            rows,
        ),
        md.figure(f"{data}.png"),
    )


def _preset(d: dict) -> Preset:
    known = {f for f in Preset.__dataclass_fields__}
    return Preset(**{k: (tuple(v) if k == "sizes" else v) for k, v in d.items() if k in known})


def finding(results: dict) -> tuple[str, str]:
    c = claims(results)
    verdicts = [v for v, *_ in c]
    counts = ", ".join(
        f"{verdicts.count(v)} {v.lower()}"
        for v in ("Held", "Did not hold", "Inconclusive", "Budget-bound")
        if v in verdicts
    )
    return f"{counts} (of {len(c)})", "; ".join(f"{v}: {claim}" for v, claim, _ in c)


run_augmentation_study = study_runner(
    NAME, PRESETS, _measure, write_report, default_out="reports/augmentation"
)

register_study(
    Study(
        name=NAME,
        summary="AlexNet-style augmentation on/off at several training-set sizes: the train-test gap; flips on digits",
        run=run_augmentation_study,
        report=rewrite_report,
        default_out="reports/augmentation",
        finding=finding,
        presets=tuple(PRESETS),
    )
)
