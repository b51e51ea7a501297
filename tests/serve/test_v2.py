"""The Open Inference Protocol (KServe v2) beside /v1, checked with the real client: Triton's
`tritonclient.http` (PyPI) talks to `cnnzoo serve`'s app on uvicorn over loopback, on real MNIST test
digits, through both inputs, with binary tensor data and with JSON; the logits are the Predictor's (what
`cnnzoo predict` computes). Then the codec alone, the errors' body, /v2 and /v1 sharing micro-batches,
the metrics, and the batcher running a lone request at once."""

import asyncio
import base64
import gzip
import io
import json
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from starlette.datastructures import State
from starlette.requests import Request

from cnnzoo.data import load_dataset
from cnnzoo.serve import ServeSettings, create_app, v2
from cnnzoo.serve.requests import ApiError
from cnnzoo.serve.served import ServedModel
from cnnzoo.serve.v2_codec import InferRequest, Requested, TensorSpec, classify, encode_infer, parse_infer

httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (the dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2 by a warning; httpx serves the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NAME = "lenet5-mnist"
COUNT = 8  # test digits per request


@pytest.fixture(scope="module")
def address(predictor, serving):
    with serving({NAME: predictor}) as a:
        yield a


@pytest.fixture(scope="module")
def client(address):
    c = httpclient.InferenceServerClient(address, network_timeout=60)
    yield c
    c.close()


@pytest.fixture(scope="module")
def digits():
    """COUNT MNIST test digits: their PNG files and labels."""
    test = load_dataset("mnist").test
    pngs = []
    for i in range(COUNT):
        buf = io.BytesIO()
        Image.fromarray(test.images[i, 0].numpy()).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return pngs, [int(y) for y in test.labels[:COUNT]]


@pytest.fixture(scope="module")
def expected(predictor, digits):
    """What `cnnzoo predict` computes for the digits: the normalised batch and its logits."""
    x = predictor.preprocess(digits[0])
    return x.numpy(), predictor.logits(x).numpy()


def assert_same_logits(got: np.ndarray, want: np.ndarray) -> None:
    # the same forward on the same batch; a float-rounding margin (1e-6 of the logit scale) only in
    # case the forward thread's kernels split the work otherwise than this thread's
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    assert np.array_equal(got.argmax(1), want.argmax(1))


def image_input(pngs: list[bytes], binary: bool):
    x = httpclient.InferInput("image", [len(pngs)], "BYTES")
    if binary:  # the files' bytes, as they are
        return x.set_data_from_numpy(np.array(pngs, dtype=object), binary_data=True)
    # JSON strings cannot hold a PNG's bytes: in JSON the files travel as base64
    return x.set_data_from_numpy(
        np.array([base64.b64encode(p) for p in pngs], dtype=object), binary_data=False
    )


def float_input(x: np.ndarray, binary: bool):
    return httpclient.InferInput("input", list(x.shape), "FP32").set_data_from_numpy(x, binary_data=binary)


# --- through tritonclient -------------------------------------------------------------------------------


def test_health_and_metadata(client, predictor):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(NAME) and client.is_model_ready(NAME, "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready(NAME, "2")
    server = client.get_server_metadata()
    assert server["name"] == "cnnzoo" and server["version"] == "0.1.0"
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    meta = client.get_model_metadata(NAME)
    assert meta == client.get_model_metadata(NAME, "1")
    assert meta["name"] == NAME and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ]
    params = meta["parameters"]
    assert params["classes"] == predictor.classes
    assert params["mean"] == pytest.approx(list(predictor.meta["mean"]))
    assert params["std"] == pytest.approx(list(predictor.meta["std"]))
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "404" and "unknown model" in e.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_images_gives_the_predictors_logits(client, digits, expected, binary):
    pngs, labels = digits
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("logits", "probabilities")]
    result = client.infer(NAME, [image_input(pngs, binary)], outputs=outputs, request_id="digits")
    logits, probs = result.as_numpy("logits"), result.as_numpy("probabilities")
    assert logits.dtype == np.float32 and logits.shape == (COUNT, 10)
    assert_same_logits(logits, expected[1])
    np.testing.assert_allclose(probs, torch.tensor(logits).softmax(1).numpy(), atol=1e-6)
    assert logits.argmax(1).tolist() == labels  # real digits, read right
    response = result.get_response()
    assert response["id"] == "digits" and response["model_name"] == NAME and response["model_version"] == "1"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_the_normalised_input_gives_the_predictors_logits(client, digits, expected, binary):
    x, want = expected
    result = client.infer(NAME, [float_input(x, binary)], model_version="1")  # no outputs named: all, binary
    assert_same_logits(result.as_numpy("logits"), want)
    assert result.as_numpy("probabilities").shape == (COUNT, 10)
    assert result.as_numpy("logits").argmax(1).tolist() == digits[1]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_the_classification_extension_gives_score_index_label(client, predictor, digits, binary):
    pngs, labels = digits
    asked = [httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)]
    classes = client.infer(NAME, [image_input(pngs, True)], outputs=asked).as_numpy("probabilities")
    assert classes.shape == (COUNT, 3)
    want = predictor.predict(pngs, top_k=3)
    for row, label, top in zip(classes, labels, want, strict=True):
        rows = [(s.decode() if isinstance(s, bytes) else s).split(":") for s in row]
        assert [int(i) for _, i, _ in rows][0] == label
        assert [c for _, _, c in rows] == [t["class"] for t in top["top"]]
        np.testing.assert_allclose(
            [float(v) for v, _, _ in rows], [t["probability"] for t in top["top"]], atol=2e-6
        )


