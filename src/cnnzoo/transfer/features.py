"""Feature caching: run a frozen backbone once, then train only the head on the stored vectors.

With the backbone frozen and in eval mode (BatchNorm on running statistics, dropout off), its output
for an image never changes, so computing it every epoch is wasted work. `extract_features` runs the
backbone once over a loader; `train_linear_head` fits the classifier on those vectors, which costs
about as much as a logistic regression.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.config import TrainConfig
from ..engine.optim import build_optimizer, build_scheduler

__all__ = ["extract_features", "train_linear_head", "HeadResult"]


@torch.no_grad()
def extract_features(
    model: nn.Module, loader, *, flip: bool = False, amp: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """(features (N, num_features), labels (N,)) of every batch, in loader order; with `flip`, mirrored
    copies are appended (2N rows) as a cheap augmentation for the head. `amp`: autocast dtype, as in
    training; the features are stored in float32 either way."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats, labels = [], []
    for x, y in loader:
        views = (x, x.flip(-1)) if flip else (x,)
        for v in views:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                f = model.forward_head(model.forward_features(v), pre_logits=True)
            feats.append(f.float())
            labels.append(y)
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


class HeadResult:
    def __init__(self, history: list[dict], best_acc: float, final_acc: float, seconds: float):
        self.history, self.best_acc, self.final_acc, self.seconds = history, best_acc, final_acc, seconds


def _accuracy(head: nn.Module, feats: Tensor, labels: Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = head(feats)
        return F.cross_entropy(logits, labels).item(), 100.0 * (
            logits.argmax(1) == labels
        ).float().mean().item()


def train_linear_head(
    head: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor] | None,
    cfg: TrainConfig,
    *,
    log=None,
) -> HeadResult:
    """Fit `head` (the model's classifier) on cached features with `cfg`'s optimizer, schedule, epochs
    and batch size; it keeps the weights of its last epoch. `log(record)` is called after each epoch."""
    feats, labels = train
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = max(1, -(-len(labels) // cfg.batch_size))
    optimizer = build_optimizer(cfg, [p for p in head.parameters() if p.requires_grad])
    scheduler = build_scheduler(cfg, optimizer, steps)
    history, best, start = [], 0.0, time.perf_counter()
    for epoch in range(cfg.epochs):
        head.train()
        order = torch.randperm(len(labels), generator=gen)
        loss_sum = 0.0
        for i in range(steps):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size].to(feats.device)
            loss = F.cross_entropy(head(feats[idx]), labels[idx], label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(idx)
        head.eval()
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / len(labels),
            "time": round(time.perf_counter() - start, 3),
        }
        if test is not None:
            record["test_loss"], record["test_acc"] = _accuracy(head, *test)
            best = max(best, record["test_acc"])
        history.append(record)
        if log is not None:
            log(record)
    final = history[-1].get("test_acc", 0.0) if history else 0.0
    return HeadResult(history, best, final, time.perf_counter() - start)
