"""Clients that misbehave, against a real uvicorn server over real sockets (issue 19, item 3): a client gone
mid-body, a body over the limit sent whole without `Expect: 100-continue`, a body that stalls, 200 idle
keep-alive connections, and odd inputs (malformed multipart, absurd `top_k`, a 1x50000 picture, a PNG with
a huge text chunk). Each gets a readable answer and the server goes on answering."""

import io
import json
import logging
import re
import socket
import struct
import time
import urllib.error
import urllib.request
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from cnnzoo.serve import ServeSettings, run
from cnnzoo.serve.run import KEEP_ALIVE_S

NAME = "lenet5-mnist"
PREDICT = f"/v1/models/{NAME}/predict"
LIMIT = 1 << 20  # the body limit of this server: 1 MiB
BODY_TIMEOUT_S = 1.0


class Records(logging.Handler):
    """The records of some loggers, whatever their handlers and propagation (uvicorn's do not propagate)."""

    def __init__(self, *names: str):
        super().__init__(logging.DEBUG)
        self.records, self.loggers = [], [logging.getLogger(n) for n in names]

    def emit(self, record):
        if not any(r is record for r in self.records):  # a child logger's record reaches its parent too
            self.records.append(record)

    def __enter__(self):
        for logger in self.loggers:
            logger.addHandler(self)
        self.levels = [logger.level for logger in self.loggers]
        logging.getLogger("cnnzoo.serve.access").setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        for logger, level in zip(self.loggers, self.levels, strict=True):
            logger.removeHandler(self)
            logger.setLevel(level)


