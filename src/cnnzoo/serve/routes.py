"""The HTTP API: one module-level handler per route and `ROUTES`, the one route table.

    GET  /                               the draw-a-digit page (static/index.html: no build, nothing fetched)
    GET  /healthz                        alive
    GET  /readyz                         models loaded and warmed up (503 until then)
    GET  /v1/models                      name, classes, input size, accuracy, source of each model
    POST /v1/models/{name}/predict       one image (raw bytes or multipart); ?top_k=5
    POST /v1/models/{name}/predict/batch several images (multipart, one file part each)
    POST /v1/models/{name}/explain       the input as the model sees it, feature maps, Grad-CAM
    GET  /metrics                        Prometheus text
    GET|POST /v2/...                     the Open Inference Protocol (KServe v2, Triton): see v2.py

Every error is a JSON object `{"error": "...", "status": N}` (on /v2, the protocol's `{"error": "..."}`): 400 (empty body, not an image, truncated,
a decompression bomb, a bad parameter), 404 (unknown model or route), 405, 408 (the body stopped
arriving), 413 (body over the limit), 415 (content type), 503 with Retry-After (waited too long for a
forward pass, or not ready); 499 in the log and metrics when the client left mid-body (`requests.read_body`).
Responses that ran a forward pass say in `X-Batch-Size` how many images it held and in
`X-Batch-Wait-Ms` how long the request waited for it.

A new route is a handler here and one line in `ROUTES`. A handler reads what it needs from
`request.app.state` (`create_app` puts it there): `settings` (`ServeSettings`), `served` ({name:
`ServedModel`}), `metrics`, `executor` (the one forward thread) and `status` ({"ready": bool}); the
request itself through `requests.py`; it raises `ApiError` for any answer but 200.
"""

from __future__ import annotations

import asyncio
import functools
import time
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import v2
from .metrics import CONTENT_TYPE_LATEST
from .requests import (
    ApiError,
    batch_headers,
    decode,
    forward,
    model_of,
    require_ready,
    retry_headers,
    top_k_of,
    uploads,
)

__all__ = ["ROUTES"]

# The page's own script and styles only: a browser refuses anything from elsewhere.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'",
}


@functools.cache
def _page() -> bytes:
    return resources.files("cnnzoo.serve").joinpath("static/index.html").read_bytes()


# --- handlers ----------------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return Response(_page(), media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = request.app.state
    ready = state.status["ready"]
    body = {"ready": ready, "models": list(state.served)}
    return JSONResponse(
        body, status_code=200 if ready else 503, headers=None if ready else retry_headers(state)
    )


async def list_models(request: Request) -> Response:
    return JSONResponse({"models": [m.info() for m in request.app.state.served.values()]})


async def predict(request: Request) -> Response:
    model, top_k = model_of(request), top_k_of(request)
    batch = await decode(model, await uploads(request, request.app.state.settings, many=False))
    result = await forward(request, model, batch)
    body = {"model": model.name, "top": model.top(result.output.ranked[0], top_k)}
    return JSONResponse(body, headers=batch_headers(result))


async def predict_batch(request: Request) -> Response:
    model, top_k = model_of(request), top_k_of(request)
    batch = await decode(model, await uploads(request, request.app.state.settings, many=True))
    result = await forward(request, model, batch)
    body = {
        "model": model.name,
        "predictions": [{"top": model.top(row, top_k)} for row in result.output.ranked],
    }
    return JSONResponse(body, headers=batch_headers(result))


async def explain(request: Request) -> Response:
    state = request.app.state
    model, top_k = model_of(request), top_k_of(request)
    image = (await decode(model, await uploads(request, state.settings, many=False)))[0]
    require_ready(state)
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:  # on the forward thread, between batches
        body = await asyncio.wait_for(
            loop.run_in_executor(state.executor, model.explain, image, top_k),
            state.settings.timeout_ms / 1000,
        )
    except TimeoutError:
        raise ApiError(503, "server busy: the explanation took too long", retry_headers(state)) from None
    return JSONResponse(body, headers={"X-Explain-Ms": f"{1000 * (time.perf_counter() - started):.3f}"})


async def prometheus(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/", index),
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/metrics", prometheus),
    Route("/v1/models", list_models),
    Route("/v1/models/{name}/predict", predict, methods=["POST"]),
    Route("/v1/models/{name}/predict/batch", predict_batch, methods=["POST"]),
    Route("/v1/models/{name}/explain", explain, methods=["POST"]),
    # the Open Inference Protocol (KServe v2): v2.py
    Route("/v2", v2.server_metadata),
    Route("/v2/health/live", v2.server_live),
    Route("/v2/health/ready", v2.server_ready),
    Route("/v2/models/{name}", v2.model_metadata),
    Route("/v2/models/{name}/versions/{version}", v2.model_metadata),
    Route("/v2/models/{name}/ready", v2.model_ready),
    Route("/v2/models/{name}/versions/{version}/ready", v2.model_ready),
    Route("/v2/models/{name}/infer", v2.infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/infer", v2.infer, methods=["POST"]),
]
