"""`cnnzoo study architectures`: every registered model side by side, beside the published ImageNet figures.

Counted here: parameters (the registry's defaults: 1000 classes for the ImageNet networks), multiply-
accumulates per image at the native input size (`cnnzoo.summary`, on the meta device: shapes only, no
arithmetic, so VGG-19's 19.6 G MACs cost nothing), the minimum input side.
Measured on this CPU: forward and training images/s, read from the speed benchmark's JSON
(`bench/bench_models.py` -> `reports/architectures/speed.json`; `SPEED_COMMAND` makes it). Without that
file the study measures a rougher figure itself at a small size, and the report and the index say so,
with the command that makes the file.
Published (constants with their sources): the papers' ImageNet errors, and torchvision's acc@1/acc@5 and
GFLOPS for its weights of the same architectures. ImageNet accuracy cannot be measured here (no ImageNet,
no network), so it is cited, never claimed as ours.
Pictures: a few families trained briefly on MNIST, seen through `cnnzoo.explain` (first-layer filters,
feature maps, Grad-CAM, saliency).
"""

from __future__ import annotations

import fnmatch
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import load_dataset
from ..data.base import Splits
from ..models import count_params, create_model, list_models, model_info
from ..summary import summarize
from . import _md as md
from ._common import (
    StudyRun,
    fit_quiet,
    images_per_second,
    load_results,
    provenance_lines,
    pyplot,
    save_figure,
    save_results,
    study_runner,
    subset_index,
    train_config,
    write_readme,
)
from ._pictures import batch_of, plot_feature_maps, plot_filters, plot_heatmaps
from ._registry import Study, register_study

__all__ = ["run_architectures_study", "rewrite_report", "PRESETS", "TORCHVISION", "PUBLISHED", "spearman"]

NAME = "architectures"
SPEED_JSON = "speed.json"  # written into the report folder by bench/bench_models.py
# how the committed speed.json was made (1 thread: one core of the shared 2-core machine, the same for every model)
SPEED_COMMAND = "OMP_NUM_THREADS=1 python bench/bench_models.py --out reports/architectures/speed.json"

# torchvision's ImageNet-1K weights (IMAGENET1K_V1, the ones that reproduce the papers' recipes): acc@1, acc@5
# (%) and "GFLOPS" per image, from each weights enum's meta (`_metrics`, `_ops`) in torchvision/models/*.py.
TORCHVISION = {
    "alexnet": (56.522, 79.066, 0.714),
    "vgg11": (69.020, 88.628, 7.609),
    "vgg11_bn": (70.370, 89.810, 7.609),
    "vgg13": (69.928, 89.246, 11.308),
    "vgg13_bn": (71.586, 90.374, 11.308),
    "vgg16": (71.592, 90.382, 15.470),
    "vgg16_bn": (73.360, 91.516, 15.470),
    "vgg19": (72.376, 90.876, 19.632),
    "vgg19_bn": (74.218, 91.842, 19.632),
    "googlenet": (69.778, 89.530, 1.498),
    "inception_v3": (77.294, 93.450, 5.713),
    "resnet18": (69.758, 89.078, 1.814),
    "resnet34": (73.314, 91.420, 3.664),
    "resnet50": (76.130, 92.862, 4.089),
    "resnet101": (77.374, 93.546, 7.801),
    "resnet152": (78.312, 94.046, 11.514),
}
# The papers' own ImageNet figures: (model, what, top-5 error %, source).
PUBLISHED = [
    (
        "alexnet2012",
        "ILSVRC-2012 test, 7 CNNs (2 pre-trained on ImageNet Fall 2011)",
        15.3,
        "Krizhevsky et al. 2012, Table 2",
    ),
    (
        "alexnet2012",
        "ILSVRC-2012 test, the runner-up's entry (SIFT + Fisher vectors)",
        26.2,
        "Krizhevsky et al. 2012, Table 2",
    ),
    ("alexnet2012", "ILSVRC-2012 validation, 1 CNN", 18.2, "Krizhevsky et al. 2012, Table 2"),
    (
        "vgg16",
        "ILSVRC-2012 validation, single test scale (config D)",
        8.8,
        "Simonyan & Zisserman 2015, Table 3",
    ),
    ("googlenet", "ILSVRC-2014 test, 7 models, 144 crops", 6.67, "Szegedy et al. 2014, Table 2"),
    (
        "inception_v3",
        "ILSVRC-2012 validation, single crop (top-1 21.2%)",
        5.6,
        "Szegedy et al. 2015, abstract",
    ),
    ("resnet152", "ILSVRC-2012 validation, single model, 10 crops", 4.49, "He et al. 2016, Table 4"),
    ("resnet152", "ILSVRC-2015 test, ensemble", 3.57, "He et al. 2016, abstract"),
]


