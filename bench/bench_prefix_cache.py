"""`last:N`'s prefix cache: how much faster is an epoch when the frozen groups run once, and is it as accurate?

    python bench/bench_prefix_cache.py --epochs 3 --lr 0.02              # ResNet-18 (128 px) and LeNet-5, last:1
    python bench/bench_prefix_cache.py --models resnet18 --strategy last:2 --target-images 5000

Each model is pretrained briefly on MNIST (one epoch on `--pretrain-images` images; ResNet-18, an ImageNet
network, at `--resnet-size` pixels: at MNIST's 28 its last stage sees 1x1 maps, and its 8.4M weights'
gradients and update, not the frozen stages, are most of a step), then fine-tuned with
`--strategy` on Fashion-MNIST (a real dataset; `--target-images` of its training images, `--test-images` of
its test images), the same data, epochs, rate, batch and seed two ways, interleaved seed by seed:

    per-epoch   `finetune(..., prefix_cache=False)`: every epoch pushes every image through the frozen groups
    cached      `finetune(...)` (the default): the frozen groups run once over the training and test images,
                their outputs are cached (`cnnzoo/engine/frozen.py`), and each epoch runs the trainable
                groups only

Epoch time: the training loop's own seconds per epoch, as CPU seconds of this process (the machine is
shared: other jobs' load slows the wall clock, not this process's CPU time; one torch thread) and as wall
seconds (`train_time` in metrics.jsonl); medians over every epoch of every seed, and the ratio per seed.
Total: the whole `finetune` call, loading, caching and the final test pass included (CPU seconds).
The two should end on the same weights, hence the same accuracy, up to float rounding.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from cnnzoo.data import load_dataset
from cnnzoo.data.base import Splits
from cnnzoo.engine import TrainConfig, loop, train
from cnnzoo.transfer.finetune import FinetuneConfig, finetune


def make_source(model: str, images: int, out: Path, size: int) -> str:
    cfg = TrainConfig(
        model=model, data="mnist", epochs=1, batch_size=64, lr=0.05, train_subset=images, image_size=size
    )
    result = train(cfg, run_dir=out, quiet=True)
    return f"{model} after 1 epoch on {images:,} MNIST images ({result.final_acc:.1f}% on MNIST test)"


def subset(splits: Splits, train: int, test: int) -> Splits:
    gen = torch.Generator().manual_seed(0)
    keep_train = torch.randperm(len(splits.train), generator=gen)[:train] if train else None
    keep_test = torch.randperm(len(splits.test), generator=gen)[:test] if test else None
    return Splits(
        splits.train.subset(keep_train) if train else splits.train,
        splits.test.subset(keep_test) if test else splits.test,
    )


EPOCH_CPU: list[float] = []  # the CPU seconds of each training epoch, appended by the wrapper below


def _timed_epochs() -> None:
    """Wrap the engine's epoch function (looked up by `fit` at each call) to record its CPU seconds."""
    inner = loop._train_epoch

    def timed(*args, **kwargs):
        start = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            EPOCH_CPU.append(time.process_time() - start)

    loop._train_epoch = timed


def run(source: Path, splits: Splits, strategy: str, cfg: TrainConfig, cache: bool) -> dict:
    start = time.process_time()
    EPOCH_CPU.clear()
    ft = FinetuneConfig(source=str(source), strategy=strategy, prefix_cache=cache)
    result = finetune(ft, cfg, quiet=True, save=False, splits=splits)
    return {
        "total": time.process_time() - start,
        "epochs": list(EPOCH_CPU),
        "wall": [r["train_time"] for r in result.history],
        "acc": result.final_acc,
    }


