"""`cnnzoo study lenet`: LeNet-5, the lecture's and the 1998 one, on MNIST, against the paper.

Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11), 1998.

1. Parameters per layer of both networks, from the models themselves, beside the lecture's table and the
   paper's counts; the differences (C3's connection table, trainable subsampling, the RBF output) are
   computed from the modules and must add up to the difference of the totals.
2. Why C1's output is 28x28: the summary's shapes and the kernel size.
3. Test error of each network (and of the lecture's with distortions) over several seeds, beside the
   paper's 0.95% (0.8% with distortions).
4. The most confused test digits of the seed-0 lecture network, and what it learned: C1's filters, every
   layer's feature maps for one digit, Grad-CAM and saliency (`cnnzoo.explain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data import load_dataset
from ..data.base import Splits
from ..engine.config import default_config
from ..layers.partial_conv import C3_TABLE
from ..models import count_params, create_model
from ..models._base import group_of
from ..summary import summarize
from . import _md as md
from ._common import (
    BUDGET_BOUND,
    PLATEAU,
    StudyRun,
    budget_verdict,
    fit_quiet,
    load_results,
    mean_std,
    pm,
    provenance_lines,
    pyplot,
    rerun_hint,
    save_figure,
    study_runner,
    subset_index,
    write_readme,
)
from ._pictures import batch_of, plot_digit_grid, plot_feature_maps, plot_filters, plot_heatmaps
from ._registry import Study, register_study

__all__ = ["run_lenet_study", "rewrite_report", "PRESETS", "parameter_table"]

NAME = "lenet"
# Published figures (constants, with their source):
PAPER_TEST_ERROR = 0.95  # % MNIST test error of LeNet-5, no distortions: LeCun et al. 1998, sec. III
PAPER_TEST_ERROR_DISTORTED = (
    0.8  # % the same, trained with artificial distortions: LeCun et al. 1998, sec. III
)
PAPER_EPOCHS = 20  # passes over the training set behind those figures: LeCun et al. 1998, sec. III
PAPER_TRAINABLE = 60_000  # "LeNet-5 ... contains 60,000 trainable parameters": LeCun et al. 1998, sec. II.B
PAPER_LAYERS = {"C1": 156, "S2": 12, "C3": 1_516, "S4": 32, "C5": 48_120, "F6": 10_164}  # ibid., sec. II.B
# The course's LeNet-5 parameter table (the lecture's network: max-pooling without parameters, fc output)
LECTURE_LAYERS = {"C1": 156, "C3": 2_416, "C5": 48_120, "F6": 10_164, "output": 850}
LECTURE_TOTAL = 61_706

# group_matcher() names -> the paper's layer names
PAPER_NAMES = {
    "conv1": "C1", "conv2": "C3", "fc1": "C5", "fc2": "F6", "head": "output",
    "c1": "C1", "s2": "S2", "c3": "C3", "s4": "S4", "c5": "C5", "f6": "F6",
}  # fmt: skip
LAYER_ORDER = ("C1", "S2", "C3", "S4", "C5", "F6", "output")


@dataclass(frozen=True)
class Preset:
    seeds: int
    epochs: int
    train_subset: int  # training images per run (0 = all 60,000)
    test_subset: int  # test images (0 = all 10,000)
    distortions: bool  # also train the lecture's net with affine distortions (LeCun's 0.8% row)
    short: bool  # a budget too short for lenet5's recipe: train it with BUDGET_RECIPE's rate and batch


PRESETS = {
    # all of MNIST for the recipe's own 4 epochs (lenet5: 99.2% in ~12 s of this CPU), so the comparison with
    # the paper's 0.95% is of full training runs, only shorter than the paper's 20 passes
    "full": Preset(seeds=3, epochs=4, train_subset=0, test_subset=0, distortions=True, short=False),
    "quick": Preset(seeds=1, epochs=2, train_subset=6_000, test_subset=0, distortions=False, short=True),
    "tiny": Preset(seeds=1, epochs=1, train_subset=400, test_subset=300, distortions=False, short=True),
    # the paper's 20 passes over all of MNIST: what a "not reached" after 4 epochs needs to be answered
    "long": Preset(seeds=3, epochs=20, train_subset=0, test_subset=0, distortions=True, short=False),
}
# The lecture net's default MNIST recipe (`engine/config.py`) is tuned for a few epochs of all 60,000 images;
# in a short budget of a few thousand images (the quick and tiny presets) it takes too few steps, and at
# 12,000 images x 3 epochs the recipe of the time (lr 0.2, batch 256, unclipped) left 2 of 3 seeds stuck at
# 88.6% error. So short presets train it at a gentler rate and a smaller batch (more steps); the recipe's
# other fields (clipping, label smoothing, weight decay) apply as they are, and the report's table names
# them. lenet5_1998 keeps its own recipe (AdamW) in every preset.
BUDGET_RECIPE = {"lenet5": dict(lr=0.05, batch_size=128)}
RUNS = (  # (key, model, augmentation or None for the recipe's)
    ("lenet5", "lenet5", None),
    ("lenet5_1998", "lenet5_1998", None),
    ("lenet5+distortions", "lenet5", "affine"),
)


# --- parameters and shapes ----------------------------------------------------------------------------


def _per_layer(name: str) -> dict[str, int]:
    """Trainable parameters per paper layer name, from the model's own groups."""
    model = create_model(name, num_classes=10, in_chans=1)
    groups = model.group_matcher()
    counts: dict[str, int] = {}
    for pname, p in model.named_parameters():
        if p.requires_grad:
            layer = PAPER_NAMES[group_of(pname, groups)]
            counts[layer] = counts.get(layer, 0) + p.numel()
    counts.setdefault("output", 0)
    return counts