@dataclass(frozen=True)
class Preset:
    speed_models: str  # which models the study measures itself when there is no speed.json ("*" = all)
    speed_batch: int
    speed_repeats: int
    picture_models: tuple[str, ...]  # trained briefly on MNIST for the pictures
    picture_train: int  # training images
    picture_epochs: int


PRESETS = {
    "full": Preset(
        "*",
        speed_batch=4,
        speed_repeats=2,
        picture_models=("lenet5", "resnet20", "googlenet"),
        picture_train=3_000,
        picture_epochs=2,
    ),
    "quick": Preset(
        "*",
        speed_batch=2,
        speed_repeats=1,
        picture_models=("lenet5", "resnet20"),
        picture_train=1_000,
        picture_epochs=1,
    ),
    "tiny": Preset(
        "lenet5,resnet20",
        speed_batch=2,
        speed_repeats=1,
        picture_models=("lenet5",),
        picture_train=256,
        picture_epochs=1,
    ),
}


# --- counted ------------------------------------------------------------------------------------------


def counted(name: str) -> dict:
    """Parameters and MACs per image at the native size, from a model built on the meta device."""
    info = model_info(name)
    with torch.device("meta"):
        model = create_model(name)
        macs = summarize(model, (info.in_chans, info.input_size, info.input_size)).total_macs
        aux = getattr(model, "aux_logits", False)
        without_aux = count_params(create_model(name, aux_logits=False)) if aux else None
    return {
        "family": info.family,
        "params": count_params(model),
        "params_without_aux": without_aux,  # the auxiliary classifiers run only in training
        "macs": macs,
        "input": info.input_size,
        "min_input": info.min_size,
        "in_chans": info.in_chans,
        "paper": info.paper,
    }


# --- speed --------------------------------------------------------------------------------------------


