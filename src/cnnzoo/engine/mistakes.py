"""Pictures of the errors: the test images a model gets most wrong, the classes it mixes up, and how
precise and how complete each class's predictions are (`cnnzoo evaluate` writes and prints them).

- `error_report(metrics, classes)`: the numbers, ready for JSON: per-class precision and recall (%), the
  most-confused (true, predicted) class pairs with their counts, and the most-wrong images (highest loss
  first) with their index in the test split, true and predicted class, probability and loss. `metrics`
  is `evaluate_model(..., per_image=True)`'s.
- `write_error_pictures(...)`: `errors.png` (a gallery of the most-wrong images), `confused_pairs.png`
  (the most-confused pairs, each with its worst examples) and `per_class.png` (precision and recall).

Precision of a class: of the images predicted as it, the share that are it; recall: of its images, the
share predicted as it (the per-class accuracy).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .._io import describe_os_error
from ..artifacts.figure import SIZES, label_axes, new_figure, save_figure
from ..artifacts.source import Opened
from ..errors import CnnzooError

__all__ = [
    "precision_recall",
    "confused_pairs",
    "most_wrong",
    "error_report",
    "default_errors_dir",
    "write_error_pictures",
    "PICTURES",
]

PICTURES = ("errors.png", "confused_pairs.png", "per_class.png")


def precision_recall(confusion: list[list[int]]) -> tuple[list[float | None], list[float | None]]:
    """Per-class precision and recall in % (None for a class never predicted, or with no test image)."""
    c = np.asarray(confusion, dtype=np.float64)
    hits, predicted, actual = np.diag(c), c.sum(0), c.sum(1)
    precision = [100 * h / p if p else None for h, p in zip(hits, predicted, strict=True)]
    recall = [100 * h / a if a else None for h, a in zip(hits, actual, strict=True)]
    return [None if v is None else float(v) for v in precision], [
        None if v is None else float(v) for v in recall
    ]


def confused_pairs(confusion: list[list[int]], classes: list[str], top: int = 10) -> list[dict]:
    """The `top` off-diagonal cells with the most images: true class, predicted class, count, and the
    share of the true class's test images that went there (%)."""
    c = np.asarray(confusion, dtype=np.int64)
    off = c.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = []
    for flat in order:
        i, j = divmod(int(flat), len(c))
        if off[i, j] == 0:
            break
        pairs.append(
            {
                "true": str(classes[i]),
                "predicted": str(classes[j]),
                "count": int(off[i, j]),
                "share_of_true": 100.0 * off[i, j] / max(1, c[i].sum()),
            }
        )
    return pairs


def _wrong_order(per_image: dict) -> np.ndarray:
    """Indices of the misclassified images, highest loss first."""
    label, pred, loss = (per_image[k].numpy() for k in ("label", "pred", "loss"))
    wrong = np.flatnonzero(label != pred)
    return wrong[np.argsort(-loss[wrong], kind="stable")]


def most_wrong(per_image: dict, classes: list[str], top: int = 24) -> list[dict]:
    """The `top` misclassified test images with the highest loss: index in the test split, true and
    predicted class, the predicted class's probability, the true class's, and the loss (nats)."""
    out = []
    for i in _wrong_order(per_image)[:top]:
        out.append(
            {
                "index": int(i),
                "true": str(classes[int(per_image["label"][i])]),
                "predicted": str(classes[int(per_image["pred"][i])]),
                "probability": float(per_image["prob_pred"][i]),
                "true_probability": float(per_image["prob_true"][i]),
                "loss": float(per_image["loss"][i]),
            }
        )
    return out


def error_report(metrics: dict, classes: list[str], *, top_images: int = 24, top_pairs: int = 10) -> dict:
    """The numbers behind the pictures (JSON-ready); `metrics` from `evaluate_model(..., per_image=True)`."""
    precision, recall = precision_recall(metrics["confusion"])
    report = {
        "precision": precision,
        "recall": recall,
        "misclassified": int(metrics["images"] - np.trace(np.asarray(metrics["confusion"]))),
        "confused_pairs": confused_pairs(metrics["confusion"], classes, top_pairs),
    }
    if "per_image" in metrics:
        report["most_wrong"] = most_wrong(metrics["per_image"], classes, top_images)
    return report


