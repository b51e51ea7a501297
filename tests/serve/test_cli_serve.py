"""`cnnzoo serve` as a user starts it: a subprocess on a free port, answered over loopback, stopped by
SIGTERM while a request is in flight (which still gets its answer)."""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from cnnzoo.cli import main
from cnnzoo.data import load_dataset


def png_of_digit(i: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(load_dataset("mnist").test.images[i, 0].numpy()).save(buf, format="PNG")
    return buf.getvalue()


def test_serve_subprocess_answers_and_shuts_down_gracefully(lenet_source):
    cmd = [sys.executable, "-m", "cnnzoo", "serve", lenet_source, "--port", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        port = int(match.group(1))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            deadline = time.monotonic() + 60
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            name = c.get("/v1/models").json()["models"][0]["name"]
        url, body = f"/v1/models/{name}/predict", png_of_digit()
        # A request in flight when SIGTERM comes: its handler has started reading the body (the server
        # says "100 Continue" when it asks for it), and the body is sent only after the signal.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
            )
            assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # the server is shutting down: no new connection, this request still running
            sock.sendall(body)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"x-batch-size: 1" in head.lower()
        assert json.loads(payload)["top"][0]["class"] == "7"  # the test set's first digit
        assert proc.wait(30) == 0
        log = [json.loads(x) for x in proc.stderr.read().splitlines() if x.startswith("{")]
        assert any(x["path"] == url and x["status"] == 200 for x in log)  # the access log, one JSON line each
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_bad_arguments(capsys, tmp_path):
    assert main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "missing" in capsys.readouterr().err  # the source is named in the one-line error
    assert main(["serve", "--model", "nameonly", "--port", "0"]) == 2
    assert "NAME=SOURCE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--max-batch-size", "0"])
