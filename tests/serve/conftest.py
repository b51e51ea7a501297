"""The model these tests look at: the bundled LeNet-5 trained on MNIST (99.45%, `cnnzoo models --pretrained`)."""

import contextlib
import socket
import threading
import time

import httpx
import pytest

import cnnzoo
from cnnzoo.serve import ServeSettings, create_app


@pytest.fixture(scope="session")
def lenet_source() -> str:
    return "lenet5:mnist"


@pytest.fixture(scope="module")
def predictor(lenet_source):
    return cnnzoo.load(lenet_source)


@contextlib.contextmanager
def _serving(predictors: dict, settings: ServeSettings | None = None):
    """The app on uvicorn in a thread, on a free loopback port: "127.0.0.1:PORT" (tritonclient's form).
    uvicorn as `cnnzoo serve` configures it; the signals stay the test runner's (a thread has none)."""
    import uvicorn

    from cnnzoo.serve.run import uvicorn_config

    app = create_app(predictors, settings or ServeSettings())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn_config(app))  # `cnnzoo serve`'s own settings
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://{address}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.05)
    try:
        yield address
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def serving():
    """`with serving(predictors[, settings]) as address:` a real server for real clients (a browser, tritonclient)."""
    return _serving