def default_errors_dir(opened: Opened, data: str) -> Path | None:
    """Where `evaluate` puts the pictures unless told: `evaluation/` beside the checkpoint (in the run or
    export folder), `evaluation-DATA/` for data other than the source's own; None for bundled or
    downloaded weights (never into the installed package)."""
    kind, path = opened.spec.kind, opened.spec.path
    if kind in ("bundled", "torchvision"):
        return None
    folder = path if kind == "export" else opened.path.parent
    own = data == opened.meta.get("dataset")
    safe = data.replace(":", "_").replace("/", "_").replace("\\", "_")
    return folder / ("evaluation" if own else f"evaluation-{safe}")


# --- pictures ------------------------------------------------------------------------------------------


def _image(test, index: int) -> np.ndarray:
    """The index-th test image as stored, (H, W) or (H, W, 3) uint8."""
    t = test.images[index] if hasattr(test, "images") else test[index][0]
    a = t.numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def _short(name: str, width: int = 16) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _mosaic(images: list[np.ndarray], cols: int, *, above: float, below: float):
    """The images as one (H', W'[, 3]) uint8 picture on white, tiles in rows of `cols` with bands of
    `above` and `below` tile heights for text; returns it and each tile's (left, top) in its pixels.
    One picture in one Axes draws in a fraction of the time of an Axes per image."""
    h, w = images[0].shape[:2]
    gap, top, bottom = max(2, round(0.1 * w)), round(above * h), round(below * h)
    cell_h, cell_w = top + h + bottom, w + gap
    rows = math.ceil(len(images) / cols)
    canvas = np.full((rows * cell_h, cols * cell_w - gap, *images[0].shape[2:]), 255, dtype=np.uint8)
    corners = []
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        x, y = c * cell_w, r * cell_h + top
        canvas[y : y + h, x : x + w] = image
        corners.append((x, y))
    return canvas, corners