def parameter_table() -> dict:
    """Both networks' parameters per layer, and the differences explained by the modules themselves."""
    lecture, paper = _per_layer("lenet5"), _per_layer("lenet5_1998")
    m98 = create_model("lenet5_1998", num_classes=10, in_chans=1)
    connections = sum(len(ins) for ins in C3_TABLE)  # S2 maps read, summed over C3's 16 maps
    k = 5 * 5
    differences = {
        "C3": {
            "delta": paper["C3"] - lecture["C3"],
            "why": f"C3's connection table: its 16 maps read {connections} of the 16 x 6 = 96 (map, S2 map) "
            f"pairs, so {96 - connections} x {k} = {(96 - connections) * k} fewer weights",
        },
        "S2+S4": {
            "delta": paper.get("S2", 0) + paper.get("S4", 0),
            "why": "trainable subsampling: one coefficient and one bias per map (6 + 16 maps, x 2); "
            "max-pooling has no parameters",
        },
        "output": {
            "delta": paper["output"] - lecture["output"],
            "why": f"the RBF output's {m98.output.prototypes.numel()} prototype values are fixed, not "
            "trained; the lecture's output is a trained 84 -> 10 fully connected layer",
        },
    }
    return {
        "lecture": lecture,
        "paper_model": paper,
        "lecture_total": count_params(create_model("lenet5", num_classes=10, in_chans=1)),
        "paper_total": count_params(m98, trainable_only=True),
        "differences": differences,
        "c3_connections": connections,
    }


def first_output() -> dict:
    """Why C1's output is 28x28, from the summary's shapes (and C5's receptive field in the 1998 net)."""
    rows = {r.name: r for r in summarize(create_model("lenet5"), (1, 28, 28)).rows}
    conv = create_model("lenet5").features[1]
    rows98 = summarize(create_model("lenet5_1998"), (1, 28, 28)).rows
    c5 = [r for r in rows98 if r.type == "Conv2d"][-1]
    return {
        "input": 28,
        "padded": rows["features.0"].output_shape[-1],
        "kernel": conv.kernel_size[0],
        "c1": list(rows["features.1"].output_shape),
        "c5_receptive_field": c5.receptive_field[0] if isinstance(c5.receptive_field, tuple) else None,
    }


# --- training -----------------------------------------------------------------------------------------


def recipe(model_name: str, augment: str | None, preset: Preset, *, seed: int = 0, device: str = "auto"):
    """The TrainConfig a run trains with: `cnnzoo train MODEL --data mnist`'s, at the preset's length."""
    overrides = dict(epochs=preset.epochs, seed=seed, device=device, eval_every=1)
    if preset.short:
        overrides.update(BUDGET_RECIPE.get(model_name, {}))
    if augment is not None:
        overrides["augment"] = augment
    return default_config(model_name, "mnist", **overrides)


