"""Checking advice by trial: race the strategies on a validation split carved from the training data.

The advisor's rules read two measured signals (data size, a linear probe's similarity); where those are
ambiguous, the surest answer is to try. `race` does it cheaply with successive halving (Jamieson and
Talwalkar 2016, the inner loop of Li et al.'s Hyperband):

1. carve a validation split from the user's training split (`VAL_FRACTION` of each class, at most
   `MAX_VAL` images); the test split is never touched, so the figure it later reports stays honest
2. every candidate (head, last:N for each N, full, scratch) fine-tunes with the recipe's rates for the
   same short budget of optimizer steps, and is scored on the validation split
3. the better half goes on with twice the steps; repeat until one is left: each round costs about the
   same, the strong candidates get the longer looks

The whole race costs `multiple` fine-tuning runs of the recipe (in optimizer steps; 3 by default), or
what fits in `budget` seconds. The winner is a recommendation: train it with `cnnzoo finetune` on the
whole training split.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch

from ..data.base import Splits
from ..data.stats import stratified_split
from ..errors import CnnzooError
from ..runtime import resolve_device
from .finetune import FinetuneConfig, check_target_data, finetune
from .freeze import AUX_GROUPS, groups
from .recipe import BATCH_SIZE, MAX_EPOCHS, MIN_STEPS, finetune_plan, recipe_epochs
from .sources import load_source

__all__ = [
    "Trial",
    "race",
    "candidates",
    "halving_plan",
    "trial_steps",
    "seconds_per_step",
    "TRIAL_MULTIPLE",
    "VAL_FRACTION",
    "MAX_VAL",
]

TRIAL_MULTIPLE = 3  # the race's budget, in fine-tuning runs of the recipe (optimizer steps)
VAL_FRACTION = 0.2  # of each class's training images, held out to score the candidates
MAX_VAL = 2000  # validation images at most: enough to rank strategies, cheap to score every round


def candidates(num_groups: int) -> list[str]:
    """The strategies a race compares, cheapest first: head, last:1..last:(num_groups-1), full, scratch."""
    return ["head", *[f"last:{n}" for n in range(1, num_groups)], "full", "scratch"]


def halving_plan(n_candidates: int, total_steps: int) -> list[tuple[int, int]]:
    """[(candidates in the round, steps each)]: halve the field, double the steps, until one is left.

    The first round's steps are chosen so that all rounds together take about `total_steps`."""
    field = [n_candidates]
    while field[-1] > 1:
        field.append(math.ceil(field[-1] / 2))
    rounds = field[:-1] or [1]  # one candidate: a single round that only measures it
    weight = sum(n * 2**r for r, n in enumerate(rounds))
    first = max(1, total_steps // weight)
    return [(n, first * 2**r) for r, n in enumerate(rounds)]


def trial_steps(
    n_train: int,
    *,
    multiple: float = TRIAL_MULTIPLE,
    min_steps: int = MIN_STEPS,
    max_epochs: int = MAX_EPOCHS,
    batch_size: int = BATCH_SIZE,
) -> int:
    """The default budget in optimizer steps: `multiple` recipe runs on `n_train` images."""
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    epochs = recipe_epochs(n_train, batch_size, min_steps=min_steps, max_epochs=max_epochs)
    return max(1, round(multiple * epochs * steps_per_epoch))


def seconds_per_step(
    model: torch.nn.Module, image_size: int, channels: int, device, batch_size: int = BATCH_SIZE
) -> float:
    """Seconds of one training step (forward, backward, SGD) of the whole `model` on a random batch.

    The most a step of any strategy costs (head and last:N skip parts of the backward pass): what the
    advice quotes as the price of a trial, and how `--budget` seconds become steps."""
    net = copy.deepcopy(model).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-6)
    x = torch.randn(batch_size, channels, image_size, image_size, device=device)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    times = []
    for _ in range(4):  # the first step warms up the allocator and kernels: not counted
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:])


