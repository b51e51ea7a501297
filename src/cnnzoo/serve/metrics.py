"""Prometheus metrics of one app (its own registry, so several apps in one process do not mix).

cnnzoo_requests_total{route, method, code}        every request, by route template and status
cnnzoo_request_errors_total{route, code}          the 4xx and 5xx among them
cnnzoo_request_duration_seconds{route}            latency histogram, from first byte in to last out
cnnzoo_batch_size{model}                          images per forward pass
cnnzoo_queue_depth{model}                         images waiting for a forward pass now
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cnnzoo_requests", "HTTP requests by route and status", ["route", "method", "code"], registry=r
        )
        self.errors = Counter(
            "cnnzoo_request_errors", "HTTP requests answered 4xx or 5xx", ["route", "code"], registry=r
        )
        self.latency = Histogram(
            "cnnzoo_request_duration_seconds",
            "Request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "cnnzoo_batch_size", "Images per forward pass", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "cnnzoo_queue_depth", "Images waiting for a forward pass", ["model"], registry=r
        )
        self._children: dict[tuple, tuple] = {}  # label lookups cached: they cost more than the updates

    def observe_request(self, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method, code)
        children = self._children.get(key)
        if children is None:
            error = self.errors.labels(route, str(code)) if code >= 400 else None
            children = (self.requests.labels(route, method, str(code)), error, self.latency.labels(route))
            self._children[key] = children
        requests, error, latency = children
        requests.inc()
        if error is not None:
            error.inc()
        latency.observe(seconds)

    def batch_observer(self, model: str) -> Callable[[int], None]:
        return self.batch_size.labels(model).observe

    def depth_setter(self, model: str) -> Callable[[int], None]:
        return self.queue_depth.labels(model).set

    def render(self) -> bytes:
        return generate_latest(self.registry)
