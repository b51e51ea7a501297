"""Settings and fixtures for the whole suite."""

import contextlib
import os
import socket
import threading
import time

import pytest

# The thread count stays fixed in the tests, as `CNNZOO_THREADS=N` fixes it for a user who wants runs that
# repeat bit for bit: cnnzoo's tuner (runtime.ThreadTuner) picks it from measured step times, so on a loaded
# machine it could change mid-run, and with it the order of the floating-point sums that tests comparing two
# runs exactly rely on. tests/test_threads.py tests the tuner itself.
os.environ.setdefault("CNNZOO_THREADS", str(os.cpu_count() or 1))


@contextlib.contextmanager
def _serving(predictors: dict, settings=None):
    """The app on uvicorn in a thread, on a free loopback port: "127.0.0.1:PORT" (tritonclient's form).
    uvicorn as `cnnzoo serve` configures it; the signals stay the test runner's (a thread has none)."""
    # imported here: the peers' side environment (make test-peers) has no serve extra
    import httpx
    import uvicorn

    from cnnzoo.serve import ServeSettings, create_app
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