def _train_one(model_name: str, augment: str | None, splits: Splits, preset: Preset, seed: int, device: str):
    cfg = recipe(model_name, augment, preset, seed=seed, device=device)
    idx = subset_index(len(splits.train), preset.train_subset, seed)
    data = Splits(splits.train.subset(idx), splits.test)
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=10, in_chans=1)
    fit = fit_quiet(model, data, cfg, image_size=28, label=f"{model_name}-{cfg.augment}-seed{seed}")
    return fit, cfg


@torch.no_grad()
def _confusions(model, test, test_index, top: int = 24) -> dict:
    """The test digits the network gets wrong most confidently, and the most frequent confused pairs."""
    model.eval()
    x = batch_of(test, 28)
    probs = torch.cat([model(x[i : i + 1000]).float().softmax(1) for i in range(0, len(x), 1000)])
    pred = probs.argmax(1)
    wrong = (pred != test.labels).nonzero().flatten()
    conf = probs[wrong, pred[wrong]]
    order = wrong[conf.argsort(descending=True)][:top]
    pairs: dict[str, int] = {}
    for t, p in zip(test.labels[wrong].tolist(), pred[wrong].tolist(), strict=True):
        pairs[f"{t}->{p}"] = pairs.get(f"{t}->{p}", 0) + 1
    return {
        "digits": [
            {
                "index": int(test_index[i]),
                "true": int(test.labels[i]),
                "pred": int(pred[i]),
                "p": float(probs[i, pred[i]]),
            }
            for i in order.tolist()
        ],
        "pairs": sorted(pairs.items(), key=lambda kv: -kv[1])[:8],
        "errors": len(wrong),
        "images": len(test),
    }


def _measure(run: StudyRun, out: Path, device: str) -> None:
    """Both LeNet-5s' parameter tables and first output, then each run (lecture, 1998, distortions) on an
    MNIST subset per seed; seed 0's lecture net is kept for the confusions and the pictures."""
    p, seeds, results = run.preset, run.seeds, run.results
    results["parameters"] = parameter_table()
    results["first_output"] = first_output()
    splits = load_dataset("mnist")
    test_index = subset_index(len(splits.test), p.test_subset, 0)
    splits = Splits(splits.train, splits.test.subset(test_index))
    results["test_images"] = len(splits.test)
    runs = {}
    for key, model_name, augment in RUNS:
        if augment is not None and not p.distortions:
            continue
        per_seed = []
        for seed in range(seeds):
            fit, cfg = _train_one(model_name, augment, splits, p, seed, device)
            per_seed.append(
                {
                    "seed": seed,
                    "test_error": 100 - fit.final_acc,
                    "curve": [100 - r["test_acc"] for r in fit.history],
                    "train_error_curve": [100 - r["train_acc"] for r in fit.history],
                    "seconds": fit.seconds,
                }
            )
            if key == "lenet5" and seed == 0:
                results["confusions"] = _confusions(fit.model, splits.test, test_index.tolist())
                save_file(
                    {k: v.contiguous() for k, v in fit.model.state_dict().items()},
                    out / "lenet5-seed0.safetensors",
                )
        runs[key] = {"model": model_name, "config": cfg.to_dict(), "seeds": per_seed}
    results["runs"] = runs


def rewrite_report(out: str | Path = "reports/lenet") -> Path:
    return write_report(load_results(out, NAME), Path(out))


# --- the report ---------------------------------------------------------------------------------------


def _plots(results: dict, out: Path) -> list[str]:
    _plot_test_error(results, out / "test_error.png")
    _plot_parameters(results["parameters"], out / "parameters.png")
    return ["test_error.png", "parameters.png"]