def speed_from_json(path: Path) -> dict[str, dict] | None:
    """Per model, the benchmark's fp32 NCHW row at the native size where measured, else at its small size."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    out: dict[str, dict] = {}
    for row in data.get("results", []):
        if row.get("channels_last") or row.get("precision") not in ("fp32", "float32"):
            continue
        if "train_img_s" not in row or "forward_img_s" not in row:
            continue
        name = row["model"]
        if name in out and out[name]["size_kind"] == "native":
            continue
        out[name] = {
            "forward": row["forward_img_s"],
            "train": row["train_img_s"],
            "size": row["input"][-1],
            "batch": row["batch"],
            "size_kind": row["size_kind"],
        }
    meta = data.get("meta", {})
    threads = meta.get("threads")
    return {
        "source": f"bench/bench_models.py, fp32 NCHW, fastest of its calls ({meta.get('date', 'undated')}"
        + (f", {threads} thread{'s' if threads != 1 else ''}" if threads else "")
        + ")",
        "command": (f"OMP_NUM_THREADS={meta['omp_num_threads']} " if meta.get("omp_num_threads") else "")
        + meta.get("command", ""),
        "seconds": meta.get("seconds"),
        "models": out,
    }


def speed_measured(names: list[str], batch: int, repeats: int) -> dict:
    """Forward and training images/s of each model, fp32, measured here: at the native side for the small
    networks (LeNet, the CIFAR ResNets), at 32x32 or the minimum side for the ImageNet ones."""
    out = {}
    for name in names:
        info = model_info(name)
        side = info.input_size if info.input_size <= 32 else max(32, info.min_size)
        torch.manual_seed(0)
        model = create_model(name)
        x = torch.randn(batch, info.in_chans, side, side)
        fwd = images_per_second({name: model}, x, train=False, repeats=repeats)[name]
        trn = images_per_second({name: model}, x, train=True, repeats=repeats)[name]
        out[name] = {"forward": fwd, "train": trn, "size": side, "batch": batch, "size_kind": "small"}
        del model
    return {
        "source": f"measured by the study (fp32, batch {batch}, best of {repeats})",
        "missing": SPEED_JSON,  # the benchmark's file was not there: the report says how to make it
        "models": out,
    }


def _wanted(pattern: str) -> list[str]:
    pats = [p.strip() for p in pattern.split(",")]
    return [n for n in list_models() if any(fnmatch.fnmatch(n, p) for p in pats)]


# --- pictures -----------------------------------------------------------------------------------------


def pictures(out: Path, p: Preset, device: str) -> dict:
    """Train each picture model briefly on MNIST and draw what it computes; returns accuracies and files."""
    splits = load_dataset("mnist")
    train = splits.train.subset(subset_index(len(splits.train), p.picture_train, 0))
    test = splits.test.subset(subset_index(len(splits.test), 1_000, 0))
    pick = torch.tensor([(test.labels == d).nonzero()[0, 0].item() for d in range(0, 10, 2)])
    shown = test.subset(pick)
    made = {}
    for name in p.picture_models:
        side = 28 if name.startswith("lenet") else 32  # LeNet pads 28 to 32 itself
        cfg = train_config(
            model=name,
            data="mnist",
            epochs=p.picture_epochs,
            batch_size=64,
            lr=0.05,
            device=device,
            eval_every=p.picture_epochs,
        )
        torch.manual_seed(0)
        kwargs = {"aux_logits": False} if name == "googlenet" else {}
        model = create_model(name, num_classes=10, in_chans=1, **kwargs)
        fit = fit_quiet(model, Splits(train, test), cfg, image_size=side)
        model = fit.model.cpu().eval()
        x = batch_of(shown, side)
        images = torch.nn.functional.interpolate(shown.images.float(), size=(side, side), mode="bilinear")[
            :, 0
        ].numpy()
        files = [
            plot_filters(
                model,
                out / f"{name}_filters.png",
                f"{name}: first-layer filters after {p.picture_epochs} epoch(s) on MNIST",
            ).name,
            plot_feature_maps(
                model,
                x,
                images[0],
                out / f"{name}_feature_maps.png",
                f"{name}: feature maps of a test digit",
                max_layers=6,
            ).name,
            plot_heatmaps(
                model,
                x,
                images,
                [f"digit {int(d)}" for d in shown.labels],
                out / f"{name}_gradcam.png",
                f"{name}: where the evidence is",
            ).name,
        ]
        made[name] = {"test_acc": fit.final_acc, "image_size": side, "files": files}
    return {"train_images": len(train), "epochs": p.picture_epochs, "test_images": len(test), "models": made}


def _measure(run: StudyRun, out: Path, device: str) -> None:
    """Seeds do not apply (one brief training per picture model, seed 0)."""
    p, results = run.preset, run.results
    results["models"] = {name: counted(name) for name in list_models()}
    speed = speed_from_json(out / SPEED_JSON)
    if speed is None or not speed["models"]:
        print(
            f"{out / SPEED_JSON} is missing: measuring a rougher speed here; for the benchmark's, run "
            f"`{SPEED_COMMAND}`, then `cnnzoo study {NAME} --report-only`",
            file=sys.stderr,
        )
        speed = speed_measured(_wanted(p.speed_models), p.speed_batch, p.speed_repeats)
    results["speed"] = speed
    results["pictures"] = pictures(out, p, device)


def rewrite_report(out: str | Path = "reports/architectures") -> Path:
    """README and plots from results.json; the speed benchmark's JSON is re-read if it is there now."""
    out = Path(out)
    results = load_results(out, NAME)
    speed = speed_from_json(out / SPEED_JSON)
    if speed is not None and speed["models"]:
        results["speed"] = speed
        save_results(out, results)  # the index's line reads the speed source from results.json
    return write_report(results, out)