def test_a_compressed_request_is_inflated(client, expected):
    x, want = expected
    result = client.infer(NAME, [float_input(x, True)], request_compression_algorithm="gzip")
    assert_same_logits(result.as_numpy("logits"), want)


def test_a_wrong_datatype_shape_or_name_is_a_400_saying_so(client, expected):
    x = expected[0]
    wrong = [
        (httpclient.InferInput("input", list(x.shape), "FP64").set_data_from_numpy(x.astype(np.float64)), "datatype"),
        (httpclient.InferInput("input", [COUNT, 1, 27, 27], "FP32").set_data_from_numpy(x[:, :, :27, :27].copy()), "shape"),
        (httpclient.InferInput("pixels", list(x.shape), "FP32").set_data_from_numpy(x), "unknown input"),
        (httpclient.InferInput("image", [1], "BYTES").set_data_from_numpy(np.array([b"not a png"], dtype=object)), "not an image"),
    ]  # fmt: skip
    for tensor, words in wrong:
        with pytest.raises(InferenceServerException) as e:
            client.infer(NAME, [tensor])
        assert e.value.status() == "400" and words in e.value.message(), (words, e.value)
    assert client.is_server_live()


def test_errors_have_the_protocols_body(address, expected):
    url = f"http://{address}"
    x = expected[0][:1]
    good = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    infer = f"{url}/v2/models/{NAME}/infer"
    cases = [
        ("wrong datatype", "post", infer, {"json": {"inputs": [{**good, "datatype": "INT8"}]}}, 400, "datatype"),
        ("wrong shape", "post", infer, {"json": {"inputs": [{**good, "shape": [1, 28, 28]}]}}, 400, "shape"),
        ("wrong name", "post", infer, {"json": {"inputs": [{**good, "name": "x"}]}}, 400, "unknown input"),
        ("two inputs", "post", infer, {"json": {"inputs": [good, good]}}, 400, "exactly one"),
        ("unknown output", "post", infer, {"json": {"inputs": [good], "outputs": [{"name": "x"}]}}, 400, "unknown output"),
        ("not JSON", "post", infer, {"content": b"\x89PNG"}, 400, "not JSON"),
        ("too few numbers", "post", infer, {"json": {"inputs": [{**good, "data": [0.0] * 5}]}}, 400, "elements"),
        ("unknown model", "post", f"{url}/v2/models/nope/infer", {"json": {"inputs": [good]}}, 404, "unknown model"),
        ("unknown version", "get", f"{url}/v2/models/{NAME}/versions/7", {}, 404, "no version"),
        ("unknown route", "get", f"{url}/v2/models/{NAME}/config", {}, 404, "no route"),
        ("wrong method", "get", infer, {}, 405, "not allowed"),
    ]  # fmt: skip
    for label, method, where, kwargs, status, words in cases:
        r = getattr(httpx, method)(where, timeout=60, **kwargs)
        assert r.status_code == status, (label, r.status_code, r.text)
        body = r.json()
        assert list(body) == ["error"] and words in body["error"], (label, body)  # the spec's body, only
    v1 = httpx.post(f"{url}/v1/models/nope/predict", content=b"x", headers={"content-type": "image/png"})
    assert v1.json() == {"error": v1.json()["error"], "status": 404}  # /v1 keeps its own


