"""LeNet-5 on MNIST: cnnzoo's engine against the usual Dataset + DataLoader baseline, in one process.

    python bench/bench_train.py                 # epoch time ratio and time to 99.0% test accuracy
    python bench/bench_train.py --epochs 1      # just the epoch-time ratio

The baseline is what a tutorial writes: a `Dataset` whose `__getitem__` turns one uint8 image into a
normalised float tensor (as torchvision's ToTensor + Normalize do), a `DataLoader` with batch 64 and
shuffling, Adam at 1e-3, evaluation after each epoch. Both train the same `lenet5` from cnnzoo on the
same data, on the same cores, one after the other; figures are printed as a ratio because the machine
is shared and absolute seconds drift.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import cnnzoo
from cnnzoo.data import load_dataset
from cnnzoo.engine import default_config, train


class PerSampleMNIST(Dataset):
    def __init__(self, split, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = split.images, split.labels, mean, std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float().div(255)  # ToTensor
        return (x - self.mean) / self.std, int(self.labels[i])  # Normalize


@torch.no_grad()
def accuracy(model, loader) -> float:
    model.eval()
    correct = n = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
        n += len(y)
    model.train()
    return 100.0 * correct / n


def run_baseline(epochs: int, target: float) -> dict:
    splits = load_dataset("mnist")
    mean, std = splits.info.mean[0], splits.info.std[0]
    train_loader = DataLoader(PerSampleMNIST(splits.train, mean, std), batch_size=64, shuffle=True)
    test_loader = DataLoader(PerSampleMNIST(splits.test, mean, std), batch_size=1000)
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    epoch_times, accs, reached = [], [], None
    start = time.perf_counter()
    for _ in range(epochs):
        t = time.perf_counter()
        for x, y in train_loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        epoch_times.append(time.perf_counter() - t)
        accs.append(accuracy(model, test_loader))
        if reached is None and accs[-1] >= target:
            reached = time.perf_counter() - start
    return {"epoch_s": min(epoch_times), "accs": accs, "time_to_target": reached}


def run_cnnzoo(epochs: int | None, target: float) -> dict:
    cfg = default_config("lenet5", "mnist", epochs=epochs)
    result = train(cfg, run_dir=f"/tmp/cnnzoo-bench-{time.time_ns()}", quiet=True)
    epoch_s = [r["train_time"] for r in result.history if "train_time" in r]
    reached = next((r["time"] for r in result.history if r["test_acc"] >= target), None)
    return {
        "epoch_s": min(epoch_s) if epoch_s else None,
        "accs": [r["test_acc"] for r in result.history],
        "time_to_target": reached,
        "epochs": cfg.epochs,
    }


def run_floor(batch_size: int, precision: str) -> float:
    """Seconds for one epoch of LeNet-5's own arithmetic: forward, backward and SGD step on batches that
    already sit in memory, normalised: no data pipeline at all. No loader can make an epoch faster."""
    from cnnzoo.engine.train import autocast_dtype

    amp = autocast_dtype(precision, torch.device("cpu"))
    model = cnnzoo.create_model("lenet5")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x, y = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    steps = -(-60_000 // batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="cnnzoo epochs (default: its recipe)")
    parser.add_argument("--baseline-epochs", type=int, default=10)
    parser.add_argument("--target", type=float, default=99.0)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    ours = run_cnnzoo(args.epochs, args.target)
    print(
        f"cnnzoo  : {ours['epoch_s']:.2f} s/epoch (fastest), test acc per epoch {[round(a, 2) for a in ours['accs']]}"
    )
    print(f"          time to {args.target}%: {ours['time_to_target']} s; final {ours['accs'][-1]:.2f}%")
    base = run_baseline(args.baseline_epochs, args.target)
    print(
        f"baseline: {base['epoch_s']:.2f} s/epoch (fastest), test acc per epoch {[round(a, 2) for a in base['accs']]}"
    )
    print(f"          time to {args.target}%: {base['time_to_target']} s")
    print(f"epoch speed-up: {base['epoch_s'] / ours['epoch_s']:.1f}x")
    cfg = default_config("lenet5", "mnist")
    floor = min(run_floor(cfg.batch_size, cfg.precision) for _ in range(2))
    print(
        f"model arithmetic alone (batch {cfg.batch_size}, {cfg.precision} precision, no data pipeline): "
        f"{floor:.2f} s/epoch, so no input pipeline can beat the baseline by more than "
        f"{base['epoch_s'] / floor:.1f}x on this machine"
    )
    if ours["time_to_target"] and base["time_to_target"]:
        print(f"time-to-{args.target}% speed-up: {base['time_to_target'] / ours['time_to_target']:.1f}x")


if __name__ == "__main__":
    main()
