"""The Open Inference Protocol (KServe v2; Triton's, MLServer's and OpenVINO Model Server's HTTP/REST API)
beside `/v1`, so their clients (`tritonclient.http`, KServe's) talk to `cnnzoo serve` as they are:

    GET  /v2                                          server metadata: name, version, extensions
    GET  /v2/health/live                              alive
    GET  /v2/health/ready                             models warmed up (503 until then)
    GET  /v2/models/{name}[/versions/1]               model metadata: inputs, outputs, mean, std, classes
    GET  /v2/models/{name}[/versions/1]/ready         that model warmed up
    POST /v2/models/{name}[/versions/1]/infer         inference

Each model takes one input per request, either
    input   FP32 [-1, C, H, W]  already normalised: the exported ONNX model's input (its mean and std are
                                in the metadata's "parameters")
    image   BYTES [-1]          encoded image files (PNG, JPEG, ...), decoded and framed as /v1 does
and gives
    logits, probabilities   FP32 [-1, K]   (or, asked with "classification": k, BYTES "value:index:label")
Tensors travel as JSON `data` or as binary tensor data (`v2_codec`). An inference joins the same
micro-batches as /v1's requests, under the same limits; every error is the protocol's `{"error": "..."}`
(the app writes it so on /v2 paths) with a 4xx or 5xx status. Each model has one version, "1".
"""

from __future__ import annotations

import functools
import zlib

import torch
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._version import __version__
from .requests import ApiError, batch_headers, decode, forward, read_body, retry_headers
from .served import ServedModel
from .v2_codec import TensorSpec, encode_infer, parse_infer

__all__ = [
    "server_metadata",
    "server_live",
    "server_ready",
    "model_metadata",
    "model_ready",
    "infer",
    "is_v2",
    "EXTENSIONS",
]

SERVER_NAME = "cnnzoo"
VERSION = "1"  # the one version of every model
PLATFORM = "pytorch"
EXTENSIONS = ["binary_tensor_data", "classification"]
OUTPUTS = ("logits", "probabilities")


def is_v2(path: str) -> bool:
    """Whether a path is the protocol's (its errors are `{"error": ...}`, without /v1's "status")."""
    return path == "/v2" or path.startswith("/v2/")


@functools.cache
def _inputs(channels: int, size: int) -> dict[str, TensorSpec]:
    return {
        "input": TensorSpec("input", "FP32", (-1, channels, size, size)),
        "image": TensorSpec("image", "BYTES", (-1,)),
    }


def inputs_of(model: ServedModel) -> dict[str, TensorSpec]:
    return _inputs(model.predictor.channels, model.predictor.image_size)


def outputs_of(model: ServedModel) -> list[TensorSpec]:
    k = len(model.predictor.classes)
    return [TensorSpec(name, "FP32", (-1, k)) for name in OUTPUTS]


def model_of(request: Request) -> ServedModel:
    """The served model the path names, at its one version; 404 otherwise."""
    served = request.app.state.served
    name = request.path_params["name"]
    if name not in served:
        raise ApiError(404, f"unknown model {name!r} (served: {', '.join(served)})")
    version = request.path_params.get("version", VERSION)
    if version != VERSION:
        raise ApiError(404, f"model {name!r} has no version {version!r}: its one version is {VERSION!r}")
    return served[name]


def _decompressed(request: Request, body: bytes, limit: int) -> bytes:
    """The body as sent, or inflated where the client compressed it (tritonclient's
    `request_compression_algorithm`), within the same limit: 413 past it (a zip bomb stops there)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported: send gzip, deflate or none")
    inflate = zlib.decompressobj(wbits)
    try:
        out = inflate.decompress(body, limit + 1)
    except zlib.error as e:
        raise ApiError(400, f"the {encoding} body does not inflate ({e})") from None
    if len(out) > limit:
        raise ApiError(413, f"the {encoding} body inflates past the limit of {limit:,} bytes")
    if not inflate.eof:
        raise ApiError(400, f"the {encoding} body is truncated")
    return out


# --- handlers -----------------------------------------------------------------------------------------


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})


async def server_live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def server_ready(request: Request) -> Response:
    state = request.app.state
    ready = state.status["ready"]
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503, headers=_not_ready(state, ready))


async def model_ready(request: Request) -> Response:
    state, model = request.app.state, model_of(request)
    ready = state.status["ready"]
    body = {"name": model.name, "ready": ready}
    return JSONResponse(body, status_code=200 if ready else 503, headers=_not_ready(state, ready))


def _not_ready(state, ready: bool) -> dict | None:
    return None if ready else retry_headers(state)


async def model_metadata(request: Request) -> Response:
    model = model_of(request)
    p = model.predictor
    return JSONResponse(
        {
            "name": model.name,
            "versions": [VERSION],
            "platform": PLATFORM,
            "inputs": [spec.metadata() for spec in inputs_of(model).values()],
            "outputs": [spec.metadata() for spec in outputs_of(model)],
            # what `input` must be: (pixels / 255 - mean) / std per channel, and what the K columns mean
            "parameters": {
                "classes": p.classes,
                "mean": [float(m) for m in p.meta["mean"]],
                "std": [float(s) for s in p.meta["std"]],
                "model": p.meta.get("model"),
                "dataset": p.meta.get("dataset"),
                "accuracy": model.provenance["accuracy"],
            },
        }
    )


async def infer(request: Request) -> Response:
    model = model_of(request)
    settings = request.app.state.settings
    body = _decompressed(request, await read_body(request, settings), settings.max_body_bytes)
    req = parse_infer(
        body,
        request.headers.get("inference-header-content-length"),
        inputs_of(model),
        OUTPUTS,
        max_batch=settings.max_batch_images,
    )
    if req.input == "image":
        batch = await decode(model, req.value)  # (B, C, S, S) uint8, as /v1 decodes
    else:
        batch = torch.from_numpy(req.value)  # (B, C, S, S) float32, already normalised
    result = await forward(request, model, batch)
    scores = result.output
    tensors = {"logits": scores.logits.numpy(), "probabilities": scores.probabilities.numpy()}
    content, headers, media = encode_infer(model.name, VERSION, req, tensors, model.predictor.classes)
    headers.update(batch_headers(result))
    return Response(content, media_type=media, headers=headers)