@pytest.fixture(scope="module")
def address(predictor, serving):
    settings = ServeSettings(max_body_bytes=LIMIT, body_timeout_s=BODY_TIMEOUT_S)
    with serving({NAME: predictor}, settings) as address:
        yield address


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def connect(address: str) -> socket.socket:
    host, port = address.split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def head(length: int, extra: str = "") -> bytes:
    return (
        f"POST {PREDICT} HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n"
        f"{extra}\r\n"
    ).encode()


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One HTTP response off a raw socket: status, headers, body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def metric(address: str, name: str, **labels) -> float:
    """A counter's value on /metrics (0 when absent)."""
    text = httpx.get(f"http://{address}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def healthz_ms(address: str) -> float:
    started = time.perf_counter()
    assert httpx.get(f"http://{address}/healthz").json() == {"status": "ok"}
    return 1000 * (time.perf_counter() - started)


def test_a_client_gone_mid_body_is_an_access_log_line_not_a_traceback(address):
    before_500 = metric(address, "cnnzoo_request_errors_total", code="500")
    with Records("cnnzoo.serve", "cnnzoo.serve.access", "uvicorn.error") as seen:
        sock = connect(address)
        sock.sendall(head(100_000) + bytes(5_000))  # declares 100,000 bytes, sends 5,000, goes
        time.sleep(0.2)
        sock.close()
        deadline = time.monotonic() + 30
        while not any('"status": 499' in r.getMessage() for r in seen.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in seen.records]
            time.sleep(0.05)
    (line,) = [json.loads(r.getMessage()) for r in seen.records if r.name == "cnnzoo.serve.access"]
    assert line["status"] == 499 and line["path"] == PREDICT
    problems = [r for r in seen.records if r.levelno >= logging.WARNING or r.exc_info]
    assert problems == [], [r.getMessage() for r in problems]  # no traceback, no "unhandled error"
    assert metric(address, "cnnzoo_request_errors_total", code="499") >= 1
    assert metric(address, "cnnzoo_request_errors_total", code="500") == before_500  # not a 500
    assert healthz_ms(address) < 2000


def test_a_large_body_sent_whole_gets_a_readable_413(address):
    """urllib sends the whole body before reading and asks to close after (`Connection: close`): the
    server reads the body to its end before answering, so urllib reads the 413, never a reset."""
    for size in (20 << 20, 3 * LIMIT, 20 << 20):
        request = urllib.request.Request(
            f"http://{address}{PREDICT}", data=bytes(size), headers={"Content-Type": "image/png"}
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=60)
        assert caught.value.code == 413
        assert "over the limit" in json.loads(caught.value.read())["error"]
    # streamed in chunks, without a declared length: the same
    r = httpx.post(f"http://{address}{PREDICT}", content=(bytes(1 << 18) for _ in range(40)), headers={"content-type": "image/png"})  # fmt: skip
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    # kept alive: the connection serves the next request once the oversized body has been read and dropped
    sock = connect(address)
    sock.sendall(head(3 * LIMIT) + bytes(3 * LIMIT))
    status, headers, _ = read_response(sock)
    assert status == 413 and headers.get("connection") != "close"
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    assert read_response(sock)[:1] == (200,)
    sock.close()


def test_a_client_that_asks_before_sending_gets_the_413_before_sending(address):
    sock = connect(address)
    sock.sendall(head(50 * LIMIT, "Expect: 100-continue\r\n"))  # and waits for "100 Continue"
    status, _, body = read_response(sock)
    assert status == 413 and "52,428,800 bytes" in json.loads(body)["error"]
    sock.close()


def test_a_stalled_body_is_cut_off_and_blocks_nobody(address):
    digit = png(np.zeros((28, 28), np.uint8))
    stalled = [connect(address) for _ in range(5)]
    started = time.monotonic()
    for sock in stalled:
        sock.sendall(head(10_000) + bytes(100))  # declares 10,000 bytes, sends 100, waits
    for _ in range(5):  # meanwhile, others are answered at once
        assert healthz_ms(address) < 2000
        r = httpx.post(f"http://{address}{PREDICT}", content=digit, headers={"content-type": "image/png"})
        assert r.status_code == 200
    for sock in stalled:
        status, headers, body = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert "stopped arriving" in json.loads(body)["error"]
        assert sock.recv(1) == b""  # and closed
        sock.close()
    assert BODY_TIMEOUT_S * 0.9 < time.monotonic() - started < BODY_TIMEOUT_S + 10


def test_200_idle_keep_alive_connections_leave_healthz_answering(address):
    idle = []
    try:
        for _ in range(200):  # each asks once, keeps its connection open and says nothing more
            sock = connect(address)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            idle.append(sock)
        for sock in idle:
            assert read_response(sock)[0] == 200
        times = [healthz_ms(address) for _ in range(20)]
        assert max(times) < 2000, times
        # idle connections do not pile up: uvicorn closes each after KEEP_ALIVE_S
        idle[0].settimeout(KEEP_ALIVE_S + 10)
        assert idle[0].recv(1) == b""
    finally:
        for sock in idle:
            sock.close()


def test_a_connection_that_never_sends_a_whole_head_is_closed(address, monkeypatch):
    """uvicorn closes an idle connection only after answering on it: one that sends nothing, or half a
    head, byte by byte, is closed by the head timeout (HEAD_TIMEOUT_S, 10 s; 1 s here)."""
    monkeypatch.setattr(run, "HEAD_TIMEOUT_S", 1.0)
    silent, trickle = connect(address), connect(address)
    started = time.monotonic()
    for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: test\r\n", b"X-Slow: 1\r\n"):
        trickle.sendall(piece)  # a slow head: data arriving does not put the deadline off
        time.sleep(0.4)
    working = connect(address)
    working.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    assert read_response(working)[0] == 200  # a whole head in time: answered
    for sock in (silent, trickle):
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed
        sock.close()
    assert time.monotonic() - started < 5
    assert healthz_ms(address) < 2000
    working.close()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_odd_inputs_get_a_clear_4xx_or_a_sound_answer(address):
    digit = png(np.zeros((28, 28), np.uint8))
    text_chunk = digit[:33] + _png_chunk(b"tEXt", b"comment\0" + b"a" * (LIMIT - 1000)) + digit[33:]
    text_bomb = (
        digit[:33] + _png_chunk(b"zTXt", b"comment\0\0" + zlib.compress(bytes(1 << 26), 9)) + digit[33:]
    )
    multipart = {"content-type": "multipart/form-data; boundary=x"}
    cases = [  # (label, path, body, headers, status, words in the error)
        ("multipart without a boundary", PREDICT, b"garbage", {"content-type": "multipart/form-data"}, 400, "boundary"),
        ("multipart, not multipart", PREDICT, b"\r\n\r\n--x\r\n\r\n--x--", multipart, 400, "malformed multipart"),
        ("multipart, cut before the end", PREDICT,
         b'--x\r\nContent-Disposition: form-data; name="f"; filename="a.png"\r\n\r\n' + digit[:50], multipart, 400, "file part"),
        ("top_k with 5,000 digits", PREDICT + "?top_k=" + "9" * 5000, digit, {}, 400, "5,000 characters"),
        ("top_k negative", PREDICT + "?top_k=-3", digit, {}, 400, "at least 1"),
        ("top_k a float", PREDICT + "?top_k=2.5", digit, {}, 400, "whole number"),
        ("a zTXt chunk inflating to 64 MB", PREDICT, text_bomb, {}, 400, "not a readable image"),
    ]  # fmt: skip
    with httpx.Client(base_url=f"http://{address}", timeout=60) as c:
        for label, path, body, headers, status, words in cases:
            r = c.post(path, content=body, headers=headers or {"content-type": "image/png"})
            assert r.status_code == status, (label, r.status_code, r.text)
            assert words in r.json()["error"] and len(r.text) < 500, (label, r.text)
        # sound answers: every class for a huge top_k, a prediction for a strip and for a PNG with a
        # ~1 MB text chunk (Pillow reads up to 1 MB of text per chunk, and skips it)
        huge = c.post(PREDICT + "?top_k=" + "9" * 30, content=digit, headers={"content-type": "image/png"})
        assert huge.status_code == 200 and len(huge.json()["top"]) == 10
        for label, body in [
            ("1x50000", png(np.full((1, 50_000), 255, np.uint8))),
            ("50000x1", png(np.full((50_000, 1), 255, np.uint8))),
            ("a ~1 MB tEXt chunk", text_chunk),
        ]:
            r = c.post(PREDICT, content=body, headers={"content-type": "image/png"})
            assert r.status_code == 200 and len(r.json()["top"]) == 5, (label, r.text)
            explained = c.post(
                f"/v1/models/{NAME}/explain", content=body, headers={"content-type": "image/png"}
            )
            assert explained.status_code == 200 and explained.json()["input_size"] == [1, 28, 28], label
        assert healthz_ms(address) < 2000
    assert (
        re.search(r'cnnzoo_request_errors_total\{code="500"', httpx.get(f"http://{address}/metrics").text)
        is None
    )