def _mosaic_axes(canvas: np.ndarray, width_in: float, extra_in: float):
    """(figure, axes) showing `canvas` at `width_in` inches wide, `extra_in` inches left for the title."""
    height_in = width_in * canvas.shape[0] / canvas.shape[1] + extra_in
    fig, ax = new_figure(width_in, height_in)
    ax.imshow(canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    return fig, ax


def plot_errors(report: dict, test, path: Path, *, name: str) -> Path:
    """A gallery of the most-wrong test images, each with its true and predicted class, probability, loss."""
    items = report["most_wrong"]
    cols = min(8, len(items))
    images = [_image(test, item["index"]) for item in items]
    canvas, corners = _mosaic(images, cols, above=0.55, below=0.1)
    fig, ax = _mosaic_axes(canvas, 1.7 * cols, 0.9)
    w = images[0].shape[1]
    for (x, y), item in zip(corners, items, strict=True):
        ax.text(
            x + w / 2,
            y - 0.04 * w,
            f"true {_short(item['true'])}\npred {_short(item['predicted'])} ({item['probability']:.0%})\n"
            f"loss {item['loss']:.2f}",
            ha="center",
            va="bottom",
            fontsize=SIZES["small"],
        )
    title = (
        f"{name}: the {len(items)} most-wrong of {report['misclassified']:,} misclassified test images\n"
        "(highest loss first; pred: the predicted class and its probability; loss in nats)"
    )
    return save_figure(fig, path, title=title)


def plot_confused_pairs(report: dict, per_image: dict, test, classes: list[str], path: Path, *, name: str):
    """The most-confused pairs, one row each: how many, and their worst examples (highest loss first)."""
    pairs = report["confused_pairs"][:6]
    cols = 8
    index = {str(c): i for i, c in enumerate(classes)}
    label, pred = per_image["label"].numpy(), per_image["pred"].numpy()
    order = _wrong_order(per_image)
    images, captions, heads = [], [], []
    blank = None
    for pair in pairs:
        t, p = index[pair["true"]], index[pair["predicted"]]
        examples = [int(i) for i in order if label[i] == t and pred[i] == p][:cols]
        heads.append(
            f"true {pair['true']} → predicted {pair['predicted']}: {pair['count']:,} images "
            f"({pair['share_of_true']:.1f}% of {pair['true']})"
        )
        for c in range(cols):
            if c < len(examples):
                images.append(_image(test, examples[c]))
                captions.append(f"p {float(per_image['prob_pred'][examples[c]]):.2f}")
            else:
                blank = np.full_like(images[0], 255) if blank is None else blank
                images.append(blank)
                captions.append("")
    canvas, corners = _mosaic(images, cols, above=0.4, below=0.3)
    fig, ax = _mosaic_axes(canvas, 1.45 * cols, 0.9)
    h, w = images[0].shape[:2]
    for (x, y), caption in zip(corners, captions, strict=True):
        if caption:
            ax.text(x + w / 2, y + h + 0.03 * h, caption, ha="center", va="top", fontsize=SIZES["small"])
    for r, head in enumerate(heads):
        x, y = corners[r * cols]
        ax.text(x, y - 0.08 * h, head, ha="left", va="bottom", fontsize=SIZES["axes_title"])
    title = (
        f"{name}: the {len(pairs)} most-confused class pairs\n"
        "(their worst examples first; p: the probability given to the wrong class)"
    )
    return save_figure(fig, path, title=title)


def plot_per_class(report: dict, classes: list[str], path: Path, *, name: str, accuracy: float) -> Path:
    """Precision and recall of every class as dots on one percent scale, classes top to bottom."""
    k = len(classes)
    height = 0.3 * k + 2.3
    fig, ax = new_figure(7.5, height)
    y = np.arange(k)
    values = []
    for key, marker, what in (
        ("precision", "o", "precision: share of the images predicted as the class that are it"),
        ("recall", "s", "recall: share of the class's test images predicted as it"),
    ):
        v = np.array([np.nan if x is None else x for x in report[key]], dtype=np.float64)
        values.append(v)
        ax.plot(v, y, marker, ms=6, ls="none", label=what, alpha=0.85)
    low = (
        float(np.nanmin(np.concatenate(values))) if k and not np.isnan(np.concatenate(values)).all() else 0.0
    )
    ax.set_xlim(max(0.0, math.floor((low - 2) / 5) * 5), 100.5)
    ax.set_yticks(y, [_short(str(c), 20) for c in classes])
    ax.set_ylim(k - 0.5, -0.5)  # the first class on top
    ax.grid(axis="x", alpha=0.3)
    label_axes(
        ax, xlabel="% of the class's predictions (precision) or of its test images (recall)", ylabel="class"
    )
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=SIZES["small"], frameon=False)
    title = f"{name}: precision and recall per class (accuracy {accuracy:.2f}%)"
    return save_figure(fig, path, title=title, rect=(0, 0.6 / height, 1, 1))


def write_error_pictures(
    metrics: dict, report: dict, test, classes: list[str], out: str | Path, *, name: str
) -> list[Path]:
    """`PICTURES` into the folder `out` (created); the gallery and the pairs only where something is wrong."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnnzooError(f"cannot create {out}: {describe_os_error(e)}") from None
    written = []
    if report.get("most_wrong"):
        written.append(plot_errors(report, test, out / "errors.png", name=name))
    if report["confused_pairs"] and "per_image" in metrics:
        written.append(
            plot_confused_pairs(
                report, metrics["per_image"], test, classes, out / "confused_pairs.png", name=name
            )
        )
    written.append(
        plot_per_class(report, classes, out / "per_class.png", name=name, accuracy=metrics["accuracy"])
    )
    return written