# --- the report ---------------------------------------------------------------------------------------


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (no ties expected among these figures)."""

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb, strict=True)) / (n * (n * n - 1))


def _inference_params(m: dict) -> int:
    """Parameters at inference: without the auxiliary heads (as torchvision's weights are published)."""
    return m.get("params_without_aux") or m["params"]


def _fmt_macs(m: int) -> str:
    return f"{m / 1e9:.2f} G" if m >= 1e8 else f"{m / 1e6:.2f} M"


def _plots(results: dict, out: Path) -> None:
    plt = pyplot()
    models = results["models"]
    names = [n for n in TORCHVISION if n in models]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100, sharey=True)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax, key, label in (
        (axes[0], "macs", "multiply-accumulates per image at the native input (G, log scale; ours)"),
        (axes[1], "params", "parameters at inference (millions, log scale; ours)"),
    ):
        for family in sorted({models[n]["family"] for n in names}):
            sel = [n for n in names if models[n]["family"] == family]
            xs = [
                (models[n]["macs"] / 1e9 if key == "macs" else _inference_params(models[n]) / 1e6)
                for n in sel
            ]
            ax.scatter(xs, [TORCHVISION[n][0] for n in sel], label=family, s=30)
            for n, x in zip(sel, xs, strict=True):
                ax.annotate(n, (x, TORCHVISION[n][0]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("ImageNet top-1 accuracy (%, torchvision's weights)")
    axes[0].set_title("accuracy against computation")
    axes[1].set_title("accuracy against parameters")
    fig.suptitle("Published accuracy (torchvision) against counted cost (cnnzoo.summary)", fontsize=10)
    save_figure(fig, out / "accuracy.png")

    speed = results["speed"]["models"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for family in sorted({m["family"] for m in models.values()}):
        sel = [n for n in speed if models[n]["family"] == family]
        if not sel:
            continue
        xs = [_macs_at(models[n], speed[n]["size"]) / 1e6 for n in sel]
        ax.scatter(xs, [speed[n]["train"] for n in sel], label=family, s=30)
        for n, x in zip(sel, xs, strict=True):
            ax.annotate(n, (x, speed[n]["train"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("forward MACs per image at the measured size (millions, log scale)")
    ax.set_ylabel("training images/s on this CPU (log scale)")
    source = textwrap.fill(results["speed"]["source"], 90)
    ax.set_title(f"Measured training speed\n{source}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, out / "speed.png")


def _macs_at(model: dict, side: int) -> float:
    """MACs at another input side, scaled by area from the native count (exact for these convnets up to
    rounding of the feature-map sides; used only to place points on the speed plot)."""
    return model["macs"] * (side / model["input"]) ** 2


def _speed_note(speed: dict, out: Path) -> list[str]:
    """Where the speed columns come from: the benchmark's command, or that its JSON is missing and how to make it."""
    if speed.get("missing"):
        return [
            f"**The speed benchmark's JSON is missing** (`{out / speed['missing']}` was not there when this ran), so "
            "the speed columns are the study's own rougher measurement (a few calls at batch "
            f"{next(iter(speed['models'].values()), {}).get('batch', '?')}). Make the file with `{SPEED_COMMAND}` "
            f"(a few minutes), then `cnnzoo study {NAME} --report-only` re-renders this report with it.",
            "",
        ]
    return [
        f"Speed columns: `{speed.get('command') or SPEED_COMMAND}`"
        + (f" ({speed['seconds'] / 60:.1f} min)" if speed.get("seconds") else "")
        + f" ([speed.json]({SPEED_JSON}): every model in "
        "fp32 and bf16, NCHW and channels-last, at 32 px and at its native size); shown here: fp32, NCHW, at the "
        "native size where the benchmark measured it (ImageNet models up to 5 G MACs, batch 2), else at 32 px or "
        "the minimum side (batch 16, fewer at larger sides); random images and labels, a training step is "
        "forward, cross-entropy, backward and SGD.",
        "",
    ]


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    lines = md.document(
        "Every architecture: cost, speed on this CPU, and the published accuracy",
        provenance_lines(results),
        "Ours: parameters (the registry's default head: 1000 classes for ImageNet models, 10 for LeNet and the "
        "CIFAR ResNets), MACs per image at the native input (`cnnzoo summary`), minimum input side, and speed on "
        f"this CPU. Speed source: **{results['speed']['source']}**. Published: torchvision's acc@1/acc@5 and "
        "GFLOPS for its ImageNet weights, and the papers' top-5 errors (cited, not measured here: there is no "
        "ImageNet on this machine).",
        _speed_note(results["speed"], out),
        _models_table(results),
        md.section(
            "The papers' ImageNet figures",
            md.table(
                ["model", "top-5 error %", "what", "source"],
                [[f"`{m}`", f"{e}", w, s] for m, w, e, s in PUBLISHED],
            ),
        ),
        _figures_section(results["models"]),
        _pictures_section(results.get("pictures", {}), out),
        "Raw numbers: [results.json](results.json).",
    )
    _plots(results, out)
    return write_readme(out, lines)


def _model_row(name: str, m: dict, s: dict | None) -> list:
    """One model's row: our counts, our speed (if measured) and torchvision's figures (if it has weights)."""
    tv = TORCHVISION.get(name)
    aux = f" ({m['params_without_aux']:,} without aux. heads)" if m.get("params_without_aux") else ""
    return [
        f"`{name}`",
        m["family"],
        f"{m['params']:,}{aux}",
        f"{_fmt_macs(m['macs'])} at {m['input']}",
        m["min_input"],
        f"{s['forward']:,.1f}" if s else "-",
        f"{s['train']:,.1f}" if s else "-",
        f"{s['size']} px, batch {s['batch']}" if s else "not measured",
        f"{tv[0]:.1f} / {tv[1]:.1f}" if tv else "-",
        f"{tv[2]:.3f} ({m['macs'] / 1e9 / tv[2]:.3f}x)" if tv else "-",
    ]


def _models_table(results: dict) -> list[str]:
    """Every model's row, and for how many our MACs equal torchvision's published GFLOPS."""
    models, speed = results["models"], results["speed"]["models"]
    rows = [_model_row(name, m, speed.get(name)) for name, m in models.items()]
    weighted = [n for n in TORCHVISION if n in models]
    agree = [n for n in weighted if abs(models[n]["macs"] / 1e9 / TORCHVISION[n][2] - 1) < 0.005]
    return md.join(
        md.table(
            [
                "model",
                "family",
                "parameters",
                "MACs/image",
                "min side",
                "forward img/s",
                "train img/s",
                "speed at",
                "torchvision acc@1 / acc@5 %",
                "torchvision GFLOPS (ours / theirs)",
            ],
            rows,
        ),
        f'Our MAC counts equal torchvision\'s published "GFLOPS" (which count multiply-accumulates) within 0.5% '
        f"for {len(agree)} of {len(weighted)} models.",
    )


def _figures_section(models: dict) -> list[str]:
    """What the published accuracy and our counts say together: rank correlations, size, efficiency."""
    names = [n for n in TORCHVISION if n in models]
    acc = [TORCHVISION[n][0] for n in names]
    rho_macs = spearman(acc, [models[n]["macs"] for n in names])
    rho_params = spearman(acc, [_inference_params(models[n]) for n in names])
    per_gmac = sorted(names, key=lambda n: -TORCHVISION[n][0] / (models[n]["macs"] / 1e9))
    most = max(names, key=lambda n: _inference_params(models[n]))
    best = max(names, key=lambda n: TORCHVISION[n][0])
    predicts = (
        "Computation predicts accuracy better than parameters do."
        if rho_macs > rho_params
        else "Parameters predict it at least as well as computation."
    )
    return md.section(
        "What the figures say",
        md.bullets(
            [
                "AlexNet's 15.3% top-5 against the runner-up's 26.2% in ILSVRC-2012: a "
                f"{26.2 - 15.3:.1f}-point margin (published).",
                f"Rank correlation of torchvision's top-1 accuracy with our MAC count: {rho_macs:.2f}; with the "
                f"parameter count at inference: {rho_params:.2f} ({len(names)} models with torchvision weights; "
                "GoogLeNet and Inception v3 without their auxiliary heads, as the weights are published). "
                + predicts,
                f"The most parameters, `{most}` ({_inference_params(models[most]) / 1e6:.0f} M), is "
                + ("also" if most == best else "not")
                + f" the most accurate: `{best}` ({TORCHVISION[best][0]:.1f}% with "
                f"{_inference_params(models[best]) / 1e6:.0f} M).",
                f"Accuracy per G MAC: best `{per_gmac[0]}`, `{per_gmac[1]}`, `{per_gmac[2]}`; worst "
                f"`{per_gmac[-1]}`.",
            ]
        ),
        md.figure("accuracy.png"),
        md.figure("speed.png"),
    )


def _pictures_section(pics: dict, out: Path) -> list[str]:
    """The trained networks' filters, feature maps and Grad-CAM, where the run made them (none otherwise)."""
    if not pics.get("models"):
        return []
    per_model = [
        md.join(
            f"**`{name}`** ({m['test_acc']:.1f}% on {pics['test_images']:,} MNIST test images, "
            f"{m['image_size']}x{m['image_size']} input)",
            [f"![{f}]({f})" for f in m["files"] if (out / f).exists()] + [""],
        )
        for name, m in pics["models"].items()
    ]
    return md.section(
        "What the layers learn",
        f"Each network trained from scratch on {pics['train_images']:,} MNIST images for {pics['epochs']} "
        "epoch(s) (seed 0), then seen through `cnnzoo.explain`: first-layer filters, feature maps of one test "
        "digit, and Grad-CAM at the last conv stage with gradient saliency. These pictures are made by the run "
        "(re-rendering the report keeps them).",
        *per_model,
    )


def finding(results: dict) -> tuple[str, str]:
    models = results["models"]
    names = [n for n in TORCHVISION if n in models]
    agree = sum(abs(models[n]["macs"] / 1e9 / TORCHVISION[n][2] - 1) < 0.005 for n in names)
    acc = [TORCHVISION[n][0] for n in names]
    rho_m = spearman(acc, [models[n]["macs"] for n in names])
    rho_p = spearman(acc, [_inference_params(models[n]) for n in names])
    return "counted and measured", (
        f"{len(models)} models; our MACs equal torchvision's GFLOPS for {agree} of {len(names)}; ImageNet top-1 "
        f"(torchvision) rank-correlates {rho_m:.2f} with MACs, {rho_p:.2f} with parameters; speed: {results['speed']['source']}"
        + (" (speed.json missing: see its report)" if results["speed"].get("missing") else "")
    )


run_architectures_study = study_runner(
    NAME, PRESETS, _measure, write_report, default_out="reports/architectures"
)

register_study(
    Study(
        name=NAME,
        summary="every model: parameters, MACs, minimum input, images/s on this CPU, published ImageNet figures",
        run=run_architectures_study,
        report=rewrite_report,
        default_out="reports/architectures",
        finding=finding,
        presets=tuple(PRESETS),
    )
)
