"""Sanity checks for explanations (Adebayo et al. 2018, "Sanity checks for saliency maps").

An explanation worth the name depends on what the model learned: the same method run on the same model
with its weights re-drawn at random must give a different picture (low rank correlation), and on a digit
the most salient region should lie on the ink more often than a random map's does.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

__all__ = ["randomized_copy", "rank_correlation", "ink_overlap"]


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` with every parameter re-drawn from its layer's initialisation (eval mode)."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
                continue
            for p in module.parameters(recurse=False):  # no initialiser of its own: +-1/sqrt(fan_in)
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
    return clone.eval()


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the average of the ranks they span (as scipy.stats.rankdata does)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_a)) + 1]
    ends = np.r_[starts[1:], len(a)]
    ranks = np.empty(len(a))
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2  # mean of ranks s+1..e
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (0 when either is constant: it ranks nothing)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def ink_overlap(heat: np.ndarray, image: np.ndarray, *, threshold: int = 128) -> float:
    """The share of the map's top region that lies on ink, the top region being as many pixels as the
    digit has ink pixels (value >= threshold on MNIST's white-on-black). A random map scores about the
    ink's share of the image; a map that follows the digit scores more."""
    ink = np.asarray(image).reshape(np.asarray(heat).shape) >= threshold
    k = int(ink.sum())
    if k == 0:
        return 0.0
    top = np.argsort(-np.asarray(heat, dtype=np.float64).ravel(), kind="stable")[:k]
    return float(ink.ravel()[top].mean())
