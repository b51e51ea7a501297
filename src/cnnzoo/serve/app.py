"""The ASGI app (Starlette): the settings, the models and their forward thread in `app.state`, the
lifespan (micro-batchers started, models warmed up, all stopped on shutdown), metrics and the access log
(`observe.py`), and every error as JSON `{"error": "...", "status": N}` (on /v2, the Open Inference
Protocol's `{"error": "..."}`). The routes are `routes.py`'s
`ROUTES` (the API, and how to add a route, is described there); reading a request is `requests.py`.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..errors import CnnzooError
from . import routes
from .metrics import Metrics
from .observe import Observe
from .requests import ApiError
from .served import ServedModel
from .settings import ServeSettings
from .v2 import is_v2

__all__ = ["ServeSettings", "create_app", "ApiError"]

log = logging.getLogger("cnnzoo.serve")


def create_app(predictors: dict, settings: ServeSettings | None = None) -> Starlette:
    """The app serving `predictors` ({route name: Predictor}) with `settings`."""
    settings = settings or ServeSettings()
    if not predictors:
        raise CnnzooError("nothing to serve: give at least one model")
    metrics = Metrics()
    # One worker thread runs every forward pass and explanation in turn: one model is never run from
    # two threads at once, and the event loop stays free to accept and queue requests meanwhile.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnzoo-forward")
    served = {
        name: ServedModel(
            name,
            p,
            executor,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_delay_ms / 1000,
            timeout_s=settings.timeout_ms / 1000,
            max_pixels=settings.max_pixels,
            metrics=metrics,
        )
        for name, p in predictors.items()
    }
    app = Starlette(
        routes=routes.ROUTES,  # looked up now, not at import: the one table, as it stands
        lifespan=_lifespan,
        middleware=[Middleware(Observe, metrics=metrics)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _server_error,
        },
    )
    # What the handlers read (routes.py): the app's own, so several apps in one process do not mix.
    app.state.settings, app.state.served, app.state.metrics = settings, served, metrics
    app.state.executor, app.state.status = executor, {"ready": False}
    return app


@asynccontextmanager
async def _lifespan(app: Starlette):
    state = app.state
    for m in state.served.values():
        m.batcher.start()
    warming = asyncio.get_running_loop().create_task(_warm_up(state))
    try:
        yield
    finally:  # uvicorn calls this after in-flight requests finished (graceful shutdown)
        warming.cancel()
        for m in state.served.values():
            await m.batcher.stop()
        state.executor.shutdown(wait=True)


async def _warm_up(state) -> None:
    loop = asyncio.get_running_loop()
    for m in state.served.values():
        await loop.run_in_executor(state.executor, m.warm_up)
    state.status["ready"] = True
    log.info("ready: %s", ", ".join(state.served))


# --- errors, all as JSON -------------------------------------------------------------------------------


def _error(request: Request, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The error as JSON: `{"error": ..., "status": N}`, or on /v2 the protocol's own `{"error": ...}`."""
    body = {"error": message} if is_v2(request.url.path) else {"error": message, "status": status}
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> Response:
    return _error(request, exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    message = {
        404: f"no route {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    return _error(
        request, exc.status_code, message.get(exc.status_code, exc.detail), getattr(exc, "headers", None)
    )


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """A client gone mid-request (a body read elsewhere than `requests.read_body`): 499 in the access log
    and the metrics, no traceback; uvicorn drops the answer, as nobody is left to read it."""
    return _error(request, 499, "the client disconnected before the end of its request")


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(request, 500, f"internal error ({type(exc).__name__}); see the server log")
