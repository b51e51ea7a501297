"""The ASGI app (Starlette): routes, limits, errors as JSON, metrics and the access log.

    GET  /                               the draw-a-digit page (static/index.html: no build, nothing fetched)
    GET  /healthz                        alive
    GET  /readyz                         models loaded and warmed up (503 until then)
    GET  /v1/models                      name, classes, input size, accuracy, source of each model
    POST /v1/models/{name}/predict       one image (raw bytes or multipart); ?top_k=5
    POST /v1/models/{name}/predict/batch several images (multipart, one file part each)
    POST /v1/models/{name}/explain       the input as the model sees it, feature maps, Grad-CAM
    GET  /metrics                        Prometheus text

Every error is a JSON object `{"error": "...", "status": N}`: 400 (empty body, not an image, truncated,
a decompression bomb, a bad parameter), 404 (unknown model or route), 405, 413 (body over the limit),
415 (content type), 503 with Retry-After (waited too long for a forward pass, or not ready).
Responses that ran a forward pass say in `X-Batch-Size` how many images it held and in
`X-Batch-Wait-Ms` how long the request waited for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import CnnzooError
from .batcher import Overloaded
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .served import ServedModel

__all__ = ["ServeSettings", "create_app", "ApiError"]

access_log = logging.getLogger("cnnzoo.serve.access")
log = logging.getLogger("cnnzoo.serve")


@dataclass(frozen=True)
class ServeSettings:
    max_batch_size: int = 32  # images per forward pass; 1 turns micro-batching off
    max_delay_ms: float = 2.0  # how long the first request of a batch waits for company
    timeout_ms: float = 5000.0  # a request waiting longer for its forward pass gets 503
    max_body_bytes: int = 8 << 20  # larger uploads get 413
    max_pixels: int = 40_000_000  # images declaring more are refused unread (decompression bombs)
    max_batch_images: int = 256  # images in one /predict/batch request
    retry_after_s: int = 1  # the hint sent with 503

    def __post_init__(self):
        for name in ("max_batch_size", "max_body_bytes", "max_pixels", "max_batch_images", "retry_after_s"):
            if getattr(self, name) < 1:
                raise CnnzooError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_delay_ms < 0 or self.timeout_ms <= 0:
            raise CnnzooError(
                f"max_delay_ms must be >= 0 and timeout_ms > 0, got {self.max_delay_ms} and {self.timeout_ms}"
            )


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


_RAW_TYPES = ("application/octet-stream",)
_KNOWN_METHODS = {"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"}


class _Observe:
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
            label = route.path if route is not None else "unmatched"
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
            self.metrics.observe_request(label, method, state["status"], seconds)
            if access_log.isEnabledFor(logging.INFO):
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
                access_log.info(json.dumps(line))


def _page() -> bytes:
    return resources.files("cnnzoo.serve").joinpath("static/index.html").read_bytes()


# The page's own script and styles only: a browser refuses anything from elsewhere.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'",
}


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
    page = _page()
    state = {"ready": False}
    retry = {"Retry-After": str(settings.retry_after_s)}

    async def warm_up() -> None:
        loop = asyncio.get_running_loop()
        for m in served.values():
            await loop.run_in_executor(executor, m.warm_up)
        state["ready"] = True
        log.info("ready: %s", ", ".join(served))

    @asynccontextmanager
    async def lifespan(app):
        for m in served.values():
            m.batcher.start()
        warming = asyncio.get_running_loop().create_task(warm_up())
        try:
            yield
        finally:  # uvicorn calls this after in-flight requests finished (graceful shutdown)
            warming.cancel()
            for m in served.values():
                await m.batcher.stop()
            executor.shutdown(wait=True)

    # --- helpers -------------------------------------------------------------------------------

    def model_of(request: Request) -> ServedModel:
        name = request.path_params["name"]
        if name not in served:
            raise ApiError(404, f"unknown model {name!r} (served: {', '.join(served)})")
        return served[name]

    def top_k_of(request: Request) -> int:
        text = request.query_params.get("top_k", "5")
        try:
            top_k = int(text)
        except ValueError:
            raise ApiError(400, f"top_k must be a whole number, got {text!r}") from None
        if top_k < 1:
            raise ApiError(400, f"top_k must be at least 1, got {top_k}")
        return top_k

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"body of {int(declared):,} bytes is over the limit of {limit:,}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"body is over the limit of {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def uploads(request: Request, *, many: bool) -> list[bytes]:
        """The image bytes of a request: a raw body (image/*, application/octet-stream) or the file parts
        of a multipart form."""
        ctype = request.headers.get("content-type", "")
        kind = ctype.split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            body = await read_body(request)
            if not body:
                raise ApiError(400, "empty body: send an image")
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return {"type": "http.disconnect"}
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                form = await Request(request.scope, replay).form(max_files=settings.max_batch_images + 1)
            except Exception as e:  # MultiPartException and friends: a malformed form
                raise ApiError(400, f"malformed multipart body: {e}") from None
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                raise ApiError(400, "the multipart form has no file part: send the image as a file")
            images = [await f.read() for f in files]
        elif kind.startswith("image/") or kind in _RAW_TYPES:
            images = [await read_body(request)]
        else:
            shown = repr(kind) if kind else "none"
            raise ApiError(
                415,
                f"content type {shown} is not an image: send the bytes as image/png, image/jpeg, ... or "
                "application/octet-stream, or as a file in multipart/form-data",
            )
        if not many and len(images) > 1:
            raise ApiError(400, f"{len(images)} files in one request: use /predict/batch for several")
        if len(images) > settings.max_batch_images:
            raise ApiError(400, f"{len(images)} images: at most {settings.max_batch_images} per request")
        for i, data in enumerate(images):
            if not data:
                raise ApiError(
                    400, "empty body: send an image" if len(images) == 1 else f"file {i + 1} is empty"
                )
        return images

    async def decode(model: ServedModel, images: list[bytes]):
        import torch

        def run():
            if len(images) == 1:
                return model.decode(images[0])[None]
            return torch.stack([model.decode(d) for d in images])

        try:  # small images decode in microseconds: a thread hop would cost more than it saves
            if sum(len(d) for d in images) <= 64 << 10:
                return run()
            return await run_in_threadpool(run)
        except CnnzooError as e:
            raise ApiError(400, str(e)) from None

    async def forward(model: ServedModel, batch):
        if not state["ready"]:
            raise ApiError(503, "warming up: try again in a moment", retry)
        try:
            return await model.batcher.submit(batch)
        except Overloaded as e:
            raise ApiError(503, f"server busy: {e}", retry) from None

    def batch_headers(result) -> dict:
        return {"X-Batch-Size": str(result.batch_size), "X-Batch-Wait-Ms": f"{1000 * result.wait_s:.3f}"}

    # --- routes --------------------------------------------------------------------------------

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        body = {"ready": state["ready"], "models": list(served)}
        return JSONResponse(
            body, status_code=200 if state["ready"] else 503, headers=None if state["ready"] else retry
        )

    async def list_models(request: Request) -> Response:
        return JSONResponse({"models": [m.info() for m in served.values()]})

    async def predict(request: Request) -> Response:
        model = model_of(request)
        top_k = top_k_of(request)
        batch = await decode(model, await uploads(request, many=False))
        result = await forward(model, batch)
        body = {"model": model.name, "top": model.top(result.output[0], top_k)}
        return JSONResponse(body, headers=batch_headers(result))

    async def predict_batch(request: Request) -> Response:
        model = model_of(request)
        top_k = top_k_of(request)
        batch = await decode(model, await uploads(request, many=True))
        result = await forward(model, batch)
        body = {"model": model.name, "predictions": [{"top": model.top(row, top_k)} for row in result.output]}
        return JSONResponse(body, headers=batch_headers(result))

    async def explain(request: Request) -> Response:
        model = model_of(request)
        top_k = top_k_of(request)
        image = (await decode(model, await uploads(request, many=False)))[0]
        if not state["ready"]:
            raise ApiError(503, "warming up: try again in a moment", retry)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:  # on the forward thread, between batches
            body = await asyncio.wait_for(
                loop.run_in_executor(executor, model.explain, image, top_k), settings.timeout_ms / 1000
            )
        except TimeoutError:
            raise ApiError(503, "server busy: the explanation took too long", retry) from None
        return JSONResponse(body, headers={"X-Explain-Ms": f"{1000 * (time.perf_counter() - started):.3f}"})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # --- errors --------------------------------------------------------------------------------

    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.message, exc.headers)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = {
            404: f"no route {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return _error(
            exc.status_code, message.get(exc.status_code, exc.detail), getattr(exc, "headers", None)
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", prometheus),
        Route("/v1/models", list_models),
        Route("/v1/models/{name}/predict", predict, methods=["POST"]),
        Route("/v1/models/{name}/predict/batch", predict_batch, methods=["POST"]),
        Route("/v1/models/{name}/explain", explain, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(_Observe, metrics=metrics)],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error},
    )
    app.state.served, app.state.metrics, app.state.executor, app.state.status = (
        served,
        metrics,
        executor,
        state,
    )
    app.state.settings = settings
    return app
