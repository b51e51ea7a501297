"""Evaluation (accuracy, top-5, per-class accuracy, confusion matrix) and prediction on image files."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CnnzooError

__all__ = ["evaluate_model", "predict_images", "plot_confusion", "format_confusion"]


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader,
    *,
    amp: torch.dtype | None = None,
    tta: bool = False,
    num_classes: int | None = None,
) -> dict:
    """Metrics over a whole loader: loss, accuracy and top-5 (in %), per-class accuracy, confusion matrix.

    `tta` averages the softmax of the image and its horizontal mirror (test-time augmentation).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    confusion = None
    loss_sum, top5, n = 0.0, 0, 0
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
        confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
        if k >= 5:
            top5 += (logits.topk(5, 1).indices == y[:, None]).any(1).sum().item()
        n += len(y)
    model.train(was_training)
    if n == 0:
        raise CnnzooError("nothing to evaluate: the test split is empty")
    confusion = confusion.cpu()
    per_class_total = confusion.sum(1).clamp(min=1)
    return {
        "loss": loss_sum / n,
        "accuracy": 100.0 * confusion.diag().sum().item() / n,
        "top5": 100.0 * top5 / n if confusion.shape[0] >= 5 else None,
        "per_class": (100.0 * confusion.diag() / per_class_total).tolist(),
        "confusion": confusion.tolist(),
        "images": n,
    }


def format_confusion(confusion: list[list[int]], classes: list[str]) -> str:
    """The confusion matrix as text: rows are true classes, columns predictions."""
    names = [str(c)[:6] for c in classes]
    width = max(6, *(len(str(v)) for row in confusion for v in row)) + 1
    lines = [" " * 8 + "".join(n.rjust(width) for n in names)]
    for name, row in zip(names, confusion, strict=True):
        lines.append(name.rjust(7) + " " + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.45 * k), min(12, 2 + 0.45 * k)), dpi=100)
    ax.imshow(torch.tensor(confusion, dtype=torch.float).log1p(), cmap="Blues")
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def load_image(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """An image file as (channels, size, size) uint8; a clear error for unreadable files."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
    except FileNotFoundError:
        raise CnnzooError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CnnzooError(f"{path}: not a readable image ({e})") from None
    t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return t.view(size, size, channels).permute(2, 0, 1)


@torch.no_grad()
def predict_images(model: nn.Module, meta: dict, paths: list[str], top_k: int = 5) -> list[dict]:
    """Top-k classes with probabilities for each image file, preprocessed as the checkpoint says."""
    size, channels = meta["image_size"], meta["in_chans"]
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    batch = torch.stack([load_image(p, size, channels) for p in paths]).float() / 255
    device = next(model.parameters()).device
    probs = model.eval()(((batch - mean) / std).to(device)).float().softmax(1).cpu()
    k = min(top_k, probs.shape[1])
    results = []
    for path, p in zip(paths, probs, strict=True):
        top = p.topk(k)
        results.append(
            {
                "image": str(path),
                "top": [
                    {"class": meta["classes"][i], "probability": round(v, 6)}
                    for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                ],
            }
        )
    return results
