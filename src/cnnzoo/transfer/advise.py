"""How far back to fine-tune, decided from measurements rather than rules of thumb alone.

The classic guidance (CS231n's transfer-learning notes, Yosinski et al. 2014) has two axes:

                    similar data                    different data
    little data     train a linear head             head, or re-train the last stage
    lots of data    fine-tune the later stages      fine-tune everything (or train from scratch)

`advise` measures both axes instead of guessing them:

1. data size: training images per class (the median over classes);
2. similarity: a linear probe (logistic regression on frozen features, fitted on 80% of the training
   split, scored on the other 20%) on the source's features, against the same probe on the same
   architecture with random weights. The gap says how much the source's features are worth here;
   the probe's accuracy against the source's own test accuracy says how much of it carries over.

The thresholds were calibrated on the calibration grid of `cnnzoo study transfer` (reports/transfer):
with LeNet-5, re-training the later layers at a small rate beat a head alone in every setting but one,
so "head" is kept for little data whose probe already keeps most of the source's accuracy; "scratch" is
advised only when the source's features are no better than random ones and there is enough data to
learn new ones. The study scores them again on a held-out grid no threshold was chosen on.

Each advice says what it measured and what checking it would cost. With `trial`, the candidates are
raced on a validation split carved from the training images (`trial.py`) and the winner is advised:
measured on the user's own data, at the price of a few fine-tuning runs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from ..data.base import Splits
from ..data.stats import stratified_split
from ..engine.checkpoint import read_meta, resolve_checkpoint
from ..engine.config import TrainConfig
from ..engine.train import resolve_device
from ..models import create_model
from .features import extract_features, train_linear_head
from .finetune import check_target_data, source_loaders, target_splits
from .freeze import AUX_GROUPS, groups
from .recipe import MAX_EPOCHS, MIN_STEPS
from .sources import load_source
from .trial import VAL_FRACTION, race, seconds_per_step, trial_steps

__all__ = ["Advice", "advise", "recommend", "ambiguities"]

SMALL, LARGE = 30, 500  # images per class: below SMALL is little data, above LARGE is plenty
USELESS_GAIN = 2.0  # points: a source whose probe beats random features by less does not help
SIMILAR_PROBE = 80.0  # % probe accuracy (of the source's own accuracy) that counts as "similar"


@dataclass
class Advice:
    strategy: (
        str  # head, last:N, full or scratch: the trial's winner where there was a trial, else the rules'
    )
    reasons: list[str]
    samples_per_class: float
    num_classes: int
    probe_source: float  # % accuracy of the linear probe on the source's features
    probe_random: float  # % accuracy of the same probe on random-weight features
    source_accuracy: float | None  # the source's own test accuracy, where its checkpoint says
    kept: float | None  # probe_source / source_accuracy
    num_groups: int = 0  # groups before the head (how deep last:N can go)
    groups: list[str] = field(default_factory=list)
    rules_strategy: str = ""  # what the rule table says from the measured figures
    seconds: float = 0.0  # what measuring the figures cost (the probes)
    ambiguous: list[str] = field(default_factory=list)  # figures close to a threshold of the rules
    trial_budget_steps: int = 0  # what checking by trial would take, in optimizer steps...
    trial_seconds: float = 0.0  # ...and in seconds (estimated, or measured where it ran)
    trial: dict | None = None  # the race (`trial.Trial.to_dict()`), with --trial

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        how = "by trial" if self.trial else "by the rules"
        lines = [f"recommended strategy: {self.strategy} ({how})"] + [f"  - {r}" for r in self.reasons]
        lines.append(
            f"measured in {self.seconds:.0f} s: images per class, and linear probes on the source's and on "
            "random features (80/20 split of the training images)"
        )
        if self.trial:
            lines.append(
                f"checked by trial in {self.trial['seconds']:.0f} s (the rules alone: {self.rules_strategy})"
            )
        else:
            doubt = f" ({'; '.join(self.ambiguous)})" if self.ambiguous else ""
            lines.append(
                f"not measured: how each strategy actually trains here{doubt}; to check by trial, "
                f"`--trial` races them on a validation split: about {self.trial_seconds:.0f} s "
                f"({self.trial_budget_steps} steps)"
            )
        return "\n".join(lines)


def ambiguities(samples_per_class: float, gain: float, kept: float | None) -> list[str]:
    """The measured figures that sit close to a threshold of `recommend`: where the rules could tip."""
    out = []
    for bound, name in ((SMALL, "little"), (LARGE, "plenty of")):
        if bound / 1.5 <= samples_per_class <= bound * 1.5:
            out.append(f"{samples_per_class:.0f} per class is near the {bound} that separates {name} data")
    if samples_per_class > SMALL and abs(gain - USELESS_GAIN) < 3:
        out.append(
            f"the probe's gain ({gain:+.1f} points) is near the {USELESS_GAIN:.0f} that means useless features"
        )
    if kept is not None and samples_per_class < SMALL and abs(100 * kept - SIMILAR_PROBE) < 5:
        out.append(
            f"the probe keeps {100 * kept:.0f}% of the source's accuracy, near the {SIMILAR_PROBE:.0f}% of 'similar'"
        )
    return out


def recommend(
    samples_per_class: float, probe_source: float, probe_random: float, kept: float | None, num_groups: int
) -> tuple[str, list[str]]:
    """The rule table above, on measured figures; returns (strategy, reasons in plain words)."""
    gain = probe_source - probe_random
    similar = (kept if kept is not None else probe_source / 100) * 100 >= SIMILAR_PROBE
    size = (
        "little"
        if samples_per_class < SMALL
        else "plenty of"
        if samples_per_class > LARGE
        else "a moderate amount of"
    )
    reasons = [
        f"{samples_per_class:.0f} training images per class: {size} data",
        f"a linear probe on the source's frozen features scores {probe_source:.1f}% against {probe_random:.1f}% "
        f"on random features ({gain:+.1f} points)",
    ]
    if kept is not None:
        reasons.append(
            f"the probe keeps {100 * kept:.0f}% of the source's own accuracy: "
            f"{'similar' if similar else 'different'} data"
        )
    if gain < USELESS_GAIN and samples_per_class > SMALL:
        reasons.append(
            "the source's features are no better than random ones here: train from scratch, the source will not help"
        )
        return "scratch", reasons
    deep = max(1, min(2, num_groups - 1))  # "the later layers": the last two stages where the model has them
    if size == "little":
        if similar:
            reasons.append("little data and features that already fit the task: train only a new head")
            return "head", reasons
        reasons.append(
            f"little data, features that fit less well: keep the early, generic layers and re-train "
            f"the last {deep} stages with the head, at small rates"
        )
        return f"last:{deep}", reasons
    if size == "plenty of":
        reasons.append("plenty of data: fine-tune the whole network, starting from the source's weights")
        return "full", reasons
    reasons.append(
        f"a moderate amount of data: fine-tune the last {deep} stages with the head; "
        f"the earliest layers stay as the source learned them"
    )
    return f"last:{deep}", reasons


def advise(
    source: str,
    splits: Splits,
    *,
    model: str | None = None,
    device: str = "auto",
    seed: int = 0,
    samples_per_class: int = 0,
    trial: bool = False,
    budget: float | None = None,
    probe_epochs: int = 15,
    max_images: int = 12_000,
    min_steps: int = MIN_STEPS,
    max_epochs: int = MAX_EPOCHS,
) -> Advice:
    """Measure data size and similarity, then `recommend` a strategy; with `trial`, race the candidates
    on a validation split carved from the training images (`trial.race`) and recommend the winner.

    `samples_per_class`: advise for at most N training images per class, drawn as `finetune
    --samples-per-class N` draws them (seeded by `seed`). `budget`: the trial's seconds (default: a
    few fine-tuning runs' worth). `min_steps`/`max_epochs`: the recipe's (the study's quick preset
    shrinks them)."""
    start = time.perf_counter()
    info = splits.info
    cfg = TrainConfig(
        model="(probe)",
        data=info.name,
        epochs=probe_epochs,
        batch_size=128,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1e-4,
        seed=seed,
    )
    splits = target_splits(splits, cfg, samples_per_class)
    check_target_data(splits)
    counts = torch.bincount(splits.train.labels, minlength=info.num_classes)
    per_class = float(statistics.median(counts.tolist()))
    train_idx, val_idx = stratified_split(splits.train.labels, 0.2, seed=seed)
    gen = torch.Generator().manual_seed(seed)  # a probe needs no more than ~12k images to rank features
    train_idx = torch.as_tensor(train_idx)[torch.randperm(len(train_idx), generator=gen)[:max_images]]
    val_idx = torch.as_tensor(val_idx)[torch.randperm(len(val_idx), generator=gen)[: max_images // 4]]
    probe_splits = Splits(splits.train.subset(train_idx), splits.train.subset(val_idx))
    src = load_source(source, num_classes=info.num_classes, in_chans=info.channels, model_name=model)
    torch.manual_seed(seed)
    random_model = create_model(
        src.model_name, num_classes=info.num_classes, in_chans=info.channels, **src.model_kwargs
    )
    dev = resolve_device(device)
    _, loaders = source_loaders(probe_splits, src, cfg, dev, batch_size=256)
    probe_source = _probe(src.model.to(dev), loaders, cfg)
    probe_random = _probe(random_model.to(dev), loaders, cfg)
    source_acc = _source_accuracy(source)
    kept = probe_source / source_acc if source_acc else None
    num_groups = len([g for g, _ in groups(src.model) if g not in (*AUX_GROUPS, "head")])
    strategy, reasons = recommend(per_class, probe_source, probe_random, kept, num_groups)
    n_race = len(splits.train) - len(stratified_split(splits.train.labels, VAL_FRACTION, seed=seed)[1])
    steps = trial_steps(n_race, min_steps=min_steps, max_epochs=max_epochs)
    step_seconds = seconds_per_step(src.model, src.meta["image_size"], info.channels, dev)
    advice = Advice(
        strategy,
        reasons,
        per_class,
        info.num_classes,
        probe_source,
        probe_random,
        source_acc,
        kept,
        num_groups=num_groups,
        groups=[g for g, _ in groups(src.model)],
        rules_strategy=strategy,
        ambiguous=ambiguities(per_class, probe_source - probe_random, kept),
        trial_budget_steps=steps,
        trial_seconds=round(1.3 * steps * step_seconds, 1),  # + the validation passes, about 30%
    )
    advice.seconds = round(time.perf_counter() - start, 2)
    if trial:
        result = race(
            source,
            splits,
            model=model,
            device=device,
            seed=seed,
            budget=budget,
            min_steps=min_steps,
            max_epochs=max_epochs,
        )
        advice.trial = result.to_dict()
        advice.strategy, advice.trial_seconds = result.winner, result.seconds
        advice.trial_budget_steps = result.budget_steps
        verdict = "agrees" if result.winner == strategy else f"overrules the rules' {strategy}"
        advice.reasons = [*reasons, *result.reasons(), f"the trial {verdict}"]
    return advice


def _probe(model, loaders, cfg: TrainConfig) -> float:
    """Accuracy (%) of a logistic regression on `model`'s frozen pre-logit features."""
    train_loader, val_loader = loaders
    train_loader.set_epoch(0)
    train = extract_features(model, train_loader)
    val = extract_features(model, val_loader)
    mean, std = train[0].mean(0), train[0].std(0) + 1e-6  # standardised: probes on any scale train alike
    train, val = ((train[0] - mean) / std, train[1]), ((val[0] - mean) / std, val[1])
    head = torch.nn.Linear(train[0].shape[1], int(train[1].max().item()) + 1).to(train[0].device)
    result = train_linear_head(head, train, val, replace(cfg))
    return result.final_acc


def _source_accuracy(source: str) -> float | None:
    """The source checkpoint's own test accuracy, where it is a cnnzoo checkpoint that recorded one."""
    try:
        meta = read_meta(resolve_checkpoint(source))
    except Exception:  # not a cnnzoo checkpoint (a bare weights file, torchvision:NAME): unknown
        return None
    acc = (meta.get("metrics") or {}).get("test_acc")
    return float(acc) if acc else None