def bench_model(model: str, args, splits: Splits, work: Path) -> tuple[float, float]:
    t = time.perf_counter()
    resnet = model.startswith("resnet")
    size = args.resnet_size if resnet else 0  # 0: the dataset's own 28 px
    images = args.pretrain_images if resnet else 10 * args.pretrain_images  # LeNet-5 needs more, is fast
    described = make_source(model, images, work / model, size)
    print(f"\n{model}: source {described} ({time.perf_counter() - t:.0f} s)")
    cfg = TrainConfig(
        model=model,
        data="fashion-mnist",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        precision=args.precision,
        device=args.device,
        augment="none",
        eval_every=args.epochs,  # one test pass, after the last epoch
    )
    warm = subset(splits, 256, 256)  # not timed: first passes pay for allocations and kernel choices
    for cache in (False, True):
        run(work / model, warm, args.strategy, replace(cfg, epochs=1), cache)
    runs = {"per-epoch": [], "cached": []}
    for seed in range(args.seeds):  # interleaved, so that drifting machine load hits both alike
        c = replace(cfg, seed=seed)
        for name, cache in (("per-epoch", False), ("cached", True)):
            runs[name].append(run(work / model, splits, args.strategy, c, cache))
        print(
            f"  seed {seed}: "
            + "; ".join(
                f"{k} {v[-1]['total']:.1f} s total, epochs {', '.join(f'{e:.2f}' for e in v[-1]['epochs'])} CPU s "
                f"({', '.join(f'{e:.1f}' for e in v[-1]['wall'])} wall), "
                f"{v[-1]['acc']:.2f}%"
                for k, v in runs.items()
            )
        )
    stats = {}
    for name, results in runs.items():
        epoch = statistics.median(e for r in results for e in r["epochs"])
        wall = statistics.median(e for r in results for e in r["wall"])
        total = statistics.median(r["total"] for r in results)
        accs = [r["acc"] for r in results]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        stats[name] = (epoch, total, statistics.fmean(accs), spread)
        print(
            f"  {name:<9}: epoch {epoch:6.2f} CPU s ({wall:.2f} wall s), total {total:6.1f} CPU s, test accuracy "
            f"{stats[name][2]:.2f}% ± {spread:.2f} (per seed: {', '.join(f'{a:.2f}' for a in accs)})"
        )
    pairs = [  # each seed's two runs ran minutes apart: their ratio is the least disturbed by the load
        statistics.median(p["epochs"]) / statistics.median(c["epochs"])
        for p, c in zip(runs["per-epoch"], runs["cached"], strict=True)
    ]
    print(f"  per seed, median epoch CPU time per-epoch / cached: {', '.join(f'{r:.1f}x' for r in pairs)}")
    (pe, pt, pa, ps), (ce, ct, ca, cs) = stats["per-epoch"], stats["cached"]
    gap = round(ca - pa, 2) + 0.0  # + 0.0: no "-0.00"
    within = "within" if abs(gap) <= max(ps, cs) else "OUTSIDE"
    print(
        f"  summary {model} {args.strategy}: an epoch {statistics.median(pairs):.1f}x faster with the cache (median "
        f"of the seeds' ratios of CPU time; pooled medians {pe:.2f} s -> {ce:.2f} s), "
        f"the whole run {pt / ct:.1f}x ({pt:.1f} s -> {ct:.1f} s, caching included); accuracy {ca:.2f}% cached vs "
        f"{pa:.2f}% per-epoch ({gap:+.2f} points, {within} the seeds' spread of {max(ps, cs):.2f})"
    )
    return statistics.median(pairs), gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,lenet5")
    parser.add_argument("--strategy", default="last:1")
    parser.add_argument("--pretrain-images", type=int, default=1000)
    parser.add_argument(
        "--resnet-size",
        type=int,
        default=128,
        help="ResNet sources' (and so targets') image side (default 128; at 64 the last stage's 2x2 maps make "
        "it the least efficient part, and the cache's gain smaller)",
    )
    parser.add_argument("--target-images", type=int, default=1000, help="Fashion-MNIST training images")
    parser.add_argument("--test-images", type=int, default=1000, help="Fashion-MNIST test images (0 = all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    _timed_epochs()
    splits = subset(load_dataset("fashion-mnist"), args.target_images, args.test_images)
    print(
        f"target: fashion-mnist, {len(splits.train):,} train / {len(splits.test):,} test images; strategy "
        f"{args.strategy}, {args.epochs} epochs of batch {args.batch_size}, lr {args.lr}, {args.precision}, "
        f"seeds 0..{args.seeds - 1}"
    )
    work = Path(tempfile.mkdtemp(prefix="cnnzoo-bench-prefix-"))
    summary = {m: bench_model(m, args, splits, work) for m in args.models.split(",")}
    print()
    for model, (speedup, gap) in summary.items():
        print(f"{model} {args.strategy}: epoch {speedup:.1f}x faster cached, accuracy {gap:+.2f} points")


if __name__ == "__main__":
    main()