def test_metrics_count_the_v2_routes(client, address, expected):
    client.infer(NAME, [float_input(expected[0], True)])
    with pytest.raises(InferenceServerException):
        client.infer(
            NAME, [httpclient.InferInput("x", [1], "FP32").set_data_from_numpy(np.zeros(1, np.float32))]
        )
    text = httpx.get(f"http://{address}/metrics").text
    route = re.escape('route="/v2/models/{name}/infer"')
    assert re.search(r'cnnzoo_requests_total\{code="200",method="POST",' + route + r"\} [1-9]", text)
    assert re.search(r'cnnzoo_request_errors_total\{code="400",' + route + r"\} [1-9]", text)
    assert re.search(r'cnnzoo_requests_total\{code="200",method="GET",route="/v2/health/live"\} [1-9]', text)


# --- the codec alone --------------------------------------------------------------------------------------

INPUTS = {"input": TensorSpec("input", "FP32", (-1, 1, 2, 2)), "image": TensorSpec("image", "BYTES", (-1,))}
OUTPUTS = ("logits", "probabilities")


def parse(doc: dict, binary: bytes = b"", *, header: str | None = None) -> InferRequest:
    head = json.dumps(doc).encode()
    if binary and header is None:
        header = str(len(head))
    return parse_infer(head + binary, header, INPUTS, OUTPUTS, max_batch=4)


def test_codec_reads_json_and_binary_tensors():
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    as_json = parse(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 2, 2], "data": x.tolist()}]}
    )
    size = {"parameters": {"binary_data_size": 32}}
    as_binary = parse(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 2, 2], **size}]}, x.tobytes()
    )
    for req in (as_json, as_binary):
        assert np.array_equal(req.value, x) and req.value.dtype == np.float32 and req.value.flags.writeable
        assert req.outputs == (Requested("logits"), Requested("probabilities"))
    elements = b"".join(len(b).to_bytes(4, "little") + b for b in (b"ab", b"", b"cde"))
    req = parse(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(elements)}}],
         "outputs": [{"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}}],
         "parameters": {"binary_data_output": False}, "id": "7"},
        elements,
    )  # fmt: skip
    assert req.value == [b"ab", b"", b"cde"] and req.id == "7"
    assert req.outputs == (Requested("probabilities", binary=True, classification=2),)
    encoded = parse({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(b"\x89PNG").decode()]}]})  # fmt: skip
    assert encoded.value == [b"\x89PNG"]


