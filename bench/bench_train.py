"""LeNet-5 on MNIST: cnnzoo's default recipe against the usual Dataset + DataLoader loop, in one process.

    python bench/bench_train.py                    # epoch time, time to 99.0%, GFLOPS and the ratios
    python bench/bench_train.py --seeds 0,1,2      # cnnzoo's final accuracy over seeds (median): README's figures
    python bench/bench_train.py --baseline-epochs 1   # skip most of the baseline's run to 99% (~8 epochs)

The baseline is what a tutorial writes with torchvision: a `Dataset` whose `__getitem__` does what
torchvision's `MNIST.__getitem__` does (a PIL image from the uint8 array, `Image.fromarray(img.numpy(),
mode="L")`, then ToTensor + Normalize), a `DataLoader` with batch 128 and shuffling, the same LeNet-5 in
plain `torch.nn` layers (`tutorial_lenet5`: PyTorch's stock kernels, not cnnzoo's fast path), Adam at 1e-3,
evaluation after each epoch. cnnzoo runs its default recipe (`default_config("lenet5", "mnist")`) but
evaluates after every epoch, so that its time to 99% is measured honestly. Both train the same `lenet5`
on the same data and cores (cnnzoo's `lenet5` with its fast path). The epoch ratio comes from epochs run alternately (baseline, cnnzoo, baseline,
...: `--rounds`), so that the load of the shared machine falls on both alike; time to 99% comes from whole
runs, one after the other, and drifts with the machine's load more than the ratio does.

GFLOPS count LeNet-5's 416,520 multiply-accumulates per image forward (`cnnzoo summary lenet5`) as two
floating-point operations each, and training as three forward passes (forward, and backward's two
products: gradients of the inputs and of the weights).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

import cnnzoo
from cnnzoo.data import load_dataset
from cnnzoo.engine import default_config, train

MACS = 416_520  # LeNet-5 forward, per 28x28 image
TRAIN_FLOPS = 3 * 2 * MACS  # forward + backward (inputs and weights) per image


def gflops(images: int, seconds: float) -> float:
    return images * TRAIN_FLOPS / seconds / 1e9


def tutorial_lenet5() -> nn.Module:
    """LeNet-5 as a tutorial writes it: the lecture's layers (61,706 parameters, as cnnzoo's `lenet5`) in
    plain `torch.nn` modules, so the baseline runs PyTorch's stock kernels, not cnnzoo's fast path."""
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 6, 14, 14)
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),  # (B, 400)
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip
    assert sum(p.numel() for p in net.parameters()) == 61_706
    return net


class TorchvisionStyleMNIST(Dataset):
    """Per sample, what torchvision's MNIST and its ToTensor/Normalize transforms do."""

    def __init__(self, split, mean: float, std: float):
        self.data = split.images[:, 0]  # (N, 28, 28) uint8, as torchvision's MNIST.data
        self.targets, self.mean, self.std = split.labels, mean, std

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img, target = self.data[i], int(self.targets[i])
        with warnings.catch_warnings():  # Pillow >= 11.3 deprecates `mode`; torchvision still passes it
            warnings.simplefilter("ignore", DeprecationWarning)
            img = Image.fromarray(img.numpy(), mode="L")
        x = torch.from_numpy(np.array(img, np.uint8, copy=True))  # ToTensor: HWC uint8 -> CHW float in [0, 1]
        x = x.view(img.size[1], img.size[0], 1).permute(2, 0, 1).contiguous().float().div(255)
        return (x - self.mean) / self.std, target  # Normalize


@torch.no_grad()
def accuracy(model, loader) -> float:
    model.eval()
    correct = n = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
        n += len(y)
    model.train()
    return 100.0 * correct / n


