"""The HTTP API in-process: routes, micro-batching, every bad input, metrics, the access log, the page."""

import asyncio
import base64
import io
import json
import logging
import re
import struct
import time
import warnings
import zlib

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2 by a warning; httpx serves the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from cnnzoo.data import load_dataset
from cnnzoo.errors import CnnzooError
from cnnzoo.serve import ServeSettings, create_app
from cnnzoo.summary import summarize

NAME = "lenet5-mnist"
PREDICT = f"/v1/models/{NAME}/predict"
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def digits():
    test = load_dataset("mnist").test
    return [test.images[i, 0].numpy() for i in range(64)]


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def wait_ready(client) -> None:
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the app never became ready"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(predictor):
    settings = ServeSettings(max_body_bytes=200_000, timeout_ms=250)
    with TestClient(create_app({NAME: predictor}, settings), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def test_health_readiness_and_model_list(client, predictor):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "models": [NAME]}
    (info,) = client.get("/v1/models").json()["models"]
    assert info["name"] == NAME and info["classes"] == [str(i) for i in range(10)]
    assert info["input_size"] == [1, 28, 28] and info["source"] == predictor.source
    assert info["accuracy"] is None or 50 < info["accuracy"] <= 100


def test_predict_gives_what_the_predictor_gives(client, predictor, digits, tmp_path):
    path = tmp_path / "d.png"
    path.write_bytes(encode(digits[0]))
    expected = predictor.predict([str(path)], top_k=3)[0]["top"]
    raw = client.post(PREDICT + "?top_k=3", content=path.read_bytes(), headers=PNG)
    assert raw.status_code == 200 and raw.json() == {"model": NAME, "top": expected}
    assert int(raw.headers["x-batch-size"]) >= 1 and float(raw.headers["x-batch-wait-ms"]) >= 0
    form = client.post(PREDICT + "?top_k=3", files={"file": ("d.png", path.read_bytes(), "image/png")})
    assert form.json()["top"] == expected
    octet = client.post(PREDICT + "?top_k=3", content=encode(digits[0], "BMP"),
                        headers={"content-type": "application/octet-stream"})  # fmt: skip
    assert octet.json()["top"] == expected


def test_predict_batch(client, predictor, digits):
    files = [("file", (f"{i}.png", encode(d), "image/png")) for i, d in enumerate(digits[:5])]
    r = client.post(PREDICT + "/batch?top_k=1", files=files)
    assert r.status_code == 200
    got = [p["top"][0]["class"] for p in r.json()["predictions"]]
    assert got == [t["top"][0]["class"] for t in predictor.predict(digits[:5], top_k=1)]
    assert r.headers["x-batch-size"] == "5"


def test_batched_outputs_equal_one_at_a_time_outputs(predictor, digits):
    """64 concurrent requests share forward passes (X-Batch-Size > 1); the same images sent one at a
    time run alone (X-Batch-Size 1); the probabilities agree to float rounding, the rankings exactly."""
    app = create_app({NAME: predictor}, ServeSettings(max_batch_size=32, max_delay_ms=50))
    bodies = [encode(d) for d in digits]

    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                while (await c.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.02)
                together = await asyncio.gather(
                    *[c.post(PREDICT + "?top_k=10", content=b, headers=PNG) for b in bodies]
                )
                alone = [await c.post(PREDICT + "?top_k=10", content=b, headers=PNG) for b in bodies]
        return together, alone

    together, alone = asyncio.run(run())
    sizes = [int(r.headers["x-batch-size"]) for r in together]
    assert max(sizes) > 1 and all(int(r.headers["x-batch-size"]) == 1 for r in alone)
    for a, b in zip(together, alone, strict=True):
        ta, tb = a.json()["top"], b.json()["top"]
        assert [t["class"] for t in ta] == [t["class"] for t in tb]
        np.testing.assert_allclose([t["probability"] for t in ta], [t["probability"] for t in tb], atol=2e-6)
    # the forward pass itself: one batch of 32 against 32 batches of 1
    served = app.state.served[NAME]
    x = torch.stack([served.decode(b) for b in bodies[:32]])
    batch = served.run_batch(x)
    single = torch.cat([served.run_batch(x[i : i + 1]) for i in range(32)])
    torch.testing.assert_close(batch, single, atol=1e-6, rtol=0)
    assert torch.equal(batch.argmax(1), single.argmax(1))


