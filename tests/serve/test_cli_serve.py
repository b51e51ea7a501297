"""`cnnzoo serve` as a user starts it: a subprocess on a free port, answered over loopback, stopped by
SIGTERM while a request is in flight (which still gets its answer)."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
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
    # --max-delay-ms 400: a lone request waits that long for company, so it is in flight when SIGTERM comes
    cmd = [sys.executable, "-m", "cnnzoo", "serve", lenet_source, "--port", "0", "--max-delay-ms", "400"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = f"http://127.0.0.1:{match.group(1)}"
        with httpx.Client(base_url=base, timeout=30) as c:
            deadline = time.monotonic() + 60
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            name = c.get("/v1/models").json()["models"][0]["name"]
            url, body = f"/v1/models/{name}/predict", png_of_digit()
            answered = {}

            def in_flight():
                with httpx.Client(base_url=base, timeout=30) as own:
                    r = own.post(url, content=body, headers={"content-type": "image/png"})
                answered["status"], answered["batch"] = r.status_code, r.headers.get("x-batch-size")

            t = threading.Thread(target=in_flight)
            t.start()
            queued = f'cnnzoo_queue_depth{{model="{name}"}} 1.0'
            while queued not in c.get("/metrics").text:  # the request waits out --max-delay-ms
                assert time.monotonic() < deadline
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            t.join(30)
        assert answered == {"status": 200, "batch": "1"}
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
