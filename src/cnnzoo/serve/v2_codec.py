"""The bodies of the Open Inference Protocol's inference (KServe v2, Triton's HTTP/REST) as plain functions
of bytes, without a server: `parse_infer` reads a request, `encode_infer` writes the response.

A tensor travels either in the JSON (`"data"`: its elements in row-major order, flat or nested) or, with
the binary tensor data extension, as raw bytes after the JSON: the request's `Inference-Header-Content-
Length` header says where the JSON ends, each binary input says its size in `"binary_data_size"`, and
their bytes follow in the order of the inputs; FP32 elements little-endian, BYTES elements each a 4-byte
little-endian length and the bytes. An output comes back binary when its `"binary_data"` parameter says
so, or the request's `"binary_data_output"`; the classification extension (an output's `"classification":
k`) returns, instead of the tensor, its k highest elements of each row as BYTES "value:index:label", as
Triton writes them. A JSON string cannot hold an image file's bytes, so a BYTES element in `"data"` is the
file in base64.

Every malformed request is an `ApiError(400, ...)` saying what is wrong and what is expected.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from .requests import ApiError

__all__ = ["TensorSpec", "Requested", "InferRequest", "parse_infer", "encode_infer", "classify"]

_NP = {"FP32": np.dtype("<f4")}  # the numeric datatypes the inputs take: FP32 only (the model's input)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: its name, datatype and shape (-1: any size, the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def shown(self) -> str:
        return f"{self.name!r} ({self.datatype} {list(self.shape)})"


@dataclass(frozen=True)
class Requested:
    """An output the request asks for: binary or JSON, the tensor or its top `classification` classes."""

    name: str
    binary: bool = False
    classification: int = 0  # 0: the tensor itself


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    input: str  # the input's name
    value: np.ndarray | list[bytes]  # FP32: (B, ...) float32; BYTES: B byte strings
    outputs: tuple[Requested, ...]


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


# --- the request --------------------------------------------------------------------------------------


def parse_infer(
    body: bytes,
    header_length: str | None,
    inputs: dict[str, TensorSpec],
    outputs: tuple[str, ...],
    *,
    max_batch: int,
) -> InferRequest:
    """An inference request's body (and its `Inference-Header-Content-Length`, or None) against the model's
    `inputs` and `outputs`: exactly one input, of the right datatype and shape, at most `max_batch` long."""
    head, binary = _split(body, header_length)
    doc = _json_object(head)
    tensor = _one_input(doc.get("inputs"), inputs)
    spec = inputs[tensor["name"]]
    shape = _shape(tensor, spec, max_batch)
    value = _tensor_value(tensor, spec, shape, binary)
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _bad(f'"id" must be a string, got {type(rid).__name__}')
    return InferRequest(rid, spec.name, value, _requested(doc, outputs))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON head and the binary tail of a body."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise _bad(
            f"Inference-Header-Content-Length {header_length!r} is not a length within the body's "
            f"{len(body):,} bytes"
        )
    n = int(header_length)
    return body[:n], body[n:]


def _json_object(head: bytes) -> dict:
    if not head.strip():
        raise _bad('empty body: send an inference request, a JSON object with "inputs"')
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise _bad(f"the inference request is not JSON ({e}); binary tensor data goes after the JSON, "
                   "its length in the Inference-Header-Content-Length header") from None  # fmt: skip
    if not isinstance(doc, dict):
        raise _bad(f"the inference request must be a JSON object, got {type(doc).__name__}")
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise _bad('"parameters" must be a JSON object')
    return doc


def _one_input(tensors, inputs: dict[str, TensorSpec]) -> dict:
    takes = " or ".join(s.shown() for s in inputs.values())
    if not isinstance(tensors, list) or len(tensors) != 1 or not isinstance(tensors[0], dict):
        got = len(tensors) if isinstance(tensors, list) else "no list of"
        raise _bad(f'the request has {got} "inputs": send exactly one, {takes}')
    tensor = tensors[0]
    name = tensor.get("name")
    if name not in inputs:
        raise _bad(f"unknown input {name!r}: this model takes {takes}")
    datatype = tensor.get("datatype")
    if datatype != inputs[name].datatype:
        raise _bad(f"input {name!r} has datatype {datatype!r}: this model takes {inputs[name].shown()}")
    params = tensor.get("parameters", {})
    if not isinstance(params, dict):
        raise _bad(f'the "parameters" of input {name!r} must be a JSON object')
    if any(k.startswith("shared_memory") for k in params):
        raise _bad("shared memory is not supported by this server: send the data in the request")
    return tensor


def _shape(tensor: dict, spec: TensorSpec, max_batch: int) -> tuple[int, ...]:
    shape = tensor.get("shape")
    ok = isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
    if not ok or len(shape) != len(spec.shape) or shape[0] < 1:
        raise _bad(f"input {spec.name!r} has shape {shape}: this model takes {spec.shown()}, at least 1 long")
    if any(want != -1 and got != want for got, want in zip(shape, spec.shape, strict=True)):
        raise _bad(f"input {spec.name!r} has shape {shape}: this model takes {spec.shown()}")
    if shape[0] > max_batch:
        raise _bad(f"input {spec.name!r} holds {shape[0]} images: at most {max_batch} per request")
    return tuple(shape)


def _tensor_value(tensor: dict, spec: TensorSpec, shape: tuple[int, ...], binary: bytes):
    params = tensor.get("parameters", {})
    size = params.get("binary_data_size")
    count = math.prod(shape)
    if size is not None:
        if not isinstance(size, int) or size != len(binary):
            raise _bad(
                f"input {spec.name!r} declares binary_data_size {size!r}, but {len(binary):,} bytes "
                "follow the JSON (Inference-Header-Content-Length)"
            )
        if "data" in tensor:
            raise _bad(f'input {spec.name!r} has both "data" and binary_data_size: send one')
        if spec.datatype == "BYTES":
            return _bytes_elements(binary, count, spec.name)
        return _fp32_binary(binary, shape, spec)
    if binary:
        raise _bad(f"{len(binary):,} bytes follow the JSON, but no input declares binary_data_size")
    if "data" not in tensor:
        raise _bad(f'input {spec.name!r} has no "data" (nor binary_data_size)')
    if spec.datatype == "BYTES":
        return _base64_elements(tensor["data"], count, spec.name)
    return _fp32_json(tensor["data"], shape, spec)


def _fp32_binary(binary: bytes, shape: tuple[int, ...], spec: TensorSpec) -> np.ndarray:
    want = math.prod(shape) * 4
    if len(binary) != want:
        raise _bad(
            f"input {spec.name!r} of shape {list(shape)} is {want:,} bytes of FP32, got {len(binary):,}"
        )
    return _finite(np.frombuffer(binary, _NP["FP32"]).reshape(shape).astype(np.float32), spec.name)


def _fp32_json(data, shape: tuple[int, ...], spec: TensorSpec) -> np.ndarray:
    try:
        array = np.asarray(data)
    except ValueError:  # ragged nesting
        array = None
    if array is None or array.dtype.kind not in "iuf":
        raise _bad(f'input {spec.name!r}: "data" must hold numbers only (FP32), in row-major order')
    if array.size != math.prod(shape):
        raise _bad(
            f"input {spec.name!r} of shape {list(shape)} has {math.prod(shape):,} elements, got {array.size:,}"
        )
    return _finite(array.astype(np.float32).reshape(shape), spec.name)


def _finite(x: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(x).all():
        raise _bad(f"input {name!r} holds NaN or infinity")
    return x


def _bytes_elements(binary: bytes, count: int, name: str) -> list[bytes]:
    """BYTES in binary: each element a 4-byte little-endian length, then that many bytes."""
    out, at = [], 0
    while at < len(binary):
        if at + 4 > len(binary):
            raise _bad(f"input {name!r}: the binary BYTES data ends inside an element's length")
        (n,) = struct.unpack_from("<I", binary, at)
        if at + 4 + n > len(binary):
            raise _bad(f"input {name!r}: element {len(out)} says {n:,} bytes, fewer follow")
        out.append(binary[at + 4 : at + 4 + n])
        at += 4 + n
    if len(out) != count:
        raise _bad(f"input {name!r} declares {count} elements, its binary data holds {len(out)}")
    return out


def _base64_elements(data, count: int, name: str) -> list[bytes]:
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], list):
        data = data[0]  # [[...]]: a batch nested once
    if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
        raise _bad(f'input {name!r}: "data" must be a list of strings, each an image file in base64')
    if len(data) != count:
        raise _bad(f'input {name!r} declares {count} elements, "data" holds {len(data)}')
    out = []
    for i, s in enumerate(data):
        try:
            out.append(base64.b64decode(s, validate=True))
        except (binascii.Error, ValueError):
            raise _bad(
                f"input {name!r}: element {i} is not base64; in JSON an image file travels as base64 "
                "(or send it as binary tensor data)"
            ) from None
    return out


def _requested(doc: dict, outputs: tuple[str, ...]) -> tuple[Requested, ...]:
    """The outputs asked for, in their order; every output, when the request names none."""
    default = doc.get("parameters", {}).get("binary_data_output", False)
    if not isinstance(default, bool):
        raise _bad('"binary_data_output" must be true or false')
    asked = doc.get("outputs")
    if asked is None:
        return tuple(Requested(name, default) for name in outputs)
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise _bad('"outputs" must be a list of objects, each with a "name"')
    chosen: list[Requested] = []
    for out in asked:
        name, params = out.get("name"), out.get("parameters", {})
        if name not in outputs:
            raise _bad(f"unknown output {name!r}: this model gives {', '.join(map(repr, outputs))}")
        if name in {r.name for r in chosen}:
            raise _bad(f"output {name!r} is asked for twice")
        if not isinstance(params, dict) or any(k.startswith("shared_memory") for k in params):
            raise _bad(f"output {name!r}: parameters must be a JSON object, without shared memory")
        binary, top = params.get("binary_data", default), params.get("classification", 0)
        if not isinstance(binary, bool):
            raise _bad(f'output {name!r}: "binary_data" must be true or false')
        if not isinstance(top, int) or isinstance(top, bool) or top < 0:
            raise _bad(f'output {name!r}: "classification" must be a whole number of classes, got {top!r}')
        chosen.append(Requested(name, binary, top))
    return tuple(chosen)


# --- the response -------------------------------------------------------------------------------------


def classify(scores: np.ndarray, k: int, labels: list[str]) -> np.ndarray:
    """Triton's classification of (B, K) scores: each row's k highest as "value:index:label" (value as
    C's `%f`), highest first; a (B, min(k, K)) array of str."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = [
        [f"{float(row[i]):f}:{i}:{labels[i]}" for i in idx] for row, idx in zip(scores, order, strict=True)
    ]
    return np.array(rows, dtype=object).reshape(len(scores), k)