def _plot_test_error(results: dict, path: Path) -> None:
    """Each run's test error per epoch (mean ± std over seeds) against the paper's two figures."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, run in results["runs"].items():
        curves = [s["curve"] for s in run["seeds"]]
        epochs = range(1, len(curves[0]) + 1)
        means = [mean_std(c[e - 1] for c in curves) for e in epochs]
        ax.errorbar(
            list(epochs), [m for m, _ in means], yerr=[s for _, s in means], marker="o", capsize=3, label=key
        )
    ax.axhline(PAPER_TEST_ERROR, color="k", ls="--", lw=1, label=f"paper, LeNet-5 ({PAPER_TEST_ERROR}%)")
    ax.axhline(
        PAPER_TEST_ERROR_DISTORTED,
        color="gray",
        ls=":",
        lw=1,
        label=f"paper, distortions ({PAPER_TEST_ERROR_DISTORTED}%)",
    )
    from matplotlib.ticker import FormatStrFormatter

    ax.set_yscale("log")
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))  # 0.6, 1, 2 rather than 6 x 10^-1
    ax.set_xticks(list(epochs))
    ax.set_xlabel("epoch")
    ax.set_ylabel("MNIST test error (%, log scale)")
    ax.set_title("LeNet-5 on MNIST: test error per epoch\n(mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _plot_parameters(table: dict, path: Path) -> None:
    """Trainable parameters per layer, the lecture's lenet5 beside the paper's lenet5_1998."""
    fig, ax = pyplot().subplots(figsize=(6, 3.5), dpi=100)
    layers = [n for n in LAYER_ORDER if n in table["lecture"] or n in table["paper_model"]]
    xs = range(len(layers))
    ax.bar(
        [x - 0.2 for x in xs],
        [table["lecture"].get(n, 0) for n in layers],
        0.4,
        label=f"lenet5 (lecture), {table['lecture_total']:,}",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [table["paper_model"].get(n, 0) for n in layers],
        0.4,
        label=f"lenet5_1998 (paper), {table['paper_total']:,}",
    )
    ax.set_xticks(list(xs), layers)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(
        0, 3 * max(max(table["lecture"].values()), max(table["paper_model"].values()))
    )  # C5's bar whole
    ax.set_xlabel("layer")
    ax.set_ylabel("trainable parameters (symlog scale)")
    ax.set_title("Where LeNet-5's parameters are")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)


def _pictures(results: dict, out: Path) -> list[str]:
    """Most confused digits; filters, feature maps, Grad-CAM of the saved seed-0 network (if saved)."""
    test = load_dataset("mnist").test
    made = []
    conf = results.get("confusions")
    if conf and conf["digits"]:
        images = [test.images[d["index"], 0].numpy() for d in conf["digits"]]
        captions = [f"true {d['true']}, said {d['pred']}\np = {d['p']:.2f}" for d in conf["digits"]]
        title = (
            f"The {len(images)} test digits the seed-0 lenet5 gets wrong most confidently "
            f"({conf['errors']} errors in {conf['images']:,} test images)"
        )
        plot_digit_grid(images, captions, out / "confused.png", title)
        made.append("confused.png")
    weights = out / "lenet5-seed0.safetensors"
    if not weights.exists():
        return made
    model = create_model("lenet5", num_classes=10, in_chans=1)
    model.load_state_dict(load_file(weights))
    model.eval()
    plot_filters(model, out / "filters.png", "lenet5 C1 filters after training (seed 0)")
    pick = torch.tensor(
        [(test.labels == d).nonzero()[0, 0].item() for d in range(10)]
    )  # the first of each digit
    x = batch_of(test.subset(pick), 28)
    plot_feature_maps(
        model,
        x,
        test.images[pick[0], 0].numpy(),
        out / "feature_maps.png",
        f"lenet5 feature maps of a test '{int(test.labels[pick[0]])}'",
    )
    plot_heatmaps(
        model,
        x,
        test.images[pick, 0].numpy(),
        [f"digit {d}" for d in range(10)],
        out / "gradcam.png",
        "lenet5: where the evidence is",
    )
    return made + ["filters.png", "feature_maps.png", "gradcam.png"]


def verdicts(results: dict) -> list[tuple[str, str, str]]:
    """(claim, verdict, figures) for each published error rate we have a run for: Held where our error is
    at most the paper's (reached, converged or not); otherwise Did not hold only where every seed's run had
    converged (`PLATEAU`, on its training error per epoch: these runs record no loss), else Budget-bound,
    with the command and time of the paper's 20 passes (the `long` preset)."""
    out = []
    epochs = results["preset_config"]["epochs"]
    for key, run in results["runs"].items():
        paper = PAPER_TEST_ERROR_DISTORTED if "distortions" in key else PAPER_TEST_ERROR
        m, s = mean_std(e["test_error"] for e in run["seeds"])
        claim = f"`{key}` reaches the paper's {paper}% test error"
        figures = f"ours {m:.2f} ± {s:.2f}% over {len(run['seeds'])} seed(s)"
        if m <= paper:
            out.append((claim, "Held", figures))
            continue
        checks = [PLATEAU.check(e.get("train_error_curve", [])) for e in run["seeds"]]
        hint = rerun_hint(NAME, results, "long", PAPER_EPOCHS / max(1, epochs))
        verdict, note = budget_verdict("Did not hold", checks, hint)
        out.append((claim, verdict, f"{figures}{'; ' + note if note else ''}"))
    return out


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    p = results["preset_config"]
    short = (
        ", with a gentler rate and smaller batch for `lenet5` in this short budget"
        if p.get("short", True)
        else ""
    )
    head = md.document(
        "LeNet-5 on MNIST, measured against LeCun et al. 1998",
        provenance_lines(results),
        f"Budget: {p['train_subset'] or 60_000:,} training images per run, {p['epochs']} epoch(s), each network's "
        "recipe (`cnnzoo.engine.default_config`, what `cnnzoo train MODEL --data mnist` uses"
        f"{short}; see the table and `config` in results.json); test on {results['test_images']:,} MNIST test "
        f"images. The paper trained on all 60,000 images for {PAPER_EPOCHS} passes, so our errors are upper "
        "bounds of what the networks reach.",
        _parameters_section(results["parameters"]),
        _first_output_section(results["first_output"]),
        _test_error_section(results),
    )
    _plots(results, out)
    pictures = _pictures(results, out)
    lines = md.join(
        head,
        _confused_section(results["confusions"]) if results.get("confusions") else [],
        _learned_section() if "filters.png" in pictures else [],
        "Raw numbers, every run and epoch: [results.json](results.json).",
    )
    return write_readme(out, lines)