class Baseline:
    """The tutorial's loop: per-sample loaders over MNIST, `tutorial_lenet5`, Adam at 1e-3."""

    def __init__(self):
        splits = load_dataset("mnist")
        mean, std = splits.info.mean[0], splits.info.std[0]
        self.train_loader = DataLoader(
            TorchvisionStyleMNIST(splits.train, mean, std), batch_size=128, shuffle=True
        )
        self.test_loader = DataLoader(TorchvisionStyleMNIST(splits.test, mean, std), batch_size=1000)
        self.images = len(splits.train)
        torch.manual_seed(0)
        self.model = tutorial_lenet5().train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def epoch(self) -> float:
        """Seconds for one training epoch."""
        start = time.perf_counter()
        for x, y in self.train_loader:
            self.opt.zero_grad()
            F.cross_entropy(self.model(x), y).backward()
            self.opt.step()
        return time.perf_counter() - start

    def loading_alone(self) -> float:
        """Seconds for one pass of the training loader with no model: the per-sample loading cost."""
        start = time.perf_counter()
        for _ in self.train_loader:
            pass
        return time.perf_counter() - start


def run_baseline(epochs: int, target: float, stop_at_target: bool) -> dict:
    base = Baseline()
    epoch_times, accs, reached = [], [], None
    start = time.perf_counter()
    for _ in range(epochs):
        epoch_times.append(base.epoch())
        accs.append(accuracy(base.model, base.test_loader))
        if reached is None and accs[-1] >= target:
            reached = time.perf_counter() - start
            if stop_at_target:
                break
    return {"epoch_s": min(epoch_times), "accs": accs, "time_to_target": reached, "images": base.images}


def epoch_rounds(cfg, rounds: int) -> tuple[list[float], list[float], float]:
    """Seconds of one training epoch (no test pass), the baseline's and cnnzoo's, alternating `rounds`
    times: whatever load the shared machine has falls on both sides alike, so the ratio holds. Also the
    baseline's loading alone."""
    base, base_s, ours_s = Baseline(), [], []
    for _ in range(rounds):
        base_s.append(base.epoch())
        with tempfile.TemporaryDirectory(prefix="cnnzoo-bench-") as run_dir:
            result = train(replace(cfg, epochs=1), run_dir=run_dir, quiet=True)
        ours_s.append(result.history[0]["train_time"])
    return base_s, ours_s, base.loading_alone()


def run_cnnzoo(epochs: int | None, target: float, seed: int) -> dict:
    cfg = replace(default_config("lenet5", "mnist", epochs=epochs, seed=seed), eval_every=1)
    with tempfile.TemporaryDirectory(prefix="cnnzoo-bench-") as run_dir:
        result = train(cfg, run_dir=run_dir, quiet=True)
    epoch_s = [r["train_time"] for r in result.history if "train_time" in r]
    reached = next((r["time"] for r in result.history if r.get("test_acc", 0) >= target), None)
    return {
        "cfg": cfg,
        "epoch_s": min(epoch_s),
        "accs": [r["test_acc"] for r in result.history],
        "time_to_target": reached,
        "total_s": result.history[-1]["time"],
        "images": 60_000,
    }


def run_floor(cfg) -> float:
    """Seconds for one epoch of LeNet-5's own arithmetic in the recipe's batch size, precision and
    optimizer: forward, backward and step on one batch that already sits in memory, no data pipeline."""
    from cnnzoo.engine.optim import build_optimizer
    from cnnzoo.runtime import autocast_dtype

    amp = autocast_dtype(cfg.precision, torch.device("cpu"))
    model = cnnzoo.create_model("lenet5").train()
    opt = build_optimizer(cfg, model.parameters())
    x, y = torch.randn(cfg.batch_size, 1, 28, 28), torch.randint(0, 10, (cfg.batch_size,))
    steps = -(-60_000 // cfg.batch_size)
    for i in range(steps + 20):  # 20 warm-up steps: oneDNN builds its kernels on the first calls
        if i == 20:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line)
        flags = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in text]
        return f"{name} ({', '.join(flags) or 'no avx512_bf16/amx'})"
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def fmt_s(seconds) -> str:
    return "[" + ", ".join(f"{t:.2f}" for t in seconds) + "] s"


