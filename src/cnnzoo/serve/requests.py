"""Reading a request and running it: the model it names, `?top_k`, the body within its limit, the uploaded
images and their decoding, the wait for a forward pass. Plain functions of (request, settings), each
raising `ApiError` with the status and the message the client gets (the app turns it into
`{"error": ..., "status": N}`, or `{"error": ...}` on `/v2`). Shared by every protocol's routes.
"""

from __future__ import annotations

import asyncio

import torch
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..errors import CnnzooError
from .batcher import BatchResult, Overloaded
from .served import ServedModel
from .settings import ServeSettings

__all__ = [
    "ApiError",
    "model_of",
    "top_k_of",
    "read_body",
    "uploads",
    "decode",
    "retry_headers",
    "require_ready",
    "forward",
    "batch_headers",
]

_RAW_TYPES = ("application/octet-stream",)
_SMALL_BYTES = 64 << 10  # images up to this many bytes in all are decoded on the event loop
_CLOSE = {"Connection": "close"}  # what is left of the body will not be read: uvicorn closes after answering


class ApiError(Exception):
    """An answer other than 200: its status, the message and any headers (such as Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def model_of(request: Request) -> ServedModel:
    """The served model the path names (`{name}`), or 404."""
    served = request.app.state.served
    name = request.path_params["name"]
    if name not in served:
        raise ApiError(404, f"unknown model {name!r} (served: {', '.join(served)})")
    return served[name]


def top_k_of(request: Request) -> int:
    """`?top_k=`, 5 when absent; 400 unless a whole number of at least 1."""
    text = request.query_params.get("top_k", "5")
    try:
        top_k = int(text)
    except ValueError:
        shown = repr(text) if len(text) <= 20 else f"{text[:20]!r}... ({len(text):,} characters)"
        raise ApiError(400, f"top_k must be a whole number, got {shown}") from None
    if top_k < 1:
        raise ApiError(400, f"top_k must be at least 1, got {top_k}")
    return top_k


async def read_body(request: Request, settings: ServeSettings) -> bytes:
    """The body, within `max_body_bytes`; for a client that misbehaves, an answer it can read:

    - over the limit (declared or streamed): 413, once the rest of the body has been read and dropped
      (`_drain`). Answering at once and closing would reset the connection while the client is still
      sending (urllib and browsers send a large body whole before they read, and ask to close after), and
      the client would see the reset, not the 413. A client that sent `Expect: 100-continue` has sent
      nothing yet: it gets the 413 at once.
    - no byte for `body_timeout_s` (a declared length never sent): 408, and the connection closed; other
      requests go on meanwhile, as every request is a task of its own.
    - the client gone before the end of its body: 499 (nginx's "client closed request"), an access-log
      line, not a traceback: nobody is left to read it.
    """
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        message = f"body of {int(declared):,} bytes is over the limit of {limit:,}"
        expects = request.headers.get("expect", "").lower() == "100-continue"
        if expects or int(declared) > settings.max_drain_bytes:  # nothing sent yet, or too much to drain
            raise ApiError(413, message)  # on a kept-alive connection uvicorn drops what still comes
        raise ApiError(413, message, await _drain(request, settings, 0))
    chunks, size, more = [], 0, True
    while more:
        chunk, more = await _receive_chunk(request, settings)
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, f"body is over the limit of {limit:,} bytes", await _drain(request, settings, size)
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _receive_chunk(
    request: Request, settings: ServeSettings, timeout_s: float | None = None
) -> tuple[bytes, bool]:
    """The next piece of the body and whether more follows; 408 after `body_timeout_s` without one,
    499 when the client has gone."""
    timeout_s = settings.body_timeout_s if timeout_s is None else min(timeout_s, settings.body_timeout_s)
    try:
        message = await asyncio.wait_for(request.receive(), timeout_s)
    except TimeoutError:
        raise ApiError(
            408,
            f"the body stopped arriving: nothing for {settings.body_timeout_s:g} s "
            f"(send all of the declared Content-Length)",
            _CLOSE,
        ) from None
    if message["type"] == "http.disconnect":
        raise ApiError(499, "the client disconnected before the end of its body")
    return message.get("body", b""), message.get("more_body", False)


async def _drain(request: Request, settings: ServeSettings, size: int) -> dict:
    """Read and drop the rest of a body that is over the limit, up to `max_drain_bytes` in all and for
    `drain_s` at most, so the client has sent everything when it reads the answer; the headers the answer
    needs (`Connection: close` when the body could not be read to its end)."""
    deadline = asyncio.get_running_loop().time() + settings.drain_s
    more = True
    while more and size <= settings.max_drain_bytes:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return dict(_CLOSE)
        try:
            chunk, more = await _receive_chunk(request, settings, left)
        except ApiError as e:
            if e.status == 499:
                raise
            return dict(_CLOSE)  # stalled, or out of time: give up on the rest
        size += len(chunk)
    return {} if not more else dict(_CLOSE)


async def uploads(request: Request, settings: ServeSettings, *, many: bool) -> list[bytes]:
    """The image bytes of a request: a raw body (image/*, application/octet-stream) or the file parts
    of a multipart form."""
    ctype = request.headers.get("content-type", "")
    kind = ctype.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        images = await _form_files(request, settings)
    elif kind.startswith("image/") or kind in _RAW_TYPES:
        images = [await read_body(request, settings)]
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
            raise ApiError(400, "empty body: send an image" if len(images) == 1 else f"file {i + 1} is empty")
    return images


async def _form_files(request: Request, settings: ServeSettings) -> list[bytes]:
    """The file parts of a multipart body, read within the body limit first (the form parser is then
    given the bytes already read, not the socket)."""
    body = await read_body(request, settings)
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
    return [await f.read() for f in files]


async def decode(model: ServedModel, images: list[bytes]):
    """The images as one (B, C, S, S) uint8 batch for `model`; 400 when one is not a readable image."""

    def run():
        if len(images) == 1:
            return model.decode(images[0])[None]
        return torch.stack([model.decode(d) for d in images])

    try:  # small images decode in microseconds: a thread hop would cost more than it saves
        if sum(len(d) for d in images) <= _SMALL_BYTES:
            return run()
        return await run_in_threadpool(run)
    except CnnzooError as e:
        raise ApiError(400, str(e)) from None


# --- running it ------------------------------------------------------------------------------------


def retry_headers(state) -> dict:
    """The headers of a 503: when to try again."""
    return {"Retry-After": str(state.settings.retry_after_s)}


def require_ready(state) -> None:
    if not state.status["ready"]:
        raise ApiError(503, "warming up: try again in a moment", retry_headers(state))


async def forward(request: Request, model: ServedModel, batch) -> BatchResult:
    """`batch` through `model`'s micro-batcher: its `BatchResult`, or 503 (not ready, or waited too long)."""
    state = request.app.state
    require_ready(state)
    try:
        return await model.batcher.submit(batch)
    except Overloaded as e:
        raise ApiError(503, f"server busy: {e}", retry_headers(state)) from None


def batch_headers(result: BatchResult) -> dict:
    """What a response that ran a forward pass says about it: the images it held, how long it waited."""
    return {"X-Batch-Size": str(result.batch_size), "X-Batch-Wait-Ms": f"{1000 * result.wait_s:.3f}"}
