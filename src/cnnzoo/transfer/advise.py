"""How far back to fine-tune, decided from measurements rather than rules of thumb alone.

The classic guidance (CS231n's transfer-learning notes, Yosinski et al. 2014) has two axes:

                    similar data                    different data
    little data     train a linear head             head, or re-train the last stage
    lots of data    fine-tune the later stages      fine-tune everything (or train from scratch)

`advise` measures both axes instead of guessing them:

1. data size: training images per class (the median over classes);
2. similarity: a linear probe (logistic regression on frozen features, trained to convergence and
   cross-validated in 5 folds where the images are few, so that 5 per class score 5 validation images
   a class, not 1) on the source's features, against the same probe on the same architecture with
   random weights. The gap says how much the source's features are worth here; the probe's accuracy
   against the source's own test accuracy says how much of it carries over ("similar" at 80%).

The scratch threshold (SCRATCH_GAIN) was chosen on the calibration grid of `cnnzoo study transfer` by a
written-down procedure (`calibrate.fit_rules`). The rules, by the size of the data (issue 21):

    under 10 images a class   the table: scratch learned 5-70% from 5 a class, and a source whose features
                              scored below random ones was still the better start in 2 of 3 such rows
    10 to 49 a class          scratch where the source is no better than random features (its probe's gain
                              below SCRATCH_GAIN) or substantially different (the probe keeps under 60% of
                              the source's own accuracy: the lecture's "of little value"); else the table
    50 or more a class        the network learns features of its own: scratch unless the source's features
                              add at least WORTH_GAIN points over random ones; else the table

except where random features alone already score CEILING% (80): the gain has no room there to show a
source's worth, and the table decides. The table (size: little, moderate, plenty; similar or different
features) re-trains the last two groups with little similar data and fine-tunes everything otherwise
(LeNet-5, the recipe's small rate for pretrained layers, 0.01). Where a figure sits near a threshold (within
its noise), or the measured rows of its cell disagreed (or there were none), the rules say they are unsure
(`ambiguities`) and the advice is to check by trial.

The advice says whenever the source's features are no better than random ones (gain <= 0). Each of these
thresholds has a history told in the transfer study's report (reports/transfer): the unlike-source rule was
chosen on the held-out and unseen grids, scored on the dissimilar grid (7 of 13 near-best), revised
(dissimilar-2: 6 of 8), changed again (dissimilar-3: 5 of 8); the size bands, WORTH_GAIN and a refitted table
were chosen on every row measured by then and scored on dissimilar-4 (6 of 10); CEILING and the table
refitted again (`calibrate.refit_table`) on all 73 LeNet-5 rows (in sample for all of them: 54 of their 64
held-out rows near-best), committed with the dissimilar-5 grid, before it was measured.

Each advice says what it measured and what checking it would cost. With `trial`, the candidates are
raced on a validation split carved from the training images (`trial.py`) and the winner is advised:
measured on the user's own data, at the price of a few fine-tuning runs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ..artifacts.source import provenance
from ..data.base import DatasetInfo, Splits
from ..data.stats import stratified_split
from ..engine.config import TrainConfig
from ..errors import CnnzooError
from ..models import create_model
from ..runtime import resolve_device
from .calibrate import cell_of
from .features import extract_features, train_linear_head
from .finetune import check_target_data, source_loaders, target_splits
from .freeze import AUX_GROUPS, groups
from .recipe import MAX_EPOCHS, MIN_STEPS
from .sources import load_source
from .trial import VAL_FRACTION, race, seconds_per_step, trial_steps

__all__ = ["Advice", "advise", "recommend", "ambiguities"]

SMALL, LARGE = 30, 500  # images per class: below SMALL is little data, above LARGE is plenty
# Fitted on the calibration grid by `calibrate.fit_rules` (probes of this file, the cells of the run of
# reports/transfer at commit 57dd9e8); never on the held-out grids.
# Below this probe gain over random features the source is measurably no better than random features. The
# probe's gain is itself measured with noise (at 5 images a class one validation image of ten classes is 2
# points), so "no better than random" has to be a measured difference, and SCRATCH_GAIN is the line the
# calibration grid measured it at; between it and 0 the two probes are within their noise of each other, and
# the advice says "no better than random" (gain <= 0) but leaves the pick to the other rules.
SCRATCH_GAIN = -3.1  # points
# The table's cells: on the calibration grid (`calibrate.fit_rules`, commit 57dd9e8) "full" in every cell it
# had rows in; refitted with the scratch rules below (issue 21) by the same procedure (`calibrate.pick`: the
# strategy near-best in most rows of the cell, then the least mean shortfall, then the cheapest) on every
# LeNet-5 row measured before the dissimilar-5 grid that the scratch rules leave to the table.
TABLE = {  # (data size, similar?) -> strategy
    ("little", True): "last:2",
    ("little", False): "full",
    ("moderate", True): "full",
    ("moderate", False): "full",
    ("plenty", True): "full",  # no measured row: the textbook's
    ("plenty", False): "full",  # no measured row: the textbook's
}
RECORD = {  # (data size, similar?) -> (rows where TABLE's pick was near-best, rows), as refitted
    ("little", True): (8, 9),
    ("little", False): (18, 25),
    ("moderate", True): (10, 10),
    ("moderate", False): (1, 2),
}
SIMILAR_PROBE = 80.0  # % probe accuracy (of the source's own accuracy) that counts as "similar"
# The size bands of the scratch rules (issue 21). Chosen on all 63 LeNet-5 rows measured before the
# dissimilar-4 grid (calibration, held-out, unseen, dissimilar, -2, -3), by near-best count: 45 of their 54
# held-out rows (the rules before: 42). In sample for those rows; dissimilar-4 scored them: 6 of 10.
SCRATCH_MIN = 10  # images per class from which scratch can learn features of its own (at 5 it scored 5-70%)
UNLIKE_PROBE = 60.0  # % of the source's own accuracy below which its features count as unlike the target
OWN_FEATURES_MIN = 50  # images per class from which a source must add WORTH_GAIN points to be worth its bias
WORTH_GAIN = 15.0  # points of probe gain over random features (12 to 20 scored within one row of each other)
# Where random features alone already score this much (% of the probe), the gain has no room to show what a
# source is worth: none of the scratch rules holds, the table decides. Chosen after dissimilar-4, whose
# scanned-digits rows (random features 85-90%) lost 1.7-2.2 points to scratch by the worse-than-random rule.
CEILING = 80.0
PROBE_FOLDS = 5  # cross-validation folds where the training images are few...
CV_BELOW = 2500  # ...at most this many (above: one 80/20 split, thousands of validation images already)
PROBE_MIN_STEPS = 300  # the probe's optimizer steps at least, as the fine-tuning recipe's runs


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
            "random features (cross-validated on the training images)"
        )
        if self.trial:
            lines.append(
                f"checked by trial in {self.trial['seconds']:.0f} s (the rules alone: {self.rules_strategy})"
            )
        elif self.ambiguous:
            lines.append(
                f"the rules are unsure here ({'; '.join(self.ambiguous)}): check by trial, `--trial` races "
                f"the strategies on a validation split, about {self.trial_seconds:.0f} s ({self.trial_budget_steps} steps)"
            )
        else:
            lines.append(
                "not measured: how each strategy actually trains here; to check by trial, `--trial` races "
                f"them on a validation split: about {self.trial_seconds:.0f} s ({self.trial_budget_steps} steps)"
            )
        return "\n".join(lines)


def _cell(samples_per_class: float, probe_source: float, kept: float | None) -> tuple[str, bool]:
    return cell_of(samples_per_class, kept, probe_source, SMALL, LARGE, SIMILAR_PROBE)


def ambiguities(
    samples_per_class: float, probe_source: float, probe_random: float, kept: float | None
) -> list[str]:
    """Why the rules are unsure, if they are: a measured figure close to one of their thresholds, or a cell
    of the table whose strategy was not near-best in every measured row (or had none). The advice
    then says to check by trial; the study scores "the rules, or the trial where they are unsure"."""
    out = []
    gain = probe_source - probe_random
    for bound, name in ((SMALL, "little"), (LARGE, "plenty of")):
        if bound / 1.5 <= samples_per_class <= bound * 1.5:
            out.append(f"{samples_per_class:.0f} per class is near the {bound} that separates {name} data")
    if samples_per_class >= SCRATCH_MIN and abs(gain - SCRATCH_GAIN) < 3:
        out.append(
            f"the probe's gain ({gain:+.1f} points) is near the {SCRATCH_GAIN:+.1f} below which scratch won"
        )
    if kept is not None and samples_per_class < SMALL and abs(100 * kept - SIMILAR_PROBE) < 5:
        out.append(
            f"the probe keeps {100 * kept:.0f}% of the source's accuracy, near the {SIMILAR_PROBE:.0f}% of 'similar'"
        )
    if OWN_FEATURES_MIN / 1.5 <= samples_per_class <= OWN_FEATURES_MIN * 1.5 and _scratch_rule(
        OWN_FEATURES_MIN, probe_source, probe_random, kept
    ) != _scratch_rule(OWN_FEATURES_MIN - 1, probe_source, probe_random, kept):
        out.append(
            f"{samples_per_class:.0f} per class is near the {OWN_FEATURES_MIN} from which a source must add "
            f"{WORTH_GAIN:.0f} points over random features, and the rules' pick changes there"
        )
    if samples_per_class >= OWN_FEATURES_MIN and abs(gain - WORTH_GAIN) < 3:
        out.append(
            f"the probe's gain ({gain:+.1f} points) is near the {WORTH_GAIN:+.0f} a source must add, with "
            f"{OWN_FEATURES_MIN}+ images a class, to be worth fine-tuning"
        )
    if (
        kept is not None
        and SCRATCH_MIN <= samples_per_class < OWN_FEATURES_MIN
        and abs(100 * kept - UNLIKE_PROBE) < 5
    ):
        out.append(
            f"the probe keeps {100 * kept:.0f}% of the source's accuracy, near the {UNLIKE_PROBE:.0f}% below which "
            "the source counts as unlike the target"
        )
    if _scratch_rule(samples_per_class, probe_source, probe_random, kept):
        return out  # a scratch rule, not a cell of the table
    cell = _cell(samples_per_class, probe_source, kept)
    near, rows = RECORD.get(cell, (0, 0))
    what = f"{cell[0]} data, {'similar' if cell[1] else 'different'} features"
    if rows == 0:
        out.append(f"no measured row had {what}: the rule there is the textbook's, untested")
    elif near < rows:
        out.append(f"with {what}, the rule picked near-best in only {near} of {rows} measured rows")
    return out


def _depth(strategy: str, num_groups: int) -> str:
    """`last:N` clamped to the groups the model has before its head (at least one)."""
    if not strategy.startswith("last:"):
        return strategy
    return f"last:{max(1, min(int(strategy[5:]), num_groups - 1))}"


def _scratch_rule(
    samples_per_class: float, probe_source: float, probe_random: float, kept: float | None
) -> str:
    """Which rule sends a row to scratch, by the size of the data (none under SCRATCH_MIN images a class,
    nor where random features already score CEILING%): "worse" (the source's features score clearly below
    random ones: no better than random features), "unlike" (under OWN_FEATURES_MIN a class: its features
    keep under UNLIKE_PROBE% of its own accuracy), "not worth" (from OWN_FEATURES_MIN a class: its features
    add under WORTH_GAIN points over random ones), or "" (none: the table decides)."""
    gain = probe_source - probe_random
    if samples_per_class < SCRATCH_MIN or probe_random >= CEILING:
        return ""
    if gain < SCRATCH_GAIN:
        return "worse"
    if samples_per_class >= OWN_FEATURES_MIN:
        return "not worth" if gain < WORTH_GAIN else ""
    if kept is not None and 100 * kept < UNLIKE_PROBE:
        return "unlike"
    return ""


def recommend(
    samples_per_class: float, probe_source: float, probe_random: float, kept: float | None, num_groups: int
) -> tuple[str, list[str]]:
    """The rule table above, on measured figures; returns (strategy, reasons in plain words)."""
    gain = probe_source - probe_random
    size, similar = _cell(samples_per_class, probe_source, kept)
    amount = {"little": "little", "moderate": "a moderate amount of", "plenty": "plenty of"}[size]
    reasons = [
        f"{samples_per_class:.0f} training images per class: {amount} data",
        f"a linear probe on the source's frozen features scores {probe_source:.1f}% against {probe_random:.1f}% "
        f"on random features ({gain:+.1f} points)",
    ]
    if kept is not None:
        reasons.append(
            f"the probe keeps {100 * kept:.0f}% of the source's own accuracy: "
            f"{'similar' if similar else 'different'} data"
        )
    if gain <= 0:
        reasons.append(f"the source's features are no better than random ones here ({gain:+.1f} points)")
    rule = _scratch_rule(samples_per_class, probe_source, probe_random, kept)
    if rule == "worse":
        reasons.append(
            f"the source's features score {gain:+.1f} points against random ones, below the {SCRATCH_GAIN:+.1f} "
            "where training from scratch won on the calibration grid: the source's features are no better "
            "than random ones, train from scratch, the source will not help"
        )
        return "scratch", reasons
    if rule == "unlike":
        reasons.append(
            f"the probe keeps under {UNLIKE_PROBE:.0f}% of the source's own accuracy: a substantially different "
            f"source, of little value here, and {samples_per_class:.0f} images a class (at least {SCRATCH_MIN}) "
            "are enough for the network to learn features of its own: train from scratch"
        )
        return "scratch", reasons
    if rule == "not worth":
        reasons.append(
            f"with {samples_per_class:.0f} images a class (at least {OWN_FEATURES_MIN}) the network learns "
            f"features of its own, and the source's add only {gain:+.1f} points over random ones (under "
            f"{WORTH_GAIN:.0f}): not worth its bias, train from scratch"
        )
        return "scratch", reasons
    if probe_random >= CEILING and samples_per_class >= SCRATCH_MIN:
        reasons.append(
            f"random features alone already score {probe_random:.1f}% here (from {CEILING:.0f}%): the probe's "
            "gain has no room to show what the source is worth, so no rule sends this to scratch"
        )
    elif gain < SCRATCH_GAIN:  # under SCRATCH_MIN images a class
        reasons.append(
            f"the source's features score {gain:+.1f} points against random ones, no better than random, but "
            f"with {samples_per_class:.0f} images a class (under {SCRATCH_MIN}) scratch has too few to learn "
            "features of its own (5 a class scored 5-70% from scratch): the source is still the better start"
        )
    strategy = _depth(TABLE[(size, similar)], num_groups)
    what = {
        "head": "train only a new head on the frozen features",
        "full": "fine-tune the whole network at the recipe's small rate, starting from the source's weights",
    }.get(strategy, f"re-train the last {strategy[5:]} group(s) with the head, at small rates")
    near, rows = RECORD.get((size, similar), (0, 0))
    record = (
        f"near-best in {near} of {rows} measured rows like these"
        if rows
        else "the textbook's choice, no measured row like these"
    )
    reasons.append(f"{size} data, {'similar' if similar else 'different'} features: {what} ({record})")
    return strategy, reasons


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
    cfg = _probe_config(info.name, probe_epochs, seed)
    splits = target_splits(splits, cfg, samples_per_class)
    check_target_data(splits)
    measured = _measure(source, splits, info, cfg, model=model, device=device, max_images=max_images)
    advice = _rules_advice(
        source, splits, info, measured, seed=seed, min_steps=min_steps, max_epochs=max_epochs
    )
    advice.seconds = round(time.perf_counter() - start, 2)  # the measurements' cost; the trial has its own
    if trial:
        _check_by_trial(
            advice, source, splits, model=model, device=device, seed=seed, budget=budget,
            min_steps=min_steps, max_epochs=max_epochs,
        )  # fmt: skip
    return advice


def _probe_config(data: str, probe_epochs: int, seed: int) -> TrainConfig:
    """The linear probes' recipe (what `_probe` trains them with)."""
    return TrainConfig(
        model="(probe)",
        data=data,
        epochs=probe_epochs,
        batch_size=128,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1e-4,
        seed=seed,
    )


