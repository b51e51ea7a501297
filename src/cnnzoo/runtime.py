"""Where and how arithmetic runs: the device, the precision, the evaluation batch and the memory free.

Training, evaluation, inference, transfer learning and the studies all ask these questions; the answers
live here, below every package that asks, so none of them has to import the training loop to get them.
"""

from __future__ import annotations

import os

import torch

from .errors import CnnzooError

__all__ = [
    "EVAL_BATCH",
    "resolve_device",
    "autocast_dtype",
    "precision_name",
    "available_memory",
    "format_bytes",
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
