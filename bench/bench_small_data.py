"""The recipe scaled to small data (issue 21): LeNet-5 on a folder of 1,500 clothes pictures, as a new user
would point cnnzoo at their own (a couple of minutes on 2 cores).

    python bench/bench_small_data.py                  # makes the folder in a temporary directory, seeds 0,1,2
    python bench/bench_small_data.py --folder /tmp/clothes --seeds 0

The folder is `scripts/make_clothes_folder.py`'s (Fashion-MNIST, 150 a class, 1,200 train / 300 test, mixed
formats and sizes, a third RGB). Each case runs as `cnnzoo train lenet5 --data folder:F [FLAGS]` resolves
it (the recipe scaled to the data where the flags leave it free), beside the unscaled recipe of before:

    defaults        no flags                 goal >= 75%
    epochs3         --epochs 3               goal >= 60%
    lrfind          `cnnzoo lr-find lenet5 --data folder:F` (seed 0), then train with --lr SUGGESTION
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
from pathlib import Path

from cnnzoo import train
from cnnzoo.engine import default_config
from cnnzoo.engine import train as train_config
from cnnzoo.engine.lr_find import lr_find_model

CASES = {"defaults": ({}, 75.0), "epochs3": ({"epochs": 3}, 60.0)}
ROOT = Path(__file__).resolve().parent.parent


def make_folder(out: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_clothes_folder", ROOT / "scripts/make_clothes_folder.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_folder(out)


def run_lr_find(data: str, seeds: list[int]) -> None:
    """The range test's suggestion, and the scaled recipe trained at that rate instead of the rule's."""
    sweep, cfg = lr_find_model(default_config("lenet5", data), given=set(), png=None, quiet=True)
    rate = float(f"{sweep.suggestion:.3g}")
    accs = [
        train("lenet5", data=data, seed=s, lr=rate, tensorboard=False, quiet=True).final_acc for s in seeds
    ]
    print(
        f"lrfind    {sweep.describe()}; trained at --lr {rate:g} (the rule's: {cfg.lr:g}): "
        f"{' / '.join(f'{a:.2f}' for a in accs)}% (median {statistics.median(accs):.2f}%)",
        flush=True,
    )


def run(folder: Path, seeds: list[int], cases: list[str]) -> None:
    data = f"folder:{folder}"
    if "lrfind" in cases:
        run_lr_find(data, seeds)
    for name, (flags, goal) in CASES.items():
        if name not in cases:
            continue
        scaled, before = [], []
        for seed in seeds:
            result = train("lenet5", data=data, seed=seed, tensorboard=False, quiet=True, **flags)
            scaled.append(result.final_acc)
            unscaled = default_config("lenet5", data, seed=seed, tensorboard=False, **flags)
            before.append(train_config(unscaled, save=False, quiet=True).final_acc)  # as configured
        verdict = "met" if min(scaled) >= goal else "NOT met"
        shown = " / ".join(f"{a:.2f}" for a in scaled)
        print(
            f"{name:<9} {' '.join(f'--{k} {v}' for k, v in flags.items()) or '(no flags)':<12} scaled recipe "
            f"{shown}% (median {statistics.median(scaled):.2f}%); unscaled recipe "
            f"{' / '.join(f'{a:.2f}' for a in before)}%; goal {goal}% at every seed: {verdict}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="an existing clothes folder (default: make one)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("cases", nargs="*", help="of defaults, epochs3, lrfind (default: all)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cases = args.cases or [*CASES, "lrfind"]
    if args.folder:
        run(args.folder, seeds, cases)
        return
    with tempfile.TemporaryDirectory() as tmp:
        make_folder(Path(tmp) / "clothes")
        run(Path(tmp) / "clothes", seeds, cases)


if __name__ == "__main__":
    main()