def test_codec_refuses_malformed_requests_saying_what_is_wrong():
    fp_bin = {"name": "input", "datatype": "FP32", "shape": [1, 1, 2, 2]}
    fp = {**fp_bin, "data": [0.0, 1.0, 2.0, 3.0]}
    cases = [
        ({"inputs": [fp]}, b"\x00" * 4, None, "no input declares binary_data_size"),
        ({"inputs": [{**fp, "data": [0.0, 1.0, 2.0, float("nan")]}]}, b"", None, "NaN"),
        ({"inputs": [{**fp, "data": ["0", "1", "2", "3"]}]}, b"", None, "numbers only"),
        ({"inputs": [{**fp, "data": [[0.0, 1.0], [2.0]]}]}, b"", None, "numbers only"),
        ({"inputs": [{**fp, "shape": [5, 1, 2, 2], "data": [0.0] * 20}]}, b"", None, "at most 4"),
        ({"inputs": [{**fp, "shape": [0, 1, 2, 2], "data": []}]}, b"", None, "at least 1"),
        ({"inputs": [{**fp, "parameters": {"shared_memory_region": "r"}}]}, b"", None, "shared memory"),
        ({"inputs": [{**fp_bin, "parameters": {"binary_data_size": 15}}]}, bytes(16), None, "binary_data_size 15"),
        ({"inputs": [{**fp_bin, "parameters": {"binary_data_size": 15}}]}, bytes(15), None, "16 bytes of FP32"),
        ({"inputs": [{**fp, "parameters": {"binary_data_size": 16}}]}, bytes(16), None, "both"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
         b"\x09\x00\x00\x00ab", None, "fewer follow"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 6}}]},
         b"\x02\x00\x00\x00ab", None, "holds 1"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}]}, b"", None, "base64"),
        ({"inputs": [fp], "outputs": [{"name": "logits"}, {"name": "logits"}]}, b"", None, "twice"),
        ({"inputs": [fp], "outputs": [{"name": "logits", "parameters": {"classification": -1}}]}, b"", None, "classification"),
        ({"inputs": [fp], "id": 5}, b"", None, '"id"'),
        ({"inputs": [fp]}, b"", "999", "Inference-Header-Content-Length"),
        ({"inputs": []}, b"", None, "exactly one"),
    ]  # fmt: skip
    for doc, binary, header, words in cases:
        with pytest.raises(ApiError) as e:
            parse(doc, binary, header=header)
        assert e.value.status == 400 and words in e.value.message, (words, e.value.message)
    with pytest.raises(ApiError, match="not JSON"):
        parse_infer(b"{", None, INPUTS, OUTPUTS, max_batch=4)


def test_codec_writes_what_tritonclient_reads():
    logits = np.array([[1.0, 3.0, 2.0], [-1.0, -2.0, 0.5]], np.float32)
    tensors = {"logits": logits, "probabilities": torch.from_numpy(logits).softmax(1).numpy()}
    labels = ["cat", "dog", "eel"]
    request = InferRequest(
        "r1", "input", np.zeros(1), (Requested("logits", True), Requested("probabilities", False, 2))
    )
    body, headers, media = encode_infer("m", "1", request, tensors, labels)
    assert media == "application/octet-stream"
    result = httpclient.InferResult.from_response_body(
        body, header_length=int(headers["Inference-Header-Content-Length"])
    )
    assert np.array_equal(result.as_numpy("logits"), logits)
    assert result.as_numpy("probabilities").tolist() == [
        [f"{tensors['probabilities'][0, 1]:f}:1:dog", f"{tensors['probabilities'][0, 2]:f}:2:eel"],
        [f"{tensors['probabilities'][1, 2]:f}:2:eel", f"{tensors['probabilities'][1, 0]:f}:0:cat"],
    ]
    assert result.get_response()["id"] == "r1"
    as_bytes = encode_infer(
        "m", "1", InferRequest(None, "input", np.zeros(1), (Requested("logits", True, 1),)), tensors, labels
    )
    read = httpclient.InferResult.from_response_body(
        as_bytes[0], header_length=int(as_bytes[1]["Inference-Header-Content-Length"])
    )
    assert read.as_numpy("logits").tolist() == [[b"3.000000:1:dog"], [b"0.500000:2:eel"]]
    assert classify(logits, 9, labels).shape == (2, 3)  # at most K classes


# --- in-process: /v1 and /v2 in the same micro-batches; a lone request at once ---------------------------


def test_v1_and_v2_requests_share_micro_batches(predictor, digits, expected):
    """A first request runs at once (the batcher is idle) and its forward is held back; three more, one
    /v1 PNG, one /v2 image and one /v2 normalised input, queue meanwhile and then share one forward."""
    app = create_app({NAME: predictor}, ServeSettings(max_batch_size=32, max_delay_ms=20))
    pngs, x = digits[0], expected[0]
    v2_image = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(pngs[1]).decode()]}]}  # fmt: skip
    v2_input = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": x[2].ravel().tolist()}]}  # fmt: skip
    png = {"content-type": "image/png"}

    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                while (await c.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.02)
                app.state.executor.submit(time.sleep, 0.6)  # holds the first forward back
                first = asyncio.ensure_future(
                    c.post(f"/v1/models/{NAME}/predict", content=pngs[0], headers=png)
                )
                await asyncio.sleep(0.15)  # it is on the forward thread now (margins for a busy machine)
                together = await asyncio.gather(
                    c.post(f"/v1/models/{NAME}/predict?top_k=10", content=pngs[0], headers=png),
                    c.post(f"/v2/models/{NAME}/infer", json=v2_image),
                    c.post(f"/v2/models/{NAME}/infer", json=v2_input),
                )
                return await first, together

    first, (v1, image, inp) = asyncio.run(run())
    assert first.headers["x-batch-size"] == "1"
    assert [r.headers["x-batch-size"] for r in (v1, image, inp)] == ["3", "3", "3"]
    logits = {r: np.array(r.json()["outputs"][0]["data"], np.float32) for r in (image, inp)}
    np.testing.assert_allclose(logits[image], expected[1][1], atol=1e-4)
    np.testing.assert_allclose(logits[inp], expected[1][2], atol=1e-4)
    assert v1.json()["top"][0]["class"] == str(digits[1][0])


