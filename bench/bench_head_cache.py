"""The `head` strategy's feature cache: how much faster than running the frozen backbone every epoch?

    python bench/bench_head_cache.py                        # a random-weight resnet20 -> digits
    python bench/bench_head_cache.py --precision fp32       # the per-epoch run in fp32, like the cache
    python bench/bench_head_cache.py --pretrain-images 2000 # resnet20 after one epoch on 2,000 MNIST images
    python bench/bench_head_cache.py --epochs 20 --data fashion-mnist --target-images 5000

Two ways to train only a new classifier on a frozen backbone, same data, epochs, rate, batch, seed:

    cached    `finetune(strategy="head")`: the backbone runs once over the training and test images,
              then each epoch is a logistic regression on the stored vectors
    per-epoch the textbook way: `freeze(model, "head")` and `fit(...)`, so every epoch pushes every image
              through the frozen backbone again (evaluated once, after the last epoch, like `cached`)

Both times include loading the source and preparing the batches. The accuracies should be close (same
features, same optimizer and schedule; only the order of the batches and, under bf16 autocast, the
backbone's rounding differ). A third run caches mirrored copies too (`--cache-flip`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from cnnzoo.artifacts.checkpoint import save_checkpoint
from cnnzoo.data import load_dataset
from cnnzoo.data.base import Splits
from cnnzoo.engine import TrainConfig, train
from cnnzoo.engine.loop import fit
from cnnzoo.engine.setup import RunContext, checkpoint_meta
from cnnzoo.models import create_model
from cnnzoo.runtime import autocast_dtype, resolve_device
from cnnzoo.transfer import freeze, load_source, param_groups
from cnnzoo.transfer.finetune import FinetuneConfig, finetune, source_loaders


def make_source(model: str, images: int, out: Path) -> tuple[Path, str]:
    """A `model` checkpoint: one epoch on `images` MNIST images, or random weights when `images` is 0."""
    if images:
        cfg = TrainConfig(model=model, data="mnist", epochs=1, batch_size=64, lr=0.05, train_subset=images)
        result = train(cfg, run_dir=out, quiet=True)
        return (
            out,
            f"{model} after 1 epoch on {images:,} MNIST images ({result.final_acc:.1f}% on MNIST test)",
        )
    mnist = load_dataset("mnist").info
    torch.manual_seed(0)
    net = create_model(model, num_classes=mnist.num_classes, in_chans=mnist.channels)
    meta = checkpoint_meta(model, {}, mnist, mnist.image_size, mnist.channels, mnist.mean, mnist.std)
    save_checkpoint(out, "best", net, meta)
    return out, f"{model} with random weights"


def run_cached(source: Path, splits: Splits, cfg: TrainConfig, flip: bool) -> tuple[float, float]:
    start = time.perf_counter()
    ft = FinetuneConfig(source=str(source), strategy="head", cache_flip=flip)
    result = finetune(ft, cfg, quiet=True, save=False, splits=splits)
    return time.perf_counter() - start, result.final_acc


def run_per_epoch(source: Path, splits: Splits, cfg: TrainConfig) -> tuple[float, float]:
    """What `finetune(strategy="head")` does, without the cache: the frozen backbone runs every epoch."""
    start = time.perf_counter()
    info = splits.info
    torch.manual_seed(cfg.seed)
    src = load_source(str(source), num_classes=info.num_classes, in_chans=info.channels)
    model = src.model
    device = resolve_device(cfg.device)
    _, loaders = source_loaders(splits, src, cfg, device)
    freeze(model, "head")
    ctx = RunContext(Path(tempfile.gettempdir()) / "unused", {}, quiet=True, save=False)
    result = fit(model, loaders, cfg, ctx, device=device, param_groups=param_groups(model, cfg.lr))
    return time.perf_counter() - start, result.final_acc


def warm_up(model: str, channels: int, size: int, cfg: TrainConfig) -> None:
    """Not timed: the first passes through a network pay for allocations and kernel choices."""
    device = resolve_device(cfg.device)
    net = create_model(model, num_classes=10, in_chans=channels).to(device)
    x = torch.randn(cfg.batch_size, channels, size, size, device=device)
    amp = autocast_dtype(cfg.precision, device)
    for _ in range(3):
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            net.train()(x).sum().backward()
        with torch.no_grad():
            net.eval()(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument(
        "--pretrain-images", type=int, default=0, help="MNIST images for one epoch of the source; 0 = random"
    )
    parser.add_argument("--data", default="digits", help="the target dataset (default digits)")
    parser.add_argument(
        "--target-images", type=int, default=0, help="use only the first N training images; 0 = all"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--precision", default="auto", help="of the per-epoch run (the cache is fp32)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=3, help="repeat each run with seeds 0..N-1")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    t = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="cnnzoo-bench-head-"))
    source, described = make_source(args.model, args.pretrain_images, work / "source")
    print(f"source: {described} ({time.perf_counter() - t:.1f} s)")
    splits = load_dataset(args.data)
    if args.target_images:
        gen = torch.Generator().manual_seed(0)
        keep = torch.randperm(len(splits.train), generator=gen)[: args.target_images]
        splits = Splits(splits.train.subset(keep), splits.test)
    cfg = TrainConfig(
        model=args.model,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        precision=args.precision,
        device=args.device,
        eval_every=args.epochs,  # one test pass, after the last epoch, as the cached run does
    )
    print(
        f"target: {args.data}, {len(splits.train):,} train / {len(splits.test):,} test images; "
        f"{args.epochs} epochs of batch {args.batch_size}, {cfg.optimizer} at lr {args.lr}, {cfg.schedule}"
    )
    warm_up(args.model, splits.info.channels, 28, cfg)

    runs = {"per-epoch backbone": [], "cached features": [], "cached + flipped": []}
    for seed in range(args.seeds):  # interleaved, so that drifting machine load hits every method alike
        c = replace(cfg, seed=seed)
        runs["per-epoch backbone"].append(run_per_epoch(source, splits, c))
        runs["cached features"].append(run_cached(source, splits, c, flip=False))
        runs["cached + flipped"].append(run_cached(source, splits, c, flip=True))
        print(f"seed {seed}: " + "; ".join(f"{k} {s:.2f} s {a:.2f}%" for k, ((s, a), *_) in ((k, v[-1:]) for k, v in runs.items())))  # fmt: skip
    print()
    stats = {}
    for name, results in runs.items():
        secs, accs = [s for s, _ in results], [a for _, a in results]
        stats[name] = (statistics.median(secs), statistics.fmean(accs))
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        print(
            f"{name:<19}: {stats[name][0]:7.2f} s (median)   test accuracy {stats[name][1]:.2f}%{spread}"
            f" (per seed: {', '.join(f'{a:.2f}' for a in accs)})"
        )
    (per_s, per_acc), (cached_s, cached_acc), (flip_s, flip_acc) = stats.values()
    gap = round(cached_acc - per_acc, 2) + 0.0  # + 0.0: no "-0.00"
    print()
    print(
        f"summary: caching the frozen {args.model}'s features makes {args.epochs} head epochs "
        f"{per_s / cached_s:.1f}x faster ({per_s:.2f} s -> {cached_s:.2f} s, per-epoch run in {args.precision} "
        f"precision); mean test accuracy {cached_acc:.2f}% cached vs {per_acc:.2f}% per-epoch "
        f"({gap:+.2f} points over {args.seeds} seed(s)). Caching mirrored copies too: "
        f"{flip_acc:.2f}% ({flip_acc - cached_acc:+.2f} points) in {flip_s:.2f} s"
        + ("" if splits.info.flip else f" ({args.data}'s classes are not mirror-invariant)")
        + "."
    )


if __name__ == "__main__":
    main()