def fmt_reached(seconds: float | None) -> str:
    """Seconds to the target accuracy, to a tenth ("69.2 s"), or that it was not reached."""
    return "not reached" if seconds is None else f"{seconds:.1f} s"


def fmt_accs(accs) -> str:
    return "[" + ", ".join(f"{a:.2f}" for a in accs) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="cnnzoo epochs (default: its recipe)")
    parser.add_argument("--seeds", default="0", help="cnnzoo seeds, comma-separated (default 0)")
    parser.add_argument("--baseline-epochs", type=int, default=8, help="at most this many (default 8)")
    parser.add_argument("--target", type=float, default=99.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating epochs for the epoch ratio (default 3)"
    )
    parser.add_argument("--all-baseline-epochs", action="store_true", help="do not stop at the target")
    args = parser.parse_args()
    cpu0, wall0 = os.times(), time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs: {cpu_name()}"
    )

    runs = [run_cnnzoo(args.epochs, args.target, int(s)) for s in args.seeds.split(",")]
    cfg = runs[0]["cfg"]
    print(
        f"cnnzoo  : {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr}, {cfg.schedule}, "
        f"precision {cfg.precision}"
    )
    for seed, ours in zip(args.seeds.split(","), runs, strict=True):
        print(
            f"  seed {seed}: {ours['epoch_s']:.2f} s/epoch (fastest), {gflops(ours['images'], ours['epoch_s']):.1f} "
            f"GFLOPS; test acc per epoch {fmt_accs(ours['accs'])}; time to {args.target}%: "
            f"{fmt_reached(ours['time_to_target'])}; whole run {ours['total_s']:.1f} s"
        )
    ours = runs[0]
    if len(runs) > 1:
        finals = [r["accs"][-1] for r in runs]
        print(f"  final accuracy over {len(runs)} seeds: median {statistics.median(finals):.2f}%, {finals}")

    base = run_baseline(args.baseline_epochs, args.target, stop_at_target=not args.all_baseline_epochs)
    print(
        f"baseline: {base['epoch_s']:.2f} s/epoch (fastest), {gflops(base['images'], base['epoch_s']):.1f} GFLOPS; "
        f"test acc per epoch {fmt_accs(base['accs'])}; time to {args.target}%: {fmt_reached(base['time_to_target'])}"
    )

    floor = min(run_floor(cfg) for _ in range(2))
    print(
        f"LeNet-5 arithmetic alone (batch {cfg.batch_size}, {cfg.optimizer}, precision {cfg.precision}, no data): "
        f"{floor:.2f} s/epoch, {gflops(60_000, floor):.1f} GFLOPS"
    )
    base_s, ours_s, loading = epoch_rounds(cfg, args.rounds)
    ratios = [b / o for b, o in zip(base_s, ours_s, strict=True)]
    print(
        f"one epoch, alternating baseline/cnnzoo x{args.rounds}: baseline {fmt_s(base_s)}, cnnzoo {fmt_s(ours_s)} "
        f"({gflops(60_000, min(ours_s)):.1f} GFLOPS at the fastest)"
    )
    print(
        f"epoch speed-up vs baseline: {min(base_s) / min(ours_s):.1f}x (fastest vs fastest; per round "
        f"{', '.join(f'{r:.1f}x' for r in ratios)})"
    )
    print(f"cnnzoo epoch vs its arithmetic alone: {min(ours_s) / floor:.2f}x")
    print(
        f"the baseline's per-sample loading alone (no model): {loading:.2f} s per epoch, "
        f"{100 * loading / min(base_s):.0f}% of its fastest epoch"
    )
    if ours["time_to_target"] and base["time_to_target"]:
        print(f"time-to-{args.target}% speed-up: {base['time_to_target'] / ours['time_to_target']:.1f}x")
    cpu1 = os.times()
    busy = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / (time.perf_counter() - wall0)
    print(
        f"cores used on average: {busy:.2f} of {torch.get_num_threads()} threads "
        "(less means other processes shared the cores: seconds are then inflated, ratios less so)"
    )


if __name__ == "__main__":
    main()
