"""Where and how arithmetic runs: the device, the precision, the evaluation batch and the memory free.

Training, evaluation, inference, transfer learning and the studies all ask these questions; the answers
live here, below every package that asks, so none of them has to import the training loop to get them.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from .errors import CnnzooError

__all__ = [
    "EVAL_BATCH",
    "resolve_device",
    "autocast_dtype",
    "precision_name",
    "available_memory",
    "format_bytes",
    "format_duration",
    "ThreadTuner",
    "thread_tuner",
]

EVAL_BATCH = 256  # images per evaluation step, in training, `evaluate` and `predict` alike


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise CnnzooError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CnnzooError(
            "--device cuda asked for, but PyTorch sees no CUDA GPU (is a CUDA build installed?)"
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CnnzooError("--device mps asked for, but MPS is not available on this machine")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise CnnzooError(
                "fp16 mixed precision needs a CUDA GPU; use --precision bf16 or fp32 on this device"
            )
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    # auto: bf16 where the hardware computes it natively, fp32 elsewhere (emulated bf16 is slower)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """How a figure was computed, as written into metrics.jsonl: fp32, bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can be allocated now on `device` (CPU: MemAvailable), or None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return torch.cuda.mem_get_info(device)[0]
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """A time a person reads at a glance: 8.2 s, 45 s, 3 min 10 s, 1 h 05 min."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# --- threads --------------------------------------------------------------------------------------------


class ThreadTuner:
    """Chooses PyTorch's intra-op thread count by timing the real work, and keeps choosing.

    Why not one thread per core, PyTorch's default: on a machine where another process holds a core, every
    parallel region waits at its barrier for the thread that lost its core, and small networks run many
    regions a step. Measured on the 2-core machine with other work running: one LeNet-5 epoch took 61.6 s
    with 2 threads and 7.9 s with 1 (`OMP_WAIT_POLICY=PASSIVE`, threads that sleep instead of spinning,
    made it worse: 137.9 s), so the waiting policy is left alone and the count is what changes. No load
    average predicts the slowdown reliably, and the load comes and goes, so the tuner measures: `tick(units)`
    after each unit of work (a training step, an evaluation batch) times `probe` units at each candidate
    count, fewest threads first (cheap on any machine), and keeps the fastest per unit. A count whose unit
    takes over 3x the best so far is dropped after that one unit: on a busy machine a probe of all cores
    costs one slow step, not several. It measures again after `recheck_s` seconds, twice as long each time
    the answer stays the same (up to 8x). `bench/bench_threads.py` measures the policy, quiet and loaded.
    """

    def __init__(
        self,
        candidates: list[int],
        *,
        probe: int = 4,
        recheck_s: float = 30.0,
        clock: Callable[[], float] = time.perf_counter,
        apply: Callable[[int], None] = torch.set_num_threads,
        current: Callable[[], int] = torch.get_num_threads,
    ):
        if not candidates:
            raise ValueError("ThreadTuner needs at least one candidate thread count")
        self.candidates = sorted(set(candidates), reverse=True)  # ties go to the most threads
        self.probe, self.recheck_s = probe, recheck_s
        self._clock, self._apply, self._current = clock, apply, current
        self.chosen: int | None = None
        self.timings: dict[int, float] = {}  # seconds per unit at each count, from the last measurement
        self._interval = recheck_s
        self._last: float | None = None
        self._warming_up = True
        self._start_probing(sorted(self.candidates))

    def _start_probing(self, order: list[int]) -> None:
        self._queue, self._samples, self._run_until = order, [], None
        self.timings = {}
        self._use(order[0])

    def _use(self, n: int) -> None:
        self._threads = n
        if self._current() != n:
            self._apply(n)

    def begin(self) -> None:
        """Work starts (again) now: what happened since the last tick (saving, evaluating) is not timed."""
        self._use(self._threads)  # someone else (another tuner, user code) may have changed it
        self._last = self._clock()

    def tick(self, units: int = 1) -> None:
        """One unit of work (`units` images) just ended."""
        now = self._clock()
        last, self._last = self._last, now
        if self._current() != self._threads:  # changed behind our back: this unit ran on another count
            self._use(self._threads)
            return
        if last is None:
            return
        if self._warming_up:  # the first timed unit: allocations, kernels chosen, the team started
            self._warming_up = False
            return
        if self._run_until is not None:
            if now >= self._run_until:  # the count in use first: a check that confirms it switches nothing
                self._start_probing([self.chosen] + [c for c in sorted(self.candidates) if c != self.chosen])
            return
        seconds = (now - last) / max(1, units)
        self._samples.append(seconds)
        best = min(self.timings.values(), default=float("inf"))
        if len(self._samples) < self.probe and seconds <= 3 * best:
            return
        self.timings[self._queue.pop(0)] = statistics.median(self._samples)
        self._samples = []
        if self._queue:
            self._use(self._queue[0])
            return
        self._choose(now)

    def _choose(self, now: float) -> None:
        fastest = min(self.timings.values())
        # within 5% of the fastest, more threads win: noise must not cost a quiet machine its cores
        chosen = next(c for c in self.candidates if self.timings.get(c, float("inf")) <= 1.05 * fastest)
        self._interval = (
            min(2 * self._interval, 8 * self.recheck_s) if chosen == self.chosen else self.recheck_s
        )
        self.chosen = chosen
        self._use(chosen)
        self._run_until = now + self._interval


_TUNERS: dict[str, ThreadTuner] = {}
_DEFAULT_THREADS = torch.get_num_threads()  # PyTorch's own (one per core), before any tuner changes it


def thread_tuner(
    device: torch.device | str, kind: str, *, max_threads: int | None = None
) -> ThreadTuner | None:
    """The process's tuner for `kind` of work ("train", "eval", "serve") on `device`, or None where the
    thread count is not cnnzoo's to choose: not the CPU, one core, or fixed by the user
    (`OMP_NUM_THREADS`, which torchrun also sets for its workers, or `CNNZOO_THREADS=N`;
    `CNNZOO_THREADS=auto` or unset: tuned)."""
    if torch.device(device).type != "cpu":
        return None
    fixed = os.environ.get("CNNZOO_THREADS", "auto").strip().lower()
    if fixed not in ("", "auto"):
        try:
            torch.set_num_threads(max(1, int(fixed)))
        except ValueError:
            raise CnnzooError(
                f"CNNZOO_THREADS must be a number of threads or 'auto', got {fixed!r}"
            ) from None
        return None
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    most = max_threads or _DEFAULT_THREADS
    if most <= 1:
        return None
    if kind not in _TUNERS or _TUNERS[kind].candidates[0] != most:
        # all, half and one: enough choices to find a busy machine's best without probing every count
        _TUNERS[kind] = ThreadTuner([most, max(1, most // 2), 1])
    return _TUNERS[kind]
