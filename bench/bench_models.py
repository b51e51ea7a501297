"""Forward and training speed (images/s) of every registered model, for the architecture study.

    python bench/bench_models.py                          # all models -> reports/architectures/speed.json
    python bench/bench_models.py --models "resnet*,lenet5" --out /tmp/speed.json
    python bench/bench_models.py --device cuda --batch 64 --native-batch 32

Each model is measured at a common small input (32x32, or its minimum input size where that is larger,
with the batch shrunk to keep the pixels per batch, but at least 2: Inception v3's minimum is 299) and
at its native size (`cnnzoo models`' input size) where that differs and fits the budget (`--max-native-gmacs`, forward multiply-accumulates per image; larger models are listed as skipped with
the reason), in every combination of memory format (NCHW, channels_last) and precision (float32,
bfloat16 autocast). Forward is `model.eval()` under `torch.inference_mode()`; training is one SGD step
(forward in train mode, cross-entropy, backward, step) on random images and labels. Few iterations
each (calls for at least `--min-time` seconds after one warm-up call, the fastest call counted), so the
whole script takes minutes: the figures compare architectures and settings, they are not tuned maxima.

The JSON file: {"meta": {...machine and settings...}, "results": [one row per (model, size, memory
format, precision)]}, each row with model, family, params, size_kind ("small" or "native"), input
(C, H, W), batch, channels_last, precision, macs (forward, per image), forward_img_s, train_img_s,
forward_gflops, train_gflops (training counted as 3 forward passes), and error or skipped where a
measurement could not be made.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

import cnnzoo
from cnnzoo.models import count_params, model_info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, min_time: float, max_iters: int, warmup: int) -> tuple[float, int]:
    """Seconds of the fastest call of `fn` (after `warmup` calls), called until `min_time` has passed or
    `max_iters` calls were made. The fastest, not the mean: on a machine shared with other jobs a burst of
    load only ever slows a call down, so the minimum is the figure least touched by it."""
    for _ in range(warmup):
        fn()
    sync(device)
    start, n, best = time.perf_counter(), 0, float("inf")
    while n < max_iters:
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
        n += 1
        if time.perf_counter() - start >= min_time:
            break
    return best, n


def scaled_batch(batch: int, side: int, size: int) -> int:
    """`batch` images of side `side` hold as many pixels as this many of side `size`; at least 2, since
    BatchNorm in training mode needs more than one value per channel (Inception v3's 1x1 auxiliary maps)."""
    return max(2, min(batch, round(batch * (side / size) ** 2)))


def loss_of(output, y: torch.Tensor) -> torch.Tensor:
    if isinstance(output, tuple):  # Inception-v3's auxiliary head in training mode
        main, *aux = output
        return F.cross_entropy(main, y) + sum(0.3 * F.cross_entropy(a, y) for a in aux if a is not None)
    return F.cross_entropy(output, y)


def forward_macs(name: str, chans: int, size: int) -> int | None:
    from cnnzoo.summary import summarize

    try:
        model = cnnzoo.create_model(name)
        return int(summarize(model, (chans, size, size)).total_macs)
    except Exception:  # noqa: BLE001 - the speed rows are still useful without it
        return None


def measure(name: str, size: int, batch: int, channels_last: bool, precision: str, args, device) -> dict:
    info = model_info(name)
    amp = torch.bfloat16 if precision == "bf16" else None
    torch.manual_seed(0)
    model = cnnzoo.create_model(name).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(batch, info.in_chans, size, size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, info.num_classes, (batch,), device=device)
    row = {}

    def forward():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            model(x)

    model.eval()
    with torch.inference_mode():
        seconds, iters = timed(forward, device, args.min_time, args.max_iters, warmup=1)
    row.update(forward_img_s=round(batch / seconds, 2), forward_iters=iters)

    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = loss_of(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    seconds, iters = timed(step, device, args.min_time, args.max_iters, warmup=1)
    row.update(train_img_s=round(batch / seconds, 2), train_iters=iters)
    return row


def cpu_description() -> dict:
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line)
        flags = text
    except (OSError, StopIteration):
        name = platform.processor() or "unknown"
    return {
        "cpu": name,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_bf16" in flags,
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/architectures/speed.json")
    parser.add_argument("--models", default="*", help="comma-separated names or patterns (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", type=int, default=32, help="the common small side (default 32)")
    parser.add_argument("--batch", type=int, default=16, help="batch at the small size (default 16)")
    parser.add_argument("--native-batch", type=int, default=2, help="batch at native size (default 2)")
    parser.add_argument("--max-native-gmacs", type=float, default=5.0, help="skip larger native sizes")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement (at least)")
    parser.add_argument("--max-iters", type=int, default=20)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    device = torch.device(args.device)
    patterns = [p.strip() for p in args.models.split(",") if p.strip()]
    names = [n for n in cnnzoo.list_models() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not names:
        raise SystemExit(f"no model matches {args.models!r}")
    precisions = [p for p in args.precisions.split(",") if p]
    meta = {
        "command": " ".join(["python", "bench/bench_models.py", *sys.argv[1:]]),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "nice": os.nice(0),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "small": args.small,
        "batch": args.batch,
        "native_batch": args.native_batch,
        "min_time_s": args.min_time,
        "max_native_gmacs": args.max_native_gmacs,
        "train_flops_per_image": "3 x 2 x forward MACs",
        **cpu_description(),
    }
    results, start = [], time.perf_counter()
    for name in names:
        info = model_info(name)
        params = count_params(cnnzoo.create_model(name))
        small = max(args.small, info.min_size)
        sizes = [("small", small, scaled_batch(args.batch, args.small, small))]
        if info.input_size != small:
            sizes.append(("native", info.input_size, args.native_batch))
        for kind, size, batch in sizes:
            macs = forward_macs(name, info.in_chans, size)
            for channels_last in (False, True):
                for precision in precisions:
                    row = {
                        "model": name,
                        "family": info.family,
                        "params": params,
                        "size_kind": kind,
                        "input": [info.in_chans, size, size],
                        "batch": batch,
                        "channels_last": channels_last,
                        "precision": precision,
                        "macs": macs,
                    }
                    if kind == "native" and macs is not None and macs > args.max_native_gmacs * 1e9:
                        row["skipped"] = (
                            f"{macs / 1e9:.1f} GMACs per image > --max-native-gmacs {args.max_native_gmacs}"
                        )
                    else:
                        try:
                            row.update(measure(name, size, batch, channels_last, precision, args, device))
                        except Exception as e:  # noqa: BLE001 - one failing setting must not lose the rest
                            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                        if macs and "train_img_s" in row:
                            row["forward_gflops"] = round(row["forward_img_s"] * 2 * macs / 1e9, 2)
                            row["train_gflops"] = round(row["train_img_s"] * 6 * macs / 1e9, 2)
                    results.append(row)
                    shown = (
                        row.get("skipped") or row.get("error")
                        or f"forward {row['forward_img_s']:9.1f} img/s   train {row['train_img_s']:9.1f} img/s"
                    )  # fmt: skip
                    print(
                        f"{name:13s} {kind:6s} {size:3d}px b{batch:<3d} {'CL  ' if channels_last else 'NCHW'} "
                        f"{precision}  {shown}",
                        flush=True,
                    )
    meta["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"{len(results)} rows in {meta['seconds']} s -> {out}")


if __name__ == "__main__":
    main()