def _parameters_section(table: dict) -> list[str]:
    """The lecture's and the paper's counts per layer, and the differences between the two explained."""

    def count(counts: dict, layer: str, missing: str = "-") -> str:
        return f"{counts[layer]:,}" if layer in counts else missing

    rows = [
        [
            layer,
            count(table["lecture"], layer),
            count(LECTURE_LAYERS, layer),
            count(table["paper_model"], layer),
            count(PAPER_LAYERS, layer, "0 (fixed RBF)" if layer == "output" else "-"),
        ]
        for layer in LAYER_ORDER
    ]
    lecture, paper = table["lecture_total"], table["paper_total"]
    rows.append(
        ["**total**", f"**{lecture:,}**", f"{LECTURE_TOTAL:,}", f"**{paper:,}**", f"{PAPER_TRAINABLE:,}"]
    )
    delta_sum = sum(d["delta"] for d in table["differences"].values())
    match = "exactly" if delta_sum == paper - lecture else "NOT"
    cited = "yes" if lecture == LECTURE_TOTAL and paper == PAPER_TRAINABLE else "NO"
    return md.section(
        "Parameters: the lecture's table, the paper, and where they differ",
        md.table(
            ["layer", "lenet5 (counted)", "lecture's table", "lenet5_1998 (counted)", "paper (sec. II.B)"],
            rows,
        ),
        "Where the two differ (computed from the modules):",
        md.bullets(f"**{layer}** {d['delta']:+,}: {d['why']}." for layer, d in table["differences"].items()),
        f"The differences add up to {delta_sum:+,} = {paper:,} - {lecture:,} ({match} the difference of the "
        f"totals). Both counts match the cited ones: {cited}.",
        md.figure("parameters.png"),
    )


def _first_output_section(fo: dict) -> list[str]:
    return md.section(
        "Why C1's output is 28x28",
        f"An MNIST digit is {fo['input']}x{fo['input']}; LeNet-5 zero-pads it to {fo['padded']}x{fo['padded']} "
        f"(the paper's input size) and C1 is a {fo['kernel']}x{fo['kernel']} convolution without padding, so it "
        f"has {fo['padded']} - {fo['kernel']} + 1 = {fo['padded'] - fo['kernel'] + 1} positions per side: "
        f"output {'x'.join(str(v) for v in fo['c1'])} (channels x height x width, from `cnnzoo summary lenet5`). "
        f"The paper pads so that stroke ends and corners near the border still fall in the centre of the top "
        f"feature detectors' receptive fields: C5's receptive field is {fo['c5_receptive_field']} pixels, the "
        "whole padded input.",
    )


