"""`cnnzoo study transfer`: does the transfer-learning folklore hold? Measured on a grid.

Three settings, each a LeNet-5 pretrained on a source and transferred to a target:

    similar source, little data    glyphs-latin  -> glyphs-cyrillic  (typed letters, unseen fonts)
    similar task, other domain     mnist         -> digits           (handwritten 28x28 vs scanned 8x8)
    different domain               mnist         -> fashion-mnist    (digits vs clothing)

For each number of training images per class and each strategy (scratch, head, last:1, last:2, full,
gradual), several seeds; every cell reports the mean and spread of the final test accuracy and the
wall time. The advisor (`cnnzoo.transfer.advise`) is asked for each setting and size, and its pick is compared with
the best measured strategy. The report (README.md, results.json, PNG plots) is written to `out`.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from ..data import load_dataset
from ..data.base import Splits, take_per_class
from ..engine.config import TrainConfig
from ..engine.train import train
from ..errors import CnnzooError
from ..transfer.advise import advise
from ..transfer.finetune import FinetuneConfig, finetune
from ._registry import Study, register_study

__all__ = ["run_transfer_study", "Setting", "PRESETS"]

STRATEGIES = ("scratch", "head", "last:1", "last:2", "full", "gradual")
MODEL = "lenet5"


@dataclass(frozen=True)
class Setting:
    key: str
    title: str
    source_data: str
    target_data: str
    sizes: tuple[int, ...]  # training images per class; 0 = all


@dataclass(frozen=True)
class Preset:
    settings: tuple[Setting, ...]
    seeds: int
    source_epochs: int  # pre-training epochs of each source
    min_steps: int  # every fine-tuning run takes at least this many optimizer steps...
    max_epochs: int  # ...within this many epochs
    batch_size: int = 64


PRESETS = {
    "full": Preset(
        settings=(
            Setting(
                "latin-cyrillic",
                "similar source, little data",
                "glyphs-latin",
                "glyphs-cyrillic",
                (5, 20, 100, 0),
            ),
            Setting("mnist-digits", "similar task, other domain", "mnist", "digits", (5, 20, 0)),
            Setting("mnist-fashion", "different domain", "mnist", "fashion-mnist", (5, 100, 1000)),
        ),
        seeds=3,
        source_epochs=6,
        min_steps=300,
        max_epochs=40,
    ),
    "quick": Preset(
        settings=(
            Setting(
                "latin-cyrillic", "similar source, little data", "glyphs-latin", "glyphs-cyrillic", (5, 100)
            ),
            Setting("mnist-digits", "similar task, other domain", "mnist", "digits", (5,)),
            Setting("mnist-fashion", "different domain", "mnist", "fashion-mnist", (20,)),
        ),
        seeds=1,
        source_epochs=2,
        min_steps=80,
        max_epochs=15,
    ),
}

# Rates: from-scratch and head-only runs can take big steps; fine-tuning pretrained layers takes small ones.
LR = {"scratch": 0.05, "head": 0.05, "gradual": 0.05, "last:1": 0.01, "last:2": 0.01, "full": 0.01}


def _epochs(n_train: int, preset: Preset) -> int:
    steps_per_epoch = max(1, math.ceil(n_train / preset.batch_size))
    return max(3, min(preset.max_epochs, math.ceil(preset.min_steps / steps_per_epoch)))


def pretrain_source(data: str, out: Path, epochs: int, device: str) -> Path:
    """Train LeNet-5 on the source dataset once; reuse it when the same run already exists."""
    run_dir = out / "sources" / f"{MODEL}-{data}-{epochs}ep"
    if (run_dir / "best.safetensors").exists():
        return run_dir
    cfg = TrainConfig(model=MODEL, data=data, epochs=epochs, batch_size=128, lr=0.05, device=device)
    train(cfg, run_dir=run_dir, quiet=True)
    return run_dir


def run_cell(
    source: Path, splits: Splits, strategy: str, n: int, seed: int, preset: Preset, device: str
) -> dict:
    train_split = take_per_class(splits.train, n, seed) if n else splits.train
    sub = Splits(train_split, splits.test)
    epochs = _epochs(len(train_split), preset)
    cfg = TrainConfig(
        model=MODEL,
        data=splits.info.name,
        epochs=epochs,
        batch_size=preset.batch_size,
        lr=LR[strategy],
        weight_decay=5e-4,
        seed=seed,
        device=device,
        eval_every=1000,  # only the final accuracy is reported: skip the per-epoch test passes
    )
    ft = FinetuneConfig(source=str(source), strategy=strategy, head_epochs=max(1, epochs // 3))
    start = time.perf_counter()
    result = finetune(ft, cfg, quiet=True, save=False, splits=sub)
    return {
        "accuracy": result.final_acc,
        "seconds": time.perf_counter() - start,
        "epochs": epochs,
        "train_images": len(train_split),
    }


def rewrite_report(out: str | Path = "reports/transfer") -> Path:
    """Re-render README.md and the plots from `results.json` (e.g. after the advisor's rules changed)."""
    from .transfer_report import write_report

    path = Path(out) / "results.json"
    if not path.exists():
        raise CnnzooError(f"no study results in {path}: run `cnnzoo study transfer` first")
    return write_report(json.loads(path.read_text()), Path(out))


def run_transfer_study(
    out: str | Path = "reports/transfer",
    *,
    quick: bool = False,
    seeds: int | None = None,
    device: str = "auto",
) -> Path:
    preset = PRESETS["quick" if quick else "full"]
    seeds = seeds or preset.seeds
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {"preset": "quick" if quick else "full", "seeds": seeds, "model": MODEL, "settings": []}
    cells = sum(len(s.sizes) for s in preset.settings) * len(STRATEGIES) * seeds
    bar = tqdm(total=cells, desc="transfer study", unit="run")
    for setting in preset.settings:
        source = pretrain_source(setting.source_data, out, preset.source_epochs, device)
        source_acc = json.loads((source / "best.json").read_text())["metrics"]["test_acc"]
        splits = load_dataset(setting.target_data)
        rows = []
        for n in setting.sizes:
            row = {"samples_per_class": n or "all", "cells": {}}
            for strategy in STRATEGIES:
                runs = []
                for seed in range(seeds):
                    runs.append(run_cell(source, splits, strategy, n, seed, preset, device))
                    bar.update(1)
                accs = [r["accuracy"] for r in runs]
                row["cells"][strategy] = {
                    "mean": statistics.fmean(accs),
                    "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "seconds": statistics.fmean(r["seconds"] for r in runs),
                    "runs": runs,
                }
            sub = Splits(take_per_class(splits.train, n, 0) if n else splits.train, splits.test)
            advice = advise(str(source), sub, device=device, seed=0)
            # the measured figures, not just the verdict: the report re-applies `recommend` to them
            row["advice"] = {
                "strategy": advice.strategy,
                "reasons": advice.reasons,
                "probe_source": advice.probe_source,
                "probe_random": advice.probe_random,
                "kept": advice.kept,
                "samples_per_class": advice.samples_per_class,
                "num_groups": advice.num_groups,
            }
            rows.append(row)
        results["settings"].append({**asdict(setting), "source_accuracy": source_acc, "rows": rows})
    bar.close()
    results["minutes"] = round((time.perf_counter() - started) / 60, 1)
    results["preset_config"] = {k: v for k, v in asdict(preset).items() if k != "settings"}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    from .transfer_report import write_report

    return write_report(results, out)


register_study(
    Study(
        name="transfer",
        summary="does the transfer-learning folklore hold? strategies x data size x source similarity",
        run=run_transfer_study,
        report=rewrite_report,
        default_out="reports/transfer",
    )
)
