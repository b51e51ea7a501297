"""Evaluation: accuracy, top-5, per-class accuracy and the confusion matrix of a model on a test split.

Every reported test figure is computed the same way: batches of `EVAL_BATCH` images in order, normalised by
`cnnzoo.data.normalize.Normalize`, in the run's evaluation precision (fp32 unless asked otherwise, whatever
the training precision). So `cnnzoo evaluate RUN` prints, to the image, what the run wrote into
metrics.jsonl, and `cnnzoo predict` (cnnzoo.inference) gives the same answer on the same pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._io import note
from ..artifacts.figure import SIZES, label_axes, new_figure, pyplot, readable_text_colour, save_figure
from ..artifacts.source import Opened, open_source
from ..data import load_dataset
from ..errors import CnnzooError
from ..runtime import EVAL_BATCH, autocast_dtype, resolve_device, thread_tuner
from .setup import make_loaders

__all__ = [
    "EVAL_BATCH",
    "Evaluation",
    "evaluate_model",
    "evaluate_source",
    "evaluate_checkpoint",
    "default_confusion_png",
    "plot_confusion",
    "format_confusion",
]


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader,
    *,
    amp: torch.dtype | None = None,
    tta: bool = False,
    num_classes: int | None = None,
    per_image: bool = False,
) -> dict:
    """Metrics over a whole loader: loss, accuracy and top-5 (in %), per-class accuracy, confusion matrix.

    `tta` averages the softmax of the image and its horizontal mirror (test-time augmentation).
    `per_image` adds "per_image": CPU tensors of every image's label, prediction, loss, the predicted
    class's probability and the true class's, in the loader's order (for the pictures of the errors).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    confusion = None
    loss_sum, top5, n = 0.0, 0, 0
    rows: list[Tensor] = []  # per_image: (B, 5) per batch, kept on the device until the end
    threads = thread_tuner(device, "eval")
    if threads is not None:
        threads.begin()
    for x, y in loader:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x).float()
            if tta:
                logits = torch.log((logits.softmax(1) + model(x.flip(-1)).float().softmax(1)) / 2)
        k = logits.shape[1]
        if confusion is None:
            confusion = torch.zeros(num_classes or k, num_classes or k, dtype=torch.long, device=device)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        pred = logits.argmax(1)
        if per_image:  # (B, 5): label, prediction, loss, p(prediction), p(true class)
            probs = logits.softmax(1)
            losses = F.cross_entropy(logits, y, reduction="none")
            picked = probs.gather(1, torch.stack([pred, y], 1))
            rows.append(torch.stack([y.float(), pred.float(), losses, picked[:, 0], picked[:, 1]], 1))
        confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
        if k >= 5:
            top5 += (logits.topk(5, 1).indices == y[:, None]).any(1).sum().item()
        n += len(y)
        if threads is not None:
            threads.tick(len(y))
    model.train(was_training)
    if n == 0:
        raise CnnzooError("nothing to evaluate: the test split is empty")
    confusion = confusion.cpu()
    per_class_total = confusion.sum(1).clamp(min=1)
    extra = {}
    if per_image:
        table = torch.cat(rows).cpu()
        extra["per_image"] = {
            "label": table[:, 0].long(),
            "pred": table[:, 1].long(),
            "loss": table[:, 2],
            "prob_pred": table[:, 3],
            "prob_true": table[:, 4],
        }
    return {
        "loss": loss_sum / n,
        "accuracy": 100.0 * confusion.diag().sum().item() / n,
        "top5": 100.0 * top5 / n if confusion.shape[0] >= 5 else None,
        "per_class": (100.0 * confusion.diag() / per_class_total).tolist(),
        "confusion": confusion.tolist(),
        "images": n,
        **extra,
    }


@dataclass
class Evaluation:
    """What `evaluate_source` measured, on what: the figures, the source opened, and the test split (in the
    order the figures' per-image rows follow)."""

    metrics: dict
    opened: Opened
    test: Any  # ArrayDataset or StreamingFolder: test[i] / test.images[i] is the i-th image evaluated