def _recipe_cell(cfg: dict) -> str:
    """A run's recipe in words: optimiser, rate, batch, augmentation and the extras it had on."""
    return (
        f"{cfg['optimizer']} lr {cfg['lr']:g}, batch {cfg['batch_size']}, augment {cfg['augment']}"
        + (f", gradient norm clipped at {cfg['grad_clip']:g}" if cfg.get("grad_clip") else "")
        + (f", label smoothing {cfg['label_smoothing']:g}" if cfg.get("label_smoothing") else "")
        + (f", weights averaged (ema {cfg['ema']:g})" if cfg.get("ema") else "")
    )


def _test_error_section(results: dict) -> list[str]:
    rows = []
    for key, run in results["runs"].items():
        errs = [s["test_error"] for s in run["seeds"]]
        paper = PAPER_TEST_ERROR_DISTORTED if "distortions" in key else PAPER_TEST_ERROR
        rows.append(
            [
                f"`{key}`",
                _recipe_cell(run["config"]),
                pm(errs),
                ", ".join(f"{e:.2f}" for e in errs),
                f"{paper}%",
                f"{mean_std(s['seconds'] for s in run['seeds'])[0]:.0f} s",
            ]
        )
    return md.section(
        "Test error",
        md.table(["run", "recipe", "test error % (mean ± std)", "per seed", "paper", "time per run"], rows),
        md.bullets(
            f"**{verdict}**: {claim} ({figures}; the paper trained {PAPER_EPOCHS} epochs on all 60,000 images)."
            for claim, verdict, figures in verdicts(results)
        ),
        md.figure("test_error.png", "test error"),
    )


def _confused_section(conf: dict) -> list[str]:
    return md.section(
        "The most confused test digits (seed-0 lenet5)",
        md.table(["true -> predicted", "test images"], [[k, v] for k, v in conf["pairs"]]),
        md.figure("confused.png"),
    )


def _learned_section() -> list[str]:
    return md.section(
        "What the layers learned (seed-0 lenet5, `cnnzoo.explain`)",
        "C1's six 5x5 filters (mid-gray is 0), every conv and pool layer's maps for one test digit, and for one "
        "digit of each class the Grad-CAM map at the last conv stage and the gradient saliency.",
        md.figure("filters.png"),
        md.figure("feature_maps.png", "feature maps"),
        md.figure("gradcam.png", "Grad-CAM"),
    )


def finding(results: dict) -> tuple[str, str]:
    """The index's line: the counts, and the test errors against the paper's."""
    t, p = results["parameters"], results["preset_config"]
    counts = t["lecture_total"] == LECTURE_TOTAL and t["paper_total"] == PAPER_TRAINABLE
    errors = ", ".join(
        f"{k} {mean_std(s['test_error'] for s in r['seeds'])[0]:.2f}%" for k, r in results["runs"].items()
    )
    words = [v for _, v, _ in verdicts(results)]
    held = [v == "Held" for v in words]
    error = "held" if all(held) else "partly held" if any(held) else "not held"
    if BUDGET_BOUND in words:
        error += ", the rest budget-bound"
    verdict = ("counts held" if counts else "counts did not hold") + f"; error {error}"
    return verdict, (
        f"parameters {t['lecture_total']:,} (lecture) and {t['paper_total']:,} (1998), the differences explained by "
        f"C3's table, trainable subsampling and the fixed RBF; MNIST test error {errors} against the paper's "
        f"{PAPER_TEST_ERROR}% ({PAPER_TEST_ERROR_DISTORTED}% distorted), after {p['epochs']} epochs on "
        f"{p['train_subset'] or 60_000:,} images"
    )


run_lenet_study = study_runner(NAME, PRESETS, _measure, write_report, default_out="reports/lenet")

register_study(
    Study(
        name=NAME,
        summary="LeNet-5 (lecture and 1998) on MNIST: parameters per layer, test error vs the paper's 0.95%",
        run=run_lenet_study,
        report=rewrite_report,
        default_out="reports/lenet",
        finding=finding,
        presets=tuple(PRESETS),
    )
)