@dataclass
class _Measured:
    """What `advise` measures before the rules decide: the data's size and the two probes."""

    src: Any  # the loaded source (`sources.load_source`)
    device: torch.device
    per_class: float  # the median of training images per class
    probe_source: float  # % accuracy of the linear probe on the source's features
    probe_random: float  # % accuracy of the same probe on random-weight features


def _measure(
    source: str,
    splits: Splits,
    info: DatasetInfo,
    cfg: TrainConfig,
    *,
    model: str | None,
    device: str,
    max_images: int,
) -> _Measured:
    """Images per class, and linear probes on the source's features and on the same architecture's with
    random weights (seeded by `cfg.seed`), over at most ~`max_images` training images."""
    seed = cfg.seed
    counts = torch.bincount(splits.train.labels, minlength=info.num_classes)
    per_class = float(statistics.median(counts.tolist()))
    gen = torch.Generator().manual_seed(seed)  # a probe needs no more than ~12k images to rank features
    keep = torch.randperm(len(splits.train), generator=gen)[: max_images + max_images // 4].sort().values
    images = splits.train.subset(keep)
    src = load_source(source, num_classes=info.num_classes, in_chans=info.channels, model_name=model)
    torch.manual_seed(seed)
    random_model = create_model(
        src.model_name, num_classes=info.num_classes, in_chans=info.channels, **src.model_kwargs
    )
    dev = resolve_device(device)
    _, (_, loader) = source_loaders(Splits(images, images), src, cfg, dev, batch_size=256)
    folds = probe_folds(images.labels, seed)
    probe_source = _probe(src.model.to(dev), loader, folds, cfg)
    probe_random = _probe(random_model.to(dev), loader, folds, cfg)
    return _Measured(src, dev, per_class, probe_source, probe_random)


def _rules_advice(
    source: str,
    splits: Splits,
    info: DatasetInfo,
    m: _Measured,
    *,
    seed: int,
    min_steps: int,
    max_epochs: int,
) -> Advice:
    """The rules' advice on the measured figures, with what checking it by trial would cost."""
    source_acc = _source_accuracy(source)
    kept = m.probe_source / source_acc if source_acc else None
    num_groups = len([g for g, _ in groups(m.src.model) if g not in (*AUX_GROUPS, "head")])
    strategy, reasons = recommend(m.per_class, m.probe_source, m.probe_random, kept, num_groups)
    n_race = len(splits.train) - len(stratified_split(splits.train.labels, VAL_FRACTION, seed=seed)[1])
    steps = trial_steps(n_race, min_steps=min_steps, max_epochs=max_epochs)
    step_seconds = seconds_per_step(m.src.model, m.src.meta["image_size"], info.channels, m.device)
    return Advice(
        strategy,
        reasons,
        m.per_class,
        info.num_classes,
        m.probe_source,
        m.probe_random,
        source_acc,
        kept,
        num_groups=num_groups,
        groups=[g for g, _ in groups(m.src.model)],
        rules_strategy=strategy,
        ambiguous=ambiguities(m.per_class, m.probe_source, m.probe_random, kept),
        trial_budget_steps=steps,
        trial_seconds=round(1.3 * steps * step_seconds, 1),  # + the validation passes, about 30%
    )


def _check_by_trial(advice: Advice, source: str, splits: Splits, **race_options) -> None:
    """Race the candidates (`trial.race`) and make the winner the advice, saying whether it agrees with the
    rules' pick (`advice.rules_strategy`)."""
    result = race(source, splits, **race_options)
    strategy = advice.rules_strategy
    advice.trial = result.to_dict()
    advice.strategy, advice.trial_seconds = result.winner, result.seconds
    advice.trial_budget_steps = result.budget_steps
    verdict = "agrees" if result.winner == strategy else f"overrules the rules' {strategy}"
    advice.reasons = [*advice.reasons, *result.reasons(), f"the trial {verdict}"]


def probe_folds(labels: torch.Tensor, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(train, validation) indices]: `PROBE_FOLDS`-fold stratified cross-validation where the images
    are few (every image scored once: 5 per class give 5 validation images a class, not 1), else one
    80/20 split."""
    if len(labels) > CV_BELOW:
        return [stratified_split(labels, 0.2, seed=seed)]
    gen = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(labels), dtype=torch.long)
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        fold[members] = torch.arange(len(members)) % PROBE_FOLDS
    k = min(PROBE_FOLDS, int(fold.max()) + 1)
    return [(torch.nonzero(fold != i).flatten(), torch.nonzero(fold == i).flatten()) for i in range(k)]


def _probe(model, loader, folds, cfg: TrainConfig) -> float:
    """Accuracy (%) of a logistic regression on `model`'s frozen pre-logit features, pooled over `folds`.

    1. the features of every image, once (the loader's order: no augmentation, no shuffling)
    2. per fold: standardise on its training part, fit to at least `PROBE_MIN_STEPS` steps (40 images
       are one step an epoch: a fixed epoch count would leave the probe far from converged), score
    3. the pooled accuracy: correct validation images over all validation images"""
    feats, labels = extract_features(model, loader)
    num_classes = int(labels.max().item()) + 1
    correct, total = 0.0, 0
    for train_idx, val_idx in folds:
        if len(val_idx) == 0 or len(train_idx) == 0:
            continue
        train, val = feats[train_idx], feats[val_idx]
        mean, std = train.mean(0), train.std(0).nan_to_num(0.0) + 1e-6  # probes on any scale train alike
        steps = -(-len(train_idx) // cfg.batch_size)
        epochs = max(cfg.epochs, -(-PROBE_MIN_STEPS // steps))
        head = torch.nn.Linear(feats.shape[1], num_classes).to(feats.device)
        train_linear_head(head, ((train - mean) / std, labels[train_idx]), None, replace(cfg, epochs=epochs))
        with torch.no_grad():  # scored once, at the end: no per-epoch passes over the validation images
            correct += (head((val - mean) / std).argmax(1) == labels[val_idx]).sum().item()
        total += len(val_idx)
    return 100.0 * correct / max(1, total)


def _source_accuracy(source: str) -> float | None:
    """The source's own test accuracy, where it records one (a cnnzoo run, checkpoint, export folder or
    bundled weights; a bare weights file or torchvision:NAME records none)."""
    try:
        acc = provenance(source)["accuracy"]
    except CnnzooError:  # the source itself is reported by whoever loads it
        return None
    return float(acc) if acc else None
