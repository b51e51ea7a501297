"""What the run logs cost the training loop: TensorBoard events on against off, in one process.

    OMP_NUM_THREADS=1 python bench/bench_runlog.py              # 6 rounds of 3-epoch runs per variant
    OMP_NUM_THREADS=1 python bench/bench_runlog.py --rounds 10

LeNet-5's default recipe on 5,000 MNIST images (20 steps an epoch), the data and loaders built once; each
round trains a fresh model once with `tensorboard=False` and once with `tensorboard=True` (the order
alternating between rounds, so the shared machine's load falls on both alike), each a saved run folder
(checkpoints, metrics.jsonl, summary.csv; the events on the second). Reported: the training loop's seconds
per epoch (metrics.jsonl's `train_time`, epochs 2-3: the first warms up) and the process CPU seconds of a
whole run (every thread: TensorBoard's writer thread included; evaluation, checkpoints and logs too), as
medians and their ratio to the run without events.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from cnnzoo.engine import default_config, fit
from cnnzoo.engine.setup import RunContext, checkpoint_meta, load_splits, make_loaders
from cnnzoo.engine.tblog import tensorboard_installed
from cnnzoo.models import create_model


def one_run(cfg, splits, loaders, folder: Path) -> tuple[list[float], float]:
    info = splits.info
    torch.manual_seed(cfg.seed)
    model = create_model("lenet5", num_classes=info.num_classes, in_chans=info.channels)
    meta = checkpoint_meta("lenet5", {}, info, 28, info.channels, info.mean, info.std)
    folder.mkdir(parents=True)
    cpu = time.process_time()
    result = fit(model, loaders, cfg, RunContext(folder, meta, quiet=True), device=torch.device("cpu"))
    cpu = time.process_time() - cpu
    return [r["train_time"] for r in result.history[1:]], cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if not tensorboard_installed():
        raise SystemExit("the tensorboard package is not installed: pip install 'cnnzoo[tensorboard]'")
    cfg = replace(default_config("lenet5", "mnist"), train_subset=5000, epochs=3, checkpoint_minutes=0.0)
    splits = load_splits(cfg)
    info = splits.info
    loaders = make_loaders(
        splits,
        batch_size=cfg.batch_size,
        image_size=28,
        channels=info.channels,
        mean=info.mean,
        std=info.std,
        augment=cfg.augment,
        device=torch.device("cpu"),
        seed=cfg.seed,
    )
    loops: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for on in (False, True) if r % 2 == 0 else (True, False):
                loop, cpu = one_run(replace(cfg, tensorboard=on), splits, loaders, Path(tmp) / f"{r}-{on}")
                loops[on] += loop
                cpus[on].append(cpu)
                print(f"round {r} tensorboard {'on ' if on else 'off'}: loop {loop} s, run CPU {cpu:.3f} s")
    off_loop, off_cpu = statistics.median(loops[False]), statistics.median(cpus[False])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} rounds")
    print(f"{'variant':<16}{'loop s/epoch':>14}{'ratio':>8}{'run CPU s':>12}{'ratio':>8}")
    for on in (False, True):
        loop, cpu = statistics.median(loops[on]), statistics.median(cpus[on])
        name = "tensorboard on" if on else "tensorboard off"
        print(f"{name:<16}{loop:>14.3f}{loop / off_loop:>8.3f}{cpu:>12.3f}{cpu / off_cpu:>8.3f}")


if __name__ == "__main__":
    main()
