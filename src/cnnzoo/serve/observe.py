"""What every request leaves behind: its metrics (count, errors, latency by route) and one structured
access-log line (JSON on the `cnnzoo.serve.access` logger), written by a pure ASGI middleware."""

from __future__ import annotations

import json
import logging
import time

from .metrics import Metrics

__all__ = ["Observe", "access_log"]

access_log = logging.getLogger("cnnzoo.serve.access")

_KNOWN_METHODS = {"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"}


class Observe:
    """Pure ASGI middleware: per request, the metrics and one structured access-log line (JSON)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        state = {"status": 500, "bytes": 0, "batch": None}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                for k, v in message.get("headers", ()):
                    if k == b"x-batch-size":
                        state["batch"] = int(v)
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            label = route.path if route is not None else "unmatched"  # unknown paths: one label
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
            self.metrics.observe_request(label, method, state["status"], seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(json.dumps(_access_line(scope, label, state, seconds)))


def _access_line(scope, label: str, state: dict, seconds: float) -> dict:
    client = scope.get("client")
    line = {
        "ts": round(time.time(), 3),
        "client": f"{client[0]}:{client[1]}" if client else None,
        "method": scope["method"],
        "path": scope["path"],
        "route": label,
        "status": state["status"],
        "ms": round(1000 * seconds, 3),
        "bytes": state["bytes"],
    }
    if state["batch"] is not None:
        line["batch"] = state["batch"]
    return line
