"""How fast does InMemoryLoader hand out batches? Images per second of pure iteration (no model).

    python bench/bench_loader.py                 # MNIST (vendored) and a CIFAR-sized synthetic set, CPU
    python bench/bench_loader.py --device cuda --batch-size 512
    python bench/bench_loader.py --threads 1     # torch.set_num_threads first (try it on a busy machine)

For each augmentation alone and all together, and for comparison a per-sample `torch.utils.data.Dataset`
(`__getitem__` converts, normalises and randomly crops one image) behind a `DataLoader` with the same batch
size: the last column is InMemoryLoader's speed over that baseline's with the same augmentation (crop).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cnnzoo.data.augment import AugmentConfig
from cnnzoo.data.base import ArrayDataset, DatasetInfo
from cnnzoo.data.loader import InMemoryLoader

CONFIGS = ["none", "crop=2", "flip", "affine", "rrc", "cutout=8", "crop=2,flip,affine,rrc,cutout=8"]


class PerSample(Dataset):
    """The usual way: one image at a time, converted, normalised and randomly cropped in __getitem__."""

    def __init__(self, data: ArrayDataset, padding: int):
        self.images, self.labels, self.padding = data.images, data.labels, padding
        self.mean = torch.tensor(data.info.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.info.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = (self.images[i].float() / 255 - self.mean) / self.std
        if self.padding:
            p = self.padding
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = F.pad(x, (p, p, p, p))[:, dy : dy + x.shape[1], dx : dx + x.shape[2]]
        return x, self.labels[i]


def datasets() -> dict[str, ArrayDataset]:
    out = {}
    try:
        from cnnzoo.data import load_dataset

        out["mnist"] = load_dataset("mnist", progress=False).train
    except Exception as e:  # the benchmark runs on synthetic data instead
        print(f"(mnist unavailable: {e}; using synthetic 60000x1x28x28)")
        images = torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8)
        out["mnist-like"] = ArrayDataset(images, torch.randint(0, 10, (60000,)), _info("mnist-like", 1, 28))
    images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8)
    out["cifar-like"] = ArrayDataset(images, torch.randint(0, 10, (50000,)), _info("cifar-like", 3, 32))
    return out


def _info(name: str, channels: int, size: int) -> DatasetInfo:
    return DatasetInfo(name, tuple("0123456789"), size, channels, (0.5,) * channels, (0.25,) * channels)


def rate(loader, epochs: int, device: torch.device) -> tuple[float, float]:
    """(images per second, seconds per epoch), best of `epochs` timed epochs after one warm-up epoch."""
    best = float("inf")
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        n = 0
        for x, _ in loader:
            n += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch:
            best = min(best, time.perf_counter() - start)
    return n / best, best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (best is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-sample DataLoader")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"batch {args.batch_size}, device {device}, torch threads {torch.get_num_threads()}")
    for name, data in datasets().items():
        baseline = {}
        if not args.no_baseline and device.type == "cpu":
            for pad in (0, 2):
                dl = DataLoader(PerSample(data, pad), batch_size=args.batch_size, shuffle=True)
                baseline[pad] = rate(dl, 1, device)[0]
            print(f"{name}: per-sample Dataset+DataLoader  none {baseline[0]:>10,.0f} img/s   "
                  f"crop=2 {baseline[2]:>10,.0f} img/s")  # fmt: skip
        print(f"{name}: {'augment':34s} {'img/s':>12s} {'s/epoch':>9s} {'x baseline':>11s}")
        for spec in CONFIGS:
            cfg = AugmentConfig.parse(spec)
            loader = InMemoryLoader(data, args.batch_size, device=device, augment=cfg)
            images_s, seconds = rate(loader, args.epochs, device)
            base = baseline.get(cfg.crop_padding) if spec in ("none", "crop=2") else None
            ratio = f"{images_s / base:10.0f}x" if base else ""
            print(f"{name}: {spec:34s} {images_s:12,.0f} {seconds:9.3f} {ratio:>11s}")


if __name__ == "__main__":
    main()
