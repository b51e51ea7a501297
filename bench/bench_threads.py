"""The thread policy on a quiet and on a busy machine, in one run: cnnzoo's tuned count against fixed ones.

    python bench/bench_threads.py                 # 2 rounds, full MNIST epochs
    python bench/bench_threads.py --rounds 3 --images 20000

Each measurement is one LeNet-5 epoch of the default MNIST recipe (`train_time` in metrics.jsonl: the training
loop alone, the first epoch of a fresh process, as a user's first epoch is), run in a child process so that each
setting starts its own OpenMP pool:
- `default`: one thread per core, PyTorch's default and cnnzoo's before the policy (`CNNZOO_THREADS=N`, N the
  cores: the count fixed, no tuning);
- `1 thread`: `CNNZOO_THREADS=1`;
- `auto`: nothing set, cnnzoo's `ThreadTuner` (runtime.py) chooses and re-checks.
"loaded" runs the same with one busy process started by this script (a Python loop spinning on one core, as a
browser tab or a compiler would). Settings alternate within each round, so drifting load falls on all alike;
the figures are medians over the rounds. The goals (issue 20): loaded, `auto` within 1.3x of the best fixed
setting; quiet, `auto` no slower than `default`. Run it alone: another process running PyTorch is a load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import json, sys, tempfile
from cnnzoo.engine.config import default_config
from cnnzoo.engine.train import train
cfg = default_config("lenet5", "mnist", epochs=1, train_subset=int(sys.argv[1]) or None, checkpoint_minutes=0)
with tempfile.TemporaryDirectory() as d:
    r = train(cfg, run_dir=d + "/run", quiet=True)
print(json.dumps({"train_time": r.history[-1]["train_time"]}))
"""

SETTINGS = ("default", "1 thread", "auto")


def child_env(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CNNZOO_THREADS")}
    if setting == "default":
        env["CNNZOO_THREADS"] = str(os.cpu_count() or 1)
    elif setting == "1 thread":
        env["CNNZOO_THREADS"] = "1"
    return env


def epoch_seconds(setting: str, images: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(images)],
        env=child_env(setting),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["train_time"]


def measure(rounds: int, images: int, label: str) -> dict[str, float]:
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    for r in range(rounds):
        order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
        for setting in order:
            times[setting].append(epoch_seconds(setting, images))
            print(
                f"  {label:6s} round {r + 1}/{rounds} {setting:8s}: {times[setting][-1]:6.2f} s", flush=True
            )
    return {s: statistics.median(t) for s, t in times.items()}


def busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=0, help="training images per epoch (0: all 60,000)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; LeNet-5, one MNIST epoch per measurement, {args.rounds} rounds")
    results = {"quiet": measure(args.rounds, args.images, "quiet")}
    busy = busy_process()
    try:
        time.sleep(1.0)
        results["loaded"] = measure(args.rounds, args.images, "loaded")
    finally:
        busy.kill()
        busy.wait()
    print("\n| machine | default (1/core) | 1 thread | auto | auto / best fixed | auto / default |")
    print("|---|---|---|---|---|---|")
    for label, t in results.items():
        best = min(t["default"], t["1 thread"])
        print(
            f"| {label} | {t['default']:.2f} s | {t['1 thread']:.2f} s | {t['auto']:.2f} s "
            f"| {t['auto'] / best:.2f}x | {t['auto'] / t['default']:.2f}x |"
        )
    loaded, quiet = results["loaded"], results["quiet"]
    ok_loaded = loaded["auto"] <= 1.3 * min(loaded["default"], loaded["1 thread"])
    ok_quiet = quiet["auto"] <= 1.05 * quiet["default"]
    print(f"\nloaded: auto within 1.3x of the best fixed setting: {'yes' if ok_loaded else 'NO'}")
    print(f"quiet: auto no slower than the default (5% noise allowed): {'yes' if ok_quiet else 'NO'}")


if __name__ == "__main__":
    main()
