"""`cnnzoo serve`: load the models, bind the socket, run the app on uvicorn until Ctrl-C or SIGTERM.

Shutdown is graceful: uvicorn stops accepting connections, waits for the requests in flight (up to
`GRACE_S`), then the app's lifespan runs what is still queued and stops the forward thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading

import torch

from ..errors import CnnzooError
from ..inference import load
from ..models._pretrained import pretrained_entry
from ..runtime import thread_tuner
from .app import ServeSettings, create_app
from .served import NAME_PATTERN, model_name

__all__ = ["serve", "load_models", "uvicorn_config", "DEFAULT_SOURCE"]

GRACE_S = 30  # the longest a shutdown waits for requests in flight
# An idle keep-alive connection is closed after this long (uvicorn's default, said here): idle ones cost
# the event loop nothing meanwhile (200 of them leave /healthz answering in milliseconds: tests/serve).
KEEP_ALIVE_S = 5
# A connection must send a request's whole head within this long of opening, or of its last answer: uvicorn
# closes an idle connection only once it has answered on it, so one that never sent a request, or stopped
# halfway through its headers, stayed open for good (a file descriptor each, until the server ran out).
HEAD_TIMEOUT_S = 10
DEFAULT_SOURCE = "lenet5:mnist"  # the bundled LeNet-5 trained on MNIST


def load_models(sources: list[str], named: list[str], *, device: str = "cpu") -> dict:
    """{route name: Predictor} from positional SOURCEs (named after model and dataset) and NAME=SOURCE."""
    pairs: list[tuple[str | None, str]] = [(None, s) for s in sources]
    for item in named:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise CnnzooError(f"--model takes NAME=SOURCE, got {item!r}")
        if not NAME_PATTERN.match(name):
            raise CnnzooError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        pairs.append((name, source))
    if not pairs:
        pairs = [(None, _default_source())]
    models: dict = {}
    for name, source in pairs:
        predictor = load(source, device=device)
        name = name or model_name(predictor)
        base, n = name, 2
        while name in models:  # two sources of the same model and dataset: lenet5-mnist, lenet5-mnist-2
            name, n = f"{base}-{n}", n + 1
        models[name] = predictor
    return models


def default_threads() -> int:
    """Threads for the forward pass: all cores but one, which the event loop needs to parse requests
    and queue them. More threads than free cores make PyTorch's workers wait for each other: on 2 busy
    cores LeNet-5's batch of 32 took 65 ms with 2 threads and 5 ms with 1."""
    return max(1, (os.cpu_count() or 2) - 1)


def _default_source() -> str:
    try:
        pretrained_entry(DEFAULT_SOURCE)
    except CnnzooError:
        raise CnnzooError(
            f"no bundled {DEFAULT_SOURCE} weights in this installation: name a model to serve, e.g. "
            "`cnnzoo serve runs/lenet5-mnist-...` (a run folder or checkpoint; `cnnzoo train lenet5` makes one)"
        ) from None
    return DEFAULT_SOURCE


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise CnnzooError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    models: dict,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    access_log: bool = True,
    threads: int | None = None,
) -> int | None:
    """Serve `models` ({name: Predictor}) on host:port until interrupted; return the signal that stopped
    it. Port 0 picks a free port; the address is printed on stdout either way."""
    try:
        import uvicorn
    except ImportError:
        raise CnnzooError("cnnzoo serve needs the serve extra: pip install 'cnnzoo[serve]'") from None
    if not 0 <= port <= 65535:
        raise CnnzooError(f"port must be 0..65535, got {port}")
    torch.set_num_threads(threads or default_threads())
    for predictor in models.values():  # --threads fixes the count; otherwise it is tuned up to the default
        predictor.threads = (
            None if threads else thread_tuner(predictor.device, "serve", max_threads=default_threads())
        )
    app = create_app(models, settings)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name, level in (
        ("cnnzoo.serve.access", logging.INFO if access_log else logging.WARNING),
        ("cnnzoo.serve", logging.INFO),
    ):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"cnnzoo serve: http://{shown}:{bound_port}/ ({', '.join(models)}); Ctrl-C to stop", flush=True)
    server = _server_class(uvicorn)(uvicorn_config(app))
    server.run(sockets=[sock])
    return server.stopped_by


def uvicorn_config(app):
    """uvicorn's settings for `app`, the ones `cnnzoo serve` runs with (the tests' server too)."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,  # ours is structured, one JSON line per request
        timeout_graceful_shutdown=GRACE_S,
        timeout_keep_alive=KEEP_ALIVE_S,
        http=_protocol_class(),
        lifespan="on",
    )


def _protocol_class():
    """uvicorn's HTTP protocol (httptools where installed, else h11, as uvicorn picks), plus
    `HEAD_TIMEOUT_S`: a deadline armed when the connection opens and after each answer, which data arriving
    does not put off (a client trickling header bytes gets no more time); when it passes with no request
    running, the connection is closed. A request running (its body, the handler) is `read_body`'s and the
    app's to time out, not this."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeadTimeoutProtocol(AutoHTTPProtocol):
        _head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            idle = self.cycle is None or self.cycle.response_complete  # no request has a whole head yet
            if idle and not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutProtocol


def _server_class(uvicorn):
    class GracefulServer(uvicorn.Server):
        """uvicorn's server, except that the signal that stopped it is not raised again once it has shut
        down gracefully: `serve` returns it, and `cnnzoo serve` exits 0 on SIGTERM, 130 on Ctrl-C."""

        stopped_by: int | None = None

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield  # signals reach the main thread only
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig, frame):
            self.stopped_by = self.stopped_by or sig
            super().handle_exit(sig, frame)  # the first signal stops gracefully, a second Ctrl-C at once

    return GracefulServer
