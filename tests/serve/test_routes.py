"""The server's extension point: a route is a module-level handler plus one line in `routes.ROUTES`, and a
handler runs alone, given a request whose `app.state` holds what `create_app` would put there."""

import asyncio
import io
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cnnzoo.data import load_dataset
from cnnzoo.serve import ServeSettings, create_app, routes
from cnnzoo.serve.requests import model_of
from cnnzoo.serve.served import ServedModel

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2 by a warning; httpx serves the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NAME = "lenet5-mnist"


@pytest.fixture(scope="module")
def pngs():
    test = load_dataset("mnist").test
    out = []
    for i in range(8):
        buf = io.BytesIO()
        Image.fromarray(test.images[i, 0].numpy()).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


# A new route, written as one would add it to routes.py: a module-level handler...
async def classes(request: Request) -> JSONResponse:
    model = model_of(request)  # 404 JSON for an unknown name, as every /v1/models/{name}/... route
    return JSONResponse({"model": model.name, "classes": model.predictor.classes})


def test_a_new_route_is_a_handler_and_one_line_in_the_table(monkeypatch, predictor):
    with TestClient(create_app({NAME: predictor})) as c:  # without the line, no route
        assert c.get(f"/v1/models/{NAME}/classes").status_code == 404
    # ... and its one line in the table
    monkeypatch.setattr(routes, "ROUTES", [*routes.ROUTES, Route("/v1/models/{name}/classes", classes)])
    with TestClient(create_app({NAME: predictor}), raise_server_exceptions=False) as c:
        r = c.get(f"/v1/models/{NAME}/classes")
        assert r.status_code == 200 and r.json() == {"model": NAME, "classes": [str(i) for i in range(10)]}
        missing = c.get("/v1/models/nope/classes")
        assert missing.status_code == 404 and missing.json()["status"] == 404
        assert c.post(f"/v1/models/{NAME}/classes").status_code == 405  # GET only, like the table's others
        assert c.get("/healthz").json() == {"status": "ok"}  # the table's own routes are all still there
        assert 'route="/v1/models/{name}/classes"' in c.get("/metrics").text  # observed like any route


def fake_request(state: State, path: str, *, method="GET", body=b"", headers=(), path_params=None):
    """A request as Starlette gives it to a handler: its scope, the app (just a `state`) and the body."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "app": SimpleNamespace(state=state),
        "path_params": path_params or {},
    }

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def alone_state(predictor, executor, *, ready: bool) -> State:
    """What `create_app` puts in `app.state`, made by hand: one served model, not warmed up."""
    settings = ServeSettings()
    served = ServedModel(
        NAME, predictor, executor, max_batch_size=4, max_delay_s=0, timeout_s=5, max_pixels=10**6
    )
    return State(
        {
            "settings": settings,
            "served": {NAME: served},
            "metrics": None,
            "executor": executor,
            "status": {"ready": ready},
        }
    )


def test_a_handler_runs_alone_on_a_request_whose_app_state_holds_a_served_model(predictor, pngs):
    with ThreadPoolExecutor(max_workers=1) as executor:
        state = alone_state(predictor, executor, ready=False)
        r = asyncio.run(routes.readyz(fake_request(state, "/readyz")))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        r = asyncio.run(routes.list_models(fake_request(state, "/v1/models")))
        (info,) = json.loads(r.body)["models"]
        assert info["name"] == NAME and info["input_size"] == [1, 28, 28]

        state.status["ready"] = True
        request = fake_request(
            state,
            f"/v1/models/{NAME}/predict",
            method="POST",
            body=pngs[0],
            headers=[("content-type", "image/png")],
            path_params={"name": NAME},
        )

        async def predict_alone():
            batcher = state.served[NAME].batcher
            batcher.start()
            try:
                return await routes.predict(request)
            finally:
                await batcher.stop()

        r = asyncio.run(predict_alone())
    assert r.status_code == 200 and r.headers["x-batch-size"] == "1"
    assert json.loads(r.body) == {"model": NAME, "top": predictor.predict([pngs[0]])[0]["top"]}


def test_the_served_forward_is_the_predictors_own(predictor, pngs):
    with ThreadPoolExecutor(max_workers=1) as executor:
        served = alone_state(predictor, executor, ready=True).served[NAME]
    batch = torch.stack([served.decode(png) for png in pngs])
    expected = predictor.logits(predictor.preprocess(pngs))  # what `cnnzoo predict` computes
    assert torch.equal(predictor.logits_of_uint8(batch), expected)
    assert torch.equal(served.run_batch(batch), expected.softmax(1))