def test_a_request_that_finds_the_batcher_idle_runs_at_once(predictor, digits):
    """With a long --max-delay-ms a lone request still does not wait for company that is not coming."""
    settings = ServeSettings(max_batch_size=32, max_delay_ms=2000)
    with TestClient(create_app({NAME: predictor}, settings)) as c:
        while c.get("/readyz").status_code != 200:
            time.sleep(0.02)
        for _ in range(3):
            r = c.post(
                f"/v1/models/{NAME}/predict", content=digits[0][0], headers={"content-type": "image/png"}
            )
            assert r.status_code == 200 and r.headers["x-batch-size"] == "1"
            assert float(r.headers["x-batch-wait-ms"]) < 500  # not the 2,000 ms delay


def test_a_body_past_the_limit_is_413_even_gzipped(predictor):
    with TestClient(create_app({NAME: predictor}, ServeSettings(max_body_bytes=10_000))) as c:
        bomb = gzip.compress(b"{" + b" " * 1_000_000 + b"}")
        r = c.post(f"/v2/models/{NAME}/infer", content=bomb, headers={"content-encoding": "gzip"})
        assert r.status_code == 413 and list(r.json()) == ["error"]
        r = c.post(f"/v2/models/{NAME}/infer", content=b"{}", headers={"content-encoding": "br"})
        assert r.status_code == 415
        r = c.post(f"/v2/models/{NAME}/infer", content=bytes(20_000))
        assert r.status_code == 413 and "over the limit" in r.json()["error"]


def test_the_handlers_run_alone(predictor, expected):
    """A /v2 handler is a module-level function of a request whose app.state holds what create_app puts
    there: called here without an app, a server or a socket."""
    x, want = expected
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()  # fmt: skip

    def request(path: str, params: dict, body: bytes = b"", headers=()) -> Request:
        scope = {"type": "http", "method": "POST" if body else "GET", "path": path, "query_string": b"",
                 "headers": [(k.encode(), v.encode()) for k, v in headers], "path_params": params,
                 "app": SimpleNamespace(state=state)}  # fmt: skip

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        return Request(scope, receive)

    async def infer_alone():
        model.batcher.start()
        try:
            return await v2.infer(
                request(
                    f"/v2/models/{NAME}/infer",
                    {"name": NAME},
                    head + x.tobytes(),
                    [("inference-header-content-length", str(len(head)))],
                )  # fmt: skip
            )
        finally:
            await model.batcher.stop()

    with ThreadPoolExecutor(max_workers=1) as executor:
        model = ServedModel(
            NAME, predictor, executor, max_batch_size=32, max_delay_s=0, timeout_s=5, max_pixels=10**6
        )
        state = State({"settings": ServeSettings(), "served": {NAME: model}, "status": {"ready": True}})
        meta = asyncio.run(v2.model_metadata(request(f"/v2/models/{NAME}", {"name": NAME})))
        assert json.loads(meta.body)["inputs"][0]["shape"] == [-1, 1, 28, 28]
        r = asyncio.run(infer_alone())
    n = int(r.headers["inference-header-content-length"])
    result = httpclient.InferResult.from_response_body(bytes(r.body), header_length=n)
    assert_same_logits(result.as_numpy("logits"), want)
    assert r.headers["x-batch-size"] == str(COUNT)