def test_explain_returns_the_input_feature_maps_and_gradcam(client, digits, predictor):
    for _ in range(20):  # this client's 250 ms limit: a busy machine may need another try, as the page does
        r = client.post(f"/v1/models/{NAME}/explain", content=encode(digits[0]), headers=PNG)
        if r.status_code != 503:
            break
    assert r.status_code == 200
    d = r.json()
    assert d["input_size"] == [1, 28, 28]
    assert [(layer["name"], layer["label"], layer["kind"], layer["shape"]) for layer in d["layers"]] == [
        ("features.1", "C1", "conv", [6, 28, 28]),
        ("features.3", "S2", "pool", [6, 14, 14]),
        ("features.4", "C3", "conv", [16, 10, 10]),
        ("features.6", "S4", "pool", [16, 5, 5]),
    ]
    # the layers as the lecture names them, their parameters and arithmetic read off `cnnzoo summary`'s rows
    rows = {r.name: r for r in summarize(predictor.model, (1, 28, 28)).rows}
    arch = d["architecture"]
    assert [a["label"] for a in arch] == ["C1", "S2", "C3", "S4", "C5", "F6", "output"]
    assert sum(a["params"] for a in arch) == sum(p.numel() for p in predictor.model.parameters()) == 61_706
    for a in arch:
        assert a["params"] == rows[a["name"]].params and a["arithmetic"] == rows[a["name"]].param_formula
        assert a["shape"] == list(rows[a["name"]].output_shape)
    assert (
        arch[0]["arithmetic"] == "6 x (1x5x5 + 1) = 156"
        and arch[4]["arithmetic"] == "120 x (400 + 1) = 48,120"
    )
    # the fully connected layers' activations: C5's and F6's after their ReLU, the output's logits
    acts = d["activations"]
    assert [(a["label"], len(a["values"])) for a in acts] == [("C5", 120), ("F6", 84), ("output", 10)]
    assert min(acts[0]["values"]) >= 0 and min(acts[1]["values"]) >= 0
    x = predictor.normalized(torch.from_numpy(digits[0])[None, None])
    with torch.inference_mode():
        logits = predictor.model(x)[0].numpy()
    np.testing.assert_allclose(acts[2]["values"], logits, atol=1e-4)
    images = [d["input"], d["gradcam"]["overlay"], *(layer["image"] for layer in d["layers"])]
    for url in images:
        assert url.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).verify()
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(d["input"].split(",", 1)[1]))))
    assert np.array_equal(seen, digits[0])  # the 28x28 the model reads
    assert d["gradcam"]["layer"] == "features.6" and d["gradcam"]["class"] == d["top"][0]["class"]
    assert np.array(d["gradcam"]["heatmap"]).shape == (28, 28)


def _bomb_png(side: int = 60_000) -> bytes:
    """A valid 1x1 PNG whose header declares side x side pixels."""
    png = bytearray(encode(np.zeros((1, 1), np.uint8)))
    ihdr = png.index(b"IHDR")
    png[ihdr + 4 : ihdr + 12] = struct.pack(">II", side, side)
    png[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(png[ihdr : ihdr + 17])))
    return bytes(png)


def _chunks(data: bytes):
    for i in range(0, len(data), 50_000):
        yield data[i : i + 50_000]