@dataclass
class Trial:
    winner: str
    rounds: list[dict]  # [{"steps": steps each, "val_acc": {strategy: %}, "val_loss": ..., "seconds": ...}]
    seconds: float  # the whole race, wall time
    budget_steps: int
    train_images: int  # what the candidates trained on (the training split minus validation)
    val_images: int

    def to_dict(self) -> dict:
        return asdict(self)

    def reasons(self) -> list[str]:
        lines = [
            f"trial: {len(self.rounds[0]['val_acc'])} strategies raced on {self.val_images} validation images carved "
            f"from the training split ({self.train_images} left to train on; the test split is never used), "
            f"successive halving over {len(self.rounds)} round(s), {self.seconds:.0f} s in all"
        ]
        for i, r in enumerate(self.rounds, 1):
            ranked = sorted(r["val_acc"].items(), key=lambda kv: -kv[1])
            lines.append(
                f"round {i}, {r['steps']} steps each: " + ", ".join(f"{s} {a:.1f}%" for s, a in ranked)
            )
        last = self.rounds[-1]["val_acc"]
        lines.append(f"the winner: {self.winner} ({last[self.winner]:.1f}% on validation in the last round)")
        return lines


def _run_length(steps: int, n_train: int, batch_size: int) -> dict:
    """`TrainConfig` settings that take about `steps` optimizer steps: whole epochs where the data
    allows, else one epoch over a random `train_subset` of `steps` batches."""
    per_epoch = max(1, math.ceil(n_train / batch_size))
    if steps >= per_epoch:
        return {"epochs": max(1, round(steps / per_epoch)), "train_subset": None}
    return {"epochs": 1, "train_subset": steps * batch_size}


def _finite(loss: float | None) -> float:
    return loss if loss is not None and math.isfinite(loss) else math.inf


def race(
    source: str,
    splits: Splits,
    *,
    model: str | None = None,
    device: str = "auto",
    seed: int = 0,
    budget: float | None = None,
    multiple: float = TRIAL_MULTIPLE,
    strategies: list[str] | None = None,
    min_steps: int = MIN_STEPS,
    max_epochs: int = MAX_EPOCHS,
) -> Trial:
    """Race `strategies` (default: every candidate of the source's model) on `splits.train` alone.

    `budget`: seconds for the whole race (converted to steps at the measured cost of a full step);
    None: `multiple` recipe runs' worth of steps. `min_steps`/`max_epochs`: the recipe's (the study's
    quick preset shrinks them)."""
    check_target_data(splits)
    if budget is not None and not budget > 0:
        raise CnnzooError(f"the trial's budget is a positive number of seconds, got {budget}")
    start = time.perf_counter()
    info = splits.info
    train_idx, val_idx = stratified_split(splits.train.labels, VAL_FRACTION, seed=seed)
    if len(val_idx) == 0:
        raise CnnzooError("too few training images to carve a validation split: at least 2 per class")
    gen = torch.Generator().manual_seed(seed)
    val_idx = torch.as_tensor(val_idx)[torch.randperm(len(val_idx), generator=gen)[:MAX_VAL]].sort().values
    race_splits = Splits(splits.train.subset(torch.as_tensor(train_idx)), splits.train.subset(val_idx))
    n_train = len(train_idx)
    src = load_source(source, num_classes=info.num_classes, in_chans=info.channels, model_name=model)
    if strategies is None:
        n_groups = len([g for g, _ in groups(src.model) if g not in (*AUX_GROUPS, "head")])
        strategies = candidates(n_groups)
    if budget is not None:
        dev = resolve_device(device)
        step = seconds_per_step(src.model, src.meta["image_size"], info.channels, dev)
        total = max(1, int(budget / step))
    else:
        total = trial_steps(n_train, multiple=multiple, min_steps=min_steps, max_epochs=max_epochs)
    alive, rounds = list(strategies), []
    for _, steps in halving_plan(len(alive), total):
        accs, losses, secs = {}, {}, {}
        for strategy in alive:
            t0 = time.perf_counter()
            ft, cfg, sp = finetune_plan(
                FinetuneConfig(source=str(source), strategy=strategy, model=model),
                info.name,
                splits=race_splits,
                seed=seed,
                device=device,
                eval_every=1000,  # only the final figure counts
                **_run_length(steps, n_train, BATCH_SIZE),
            )
            result = finetune(ft, cfg, quiet=True, save=False, splits=sp)
            accs[strategy], losses[strategy] = result.final_acc, result.history[-1].get("test_loss")
            secs[strategy] = round(time.perf_counter() - t0, 2)
        rounds.append({"steps": steps, "val_acc": accs, "val_loss": losses, "seconds": secs})
        # a few validation images make ties: the lower validation loss, then the cheaper strategy, breaks them
        ranked = sorted(alive, key=lambda s: (-accs[s], _finite(losses[s]), strategies.index(s)))
        alive = ranked[: max(1, math.ceil(len(alive) / 2))]
        if len(ranked) == 1:
            break
    return Trial(alive[0], rounds, round(time.perf_counter() - start, 2), total, n_train, len(val_idx))