def _bytes_blob(strings: np.ndarray) -> bytes:
    parts = []
    for s in strings.ravel():
        b = s.encode("utf-8")
        parts += [struct.pack("<I", len(b)), b]
    return b"".join(parts)


def encode_infer(
    model_name: str,
    version: str,
    request: InferRequest,
    tensors: dict[str, np.ndarray],
    labels: list[str],
) -> tuple[bytes, dict, str]:
    """The response to `request` given each output's (B, K) float32 `tensors`: (body, headers, media
    type). With any binary output the body is the JSON then the outputs' bytes, in order, and the
    `Inference-Header-Content-Length` header says where the JSON ends."""
    described, blobs = [], []
    for want in request.outputs:
        x = tensors[want.name]
        if want.classification:
            x = classify(x, want.classification, labels)
        entry = {
            "name": want.name,
            "datatype": "BYTES" if x.dtype == object else "FP32",
            "shape": list(x.shape),
        }
        if want.binary:
            blob = _bytes_blob(x) if x.dtype == object else x.astype("<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = x.ravel().tolist()
        described.append(entry)
    doc = {"model_name": model_name, "model_version": version, "outputs": described}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, {}, "application/json"
    return (
        head + b"".join(blobs),
        {"Inference-Header-Content-Length": str(len(head))},
        "application/octet-stream",
    )