def test_every_bad_input_is_a_4xx_with_a_json_error_and_the_server_keeps_answering(client, digits):
    png, jpeg = encode(digits[0]), encode(digits[0], "JPEG")
    big = bytes(250_000)
    cases = [
        ("empty body", "post", PREDICT, dict(content=b"", headers=PNG), 400, "empty"),
        ("text posted as an image", "post", PREDICT, dict(content=b"hello, world", headers=PNG), 400, "not an image"),
        ("truncated PNG", "post", PREDICT, dict(content=png[: len(png) // 2], headers=PNG), 400, "truncated"),
        ("truncated JPEG", "post", PREDICT, dict(content=jpeg[: len(jpeg) // 2], headers={"content-type": "image/jpeg"}), 400, "truncated"),
        ("decompression bomb", "post", PREDICT, dict(content=_bomb_png(), headers=PNG), 400, "decompression bomb"),
        ("over the size limit", "post", PREDICT, dict(content=big, headers=PNG), 413, "over the limit"),
        ("over the limit, chunked", "post", PREDICT, dict(content=_chunks(big), headers=PNG), 413, "over the limit"),
        ("text content type", "post", PREDICT, dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "text/plain"),
        ("JSON content type", "post", PREDICT, dict(json={"image": "x"}), 415, "application/json"),
        ("no content type", "post", PREDICT, dict(content=png), 415, "none"),
        ("unknown model", "post", "/v1/models/resnet9000/predict", dict(content=png, headers=PNG), 404, "unknown model"),
        ("unknown route", "get", "/v9/everything", {}, 404, "no route"),
        ("wrong method", "get", PREDICT, {}, 405, "not allowed"),
        ("top_k zero", "post", PREDICT + "?top_k=0", dict(content=png, headers=PNG), 400, "top_k"),
        ("top_k not a number", "post", PREDICT + "?top_k=many", dict(content=png, headers=PNG), 400, "top_k"),
        ("form without a file", "post", PREDICT, dict(data={"a": "b"}, files={}), 415, "content type"),
        ("multipart, no file part", "post", PREDICT,
         dict(content=b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--x--\r\n",
              headers={"content-type": "multipart/form-data; boundary=x"}), 400, "no file part"),
        ("two files to /predict", "post", PREDICT, dict(files=[("f", ("a.png", png)), ("f", ("b.png", png))]), 400, "predict/batch"),
        ("empty file part", "post", PREDICT, dict(files={"file": ("a.png", b"", "image/png")}), 400, "empty"),
        ("explain, not an image", "post", f"/v1/models/{NAME}/explain", dict(content=b"GIF89a", headers={"content-type": "image/gif"}), 400, "image"),
    ]  # fmt: skip
    for label, method, path, kwargs, status, words in cases:
        r = getattr(client, method)(path, **kwargs)
        assert r.status_code == status, (label, r.status_code, r.text)
        body = r.json()
        assert body["status"] == status and words.lower() in body["error"].lower(), (label, body)
    assert client.get("/healthz").status_code == 200
    assert client.post(PREDICT, content=png, headers=PNG).status_code == 200


def test_a_request_that_waits_too_long_gets_503_with_retry_after(client, digits):
    blocker = client.app.state.executor.submit(time.sleep, 0.6)  # the forward thread is busy
    r = client.post(PREDICT, content=encode(digits[0]), headers=PNG)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "waited" in r.json()["error"]
    blocker.result()
    assert client.get("/healthz").status_code == 200
    assert client.post(PREDICT, content=encode(digits[0]), headers=PNG).status_code == 200


def test_metrics_count_requests_errors_latency_batches_and_queue(client, digits):
    client.post(PREDICT, content=encode(digits[1]), headers=PNG)
    client.post(PREDICT, content=b"x", headers={"content-type": "text/plain"})
    text = client.get("/metrics").text
    route = re.escape('route="/v1/models/{name}/predict"')
    assert re.search(r'cnnzoo_requests_total\{code="200",method="POST",' + route + r"\} [1-9]", text)
    assert re.search(r'cnnzoo_request_errors_total\{code="415",' + route + r"\} [1-9]", text)
    assert re.search(r'cnnzoo_request_duration_seconds_bucket\{le="0.01",' + route + r"\}", text)
    assert re.search(r'cnnzoo_batch_size_count\{model="lenet5-mnist"\} [1-9]', text)
    assert 'cnnzoo_queue_depth{model="lenet5-mnist"} 0.0' in text
    assert 'route="unmatched"' in text  # unknown paths share one label, whatever they are


def test_access_log_is_one_json_line_per_request(client, digits, caplog):
    with caplog.at_level(logging.INFO, logger="cnnzoo.serve.access"):
        client.post(PREDICT, content=encode(digits[2]), headers=PNG)
        client.get("/nope")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "cnnzoo.serve.access"]
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("POST", PREDICT, 200),
        ("GET", "/nope", 404),
    ]
    assert lines[0]["route"] == "/v1/models/{name}/predict" and lines[0]["batch"] >= 1 and lines[0]["ms"] > 0


def test_the_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "<canvas" in html and 'id="upload"' in html and 'id="model"' in html and 'id="clear"' in html
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html)  # nothing fetched from elsewhere
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_several_models_and_bad_settings(predictor, digits):
    app = create_app({"a": predictor, "b": predictor})
    with TestClient(app) as c:
        wait_ready(c)
        assert [m["name"] for m in c.get("/v1/models").json()["models"]] == ["a", "b"]
        assert c.post("/v1/models/b/predict", content=encode(digits[0]), headers=PNG).status_code == 200
    with pytest.raises(CnnzooError, match="max_batch_size"):
        ServeSettings(max_batch_size=0)
    with pytest.raises(CnnzooError, match="model name"):
        create_app({"no spaces": predictor})


def test_not_ready_until_warmed_up_but_alive(predictor, digits):
    app = create_app({NAME: predictor})
    blocker = app.state.executor.submit(time.sleep, 0.5)  # the warm-up queues behind this
    with TestClient(app) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json() == {"ready": False, "models": [NAME]}
        assert r.headers["retry-after"] == "1"
        early = c.post(PREDICT, content=encode(digits[0]), headers=PNG)
        assert early.status_code == 503 and "warming up" in early.json()["error"]
        assert c.get("/healthz").status_code == 200
        blocker.result()
        wait_ready(c)
        assert c.post(PREDICT, content=encode(digits[0]), headers=PNG).status_code == 200


def test_load_models_names_the_routes(lenet_source):
    from cnnzoo.serve import load_models

    models = load_models([lenet_source, lenet_source], ["mine=" + lenet_source])
    assert list(models) == ["lenet5-mnist", "lenet5-mnist-2", "mine"]
    with pytest.raises(CnnzooError, match="NAME=SOURCE"):
        load_models([], ["=x"])
    with pytest.raises(CnnzooError, match="model name"):
        load_models([], ["no/slash=" + lenet_source])
