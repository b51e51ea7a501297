"""The server's limits and batching, one frozen record that the app, the request readers and the CLI share."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CnnzooError

__all__ = ["ServeSettings"]


@dataclass(frozen=True)
class ServeSettings:
    max_batch_size: int = 32  # images per forward pass; 1 turns micro-batching off
    max_delay_ms: float = 2.0  # how long a queued batch waits for company (a request finding it idle: none)
    timeout_ms: float = 5000.0  # a request waiting longer for its forward pass gets 503
    max_body_bytes: int = 8 << 20  # larger uploads get 413
    max_pixels: int = 40_000_000  # images declaring more are refused unread (decompression bombs)
    max_batch_images: int = 256  # images in one /predict/batch request
    retry_after_s: int = 1  # the hint sent with 503
    # Misbehaving clients (requests.read_body): a body that stalls is cut off (408), one over the limit is
    # read to its end and dropped before the 413, so that the client, still sending, reads the answer
    # instead of a reset connection; within these bounds (beyond them the connection is closed).
    body_timeout_s: float = 10.0  # the longest a body may go without a byte arriving
    max_drain_bytes: int = (
        128 << 20
    )  # the most of an oversized body read (twice the 64 MB a client was seen to send)
    drain_s: float = 30.0  # the longest an oversized body is read for

    def __post_init__(self):
        for name in (
            "max_batch_size",
            "max_body_bytes",
            "max_pixels",
            "max_batch_images",
            "retry_after_s",
            "max_drain_bytes",
        ):
            if getattr(self, name) < 1:
                raise CnnzooError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.body_timeout_s <= 0 or self.drain_s < 0:
            raise CnnzooError(
                f"body_timeout_s must be > 0 and drain_s >= 0, got {self.body_timeout_s} and {self.drain_s}"
            )
        if self.max_delay_ms < 0 or self.timeout_ms <= 0:
            raise CnnzooError(
                f"max_delay_ms must be >= 0 and timeout_ms > 0, got {self.max_delay_ms} and {self.timeout_ms}"
            )