def evaluate_source(
    checkpoint: str | Path,
    data: str | None = None,
    *,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    tta: bool = False,
    per_image: bool = False,
) -> Evaluation:
    """Metrics of any source (a run, checkpoint, export folder, bundled name such as `lenet5:mnist`) on
    `data`'s test split, prepared exactly as the run prepared it; `metrics["dataset"]` names the data used.

    `data` defaults to the dataset the checkpoint was trained on; `precision` to the one the run evaluated
    with (recorded in the checkpoint; fp32 for older runs). `per_image`: see `evaluate_model`.
    """
    dev = resolve_device(device)
    ckpt = open_source(
        checkpoint, dev
    )  # any source: a run, a checkpoint, an export folder, bundled weights...
    data = data or ckpt.meta.get("dataset")
    if not data:
        raise CnnzooError(f"{checkpoint} does not record the dataset it was trained on: name one with --data")
    splits = load_dataset(data, data_dir=data_dir)
    check_classes_match(ckpt.meta, splits.info)
    meta = ckpt.meta
    _, test = make_loaders(
        splits,
        batch_size=EVAL_BATCH,
        image_size=meta["image_size"],
        channels=meta["in_chans"],
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        augment="none",
        device=dev,
        seed=0,
        channels_last=bool(meta.get("channels_last", False)),
    )
    if meta.get("channels_last"):
        ckpt.model.to(memory_format=torch.channels_last)
    amp = autocast_dtype(precision or meta.get("eval_precision", "fp32"), dev)
    metrics = evaluate_model(
        ckpt.model, test, amp=amp, tta=tta, num_classes=len(ckpt.classes), per_image=per_image
    )
    return Evaluation({**metrics, "dataset": data}, ckpt, splits.test)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | None = None,
    *,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    tta: bool = False,
) -> tuple[dict, Opened]:
    """`evaluate_source`'s metrics and the source opened (the test split is not kept)."""
    ev = evaluate_source(checkpoint, data, data_dir=data_dir, device=device, precision=precision, tta=tta)
    return ev.metrics, ev.opened


def default_confusion_png(opened: Opened, data: str) -> Path | None:
    """Where `evaluate` draws the confusion matrix unless told: beside the checkpoint (in the run or export
    folder, beside a weights file); never into the installed package (bundled weights) or a download."""
    kind, path = opened.spec.kind, opened.spec.path
    if kind in ("bundled", "torchvision"):
        return None
    folder = path if kind == "export" else opened.path.parent
    safe = data.replace(":", "_").replace("/", "_").replace("\\", "_")
    return folder / f"confusion-{safe}.png"


def check_classes_match(meta: dict, info) -> None:
    """A checkpoint evaluates only on data with its class count (channels are adapted by the loader); other
    class names are said, not refused (scikit-learn's digits are MNIST's classes under the same names, but
    a digit model scored on Fashion-MNIST would otherwise print a figure under the wrong names)."""
    if len(meta["classes"]) != info.num_classes:
        raise CnnzooError(
            f"the checkpoint has {len(meta['classes'])} classes but {info.name} has {info.num_classes}: "
            "evaluate it on the dataset it was trained for"
        )
    ours, theirs = [str(c) for c in meta["classes"]], [str(c) for c in info.classes]
    if ours != theirs:
        differ = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        note(
            f"the checkpoint's classes are not {info.name}'s (class {differ}: {ours[differ]!r} vs "
            f"{theirs[differ]!r}): the figures count label indices, scored as if they were the same classes"
        )


def format_confusion(confusion: list[list[int]], classes: list[str]) -> str:
    """The confusion matrix as text: rows are true classes, columns predictions."""
    names = [str(c)[:6] for c in classes]
    width = max(6, *(len(str(v)) for row in confusion for v in row)) + 1
    lines = [" " * 8 + "".join(n.rjust(width) for n in names)]
    for name, row in zip(names, confusion, strict=True):
        lines.append(name.rjust(7) + " " + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def plot_confusion(
    confusion: list[list[int]], classes: list[str], path: Path, *, title: str = "Confusion matrix"
) -> Path:
    """The confusion matrix as a picture: counts on a log colour scale (so a handful of errors shows beside
    a thousand right answers; blank cells are 0), a colour bar, and each count written in black or white,
    whichever reads on its cell. `title` says whose matrix on what ("lenet5 on mnist: accuracy 99.25%")."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    plt = pyplot()
    counts = np.asarray(confusion, dtype=np.float64)
    k = len(classes)
    side = min(14.0, 3.0 + 0.5 * k)
    fig, ax = new_figure(side + 1.5, side)
    cmap = plt.get_cmap("Blues").with_extremes(bad="white")  # zero counts: nothing to colour
    norm = LogNorm(vmin=1, vmax=max(2.0, counts.max()))
    image = ax.imshow(np.ma.masked_less(counts, 1), cmap=cmap, norm=norm)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("test images (log scale; white = none)", fontsize=SIZES["label"])
    bar.ax.tick_params(labelsize=SIZES["tick"])
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))  # 1, 10, 100: not 10^2
    names = [str(c) for c in classes]
    long = max(len(n) for n in names) > 2  # a word, not a digit or a letter: slanted or upright
    rotation = (90 if k > 12 else 40) if long else 0
    ax.set_xticks(range(k), names, rotation=rotation, ha="right" if rotation == 40 else "center")
    ax.set_yticks(range(k), names)
    label_axes(ax, xlabel="predicted class", ylabel="true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                v = counts[i, j]
                colour = readable_text_colour(cmap(norm(v))) if v >= 1 else "0.55"  # gray 0s recede
                ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=SIZES["small"], color=colour)
    # a failure (read-only folder, full disk) is one CnnzooError naming the file and the cause
    return save_figure(fig, Path(path), title=title)
