"""`cnnzoo serve` for a long while: mixed good and bad requests at a steady rate, minute by minute.

    python bench/soak_serve.py                         # the bundled LeNet-5, 10 minutes at 20 requests/s
    python bench/soak_serve.py --minutes 60 --rate 50
    python bench/soak_serve.py --url http://127.0.0.1:8000 --pid 1234   # a server already running

It starts `cnnzoo serve --port 0` in its own process (OMP_NUM_THREADS=1 unless set; its access log to
/dev/null), waits for /readyz, and sends requests at `--rate` per second from a pool of client threads, each
request's kind drawn (seeded) from `MIX`: good ones (/v1 predict as raw bytes and as multipart, a batch of
4, explain, /v2 infer, /healthz, /metrics) and bad ones, each with the answer it must get: not an image,
a truncated PNG (400), malformed multipart (400), an absurd top_k (400), an unknown model (404), a text
content type (415), a body over the 8 MiB limit sent whole and then `Connection: close`, as urllib does
(413), a client gone mid-body (no answer to read: the server must just go on), and now and then a body
that stalls (408 after the server's 10 s body timeout). A latency counts from the moment the request was
due, so a server falling behind shows in it.

Per minute it prints: requests, answers other than 200 by status, unexpected answers (a status other
than the kind's, or a connection error), p50/p99 of the good requests' latency, and the server's resident
memory (VmRSS) and open file descriptors at the minute's end. The goals (issue 19): 0 unexpected, each
minute's p99 within 2x of the others' after the first, RSS growing under 10% after the first minute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from bench_serve import digits_as_png, start_server, v2_image_request, wait_ready

OVER_LIMIT = 9 << 20  # bytes: over `cnnzoo serve`'s 8 MiB body limit
STALL_BYTES = 10_000  # a stalled body declares this many and sends 100

# (kind, weight, expected status; None: the client leaves, there is no answer)
MIX = [
    ("predict", 40, 200),
    ("predict multipart", 10, 200),
    ("batch of 4", 5, 200),
    ("explain", 4, 200),
    ("v2 infer", 8, 200),
    ("healthz", 4, 200),
    ("metrics", 1, 200),
    ("not an image", 5, 400),
    ("truncated PNG", 4, 400),
    ("malformed multipart", 3, 400),
    ("absurd top_k", 2, 400),
    ("unknown model", 2, 404),
    ("text content type", 2, 415),
    ("over the limit, then close", 1, 413),
    ("gone mid-body", 3, None),
    ("stalled body", 0.2, 408),
]
EXPECTED = {kind: status for kind, _, status in MIX}


class Requests:
    """Each kind of request, sent to one server: `send(kind)` -> the status (None: no answer, as meant)."""

    def __init__(self, url: str, model: str, pngs: list[bytes]):
        import httpx

        self.url, self.model, self.pngs = url, model, pngs
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.client = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=64))
        self.v2 = [v2_image_request(p) for p in pngs[:20]]

    def _post(self, path: str, content: bytes, ctype: str, **kw) -> int:
        return self.client.post(path, content=content, headers={"content-type": ctype}, **kw).status_code

    def _raw(self, head: bytes, body: bytes, *, close_after: float | None = None) -> int | None:
        """A request on a connection of its own; `close_after`: send, wait that long, leave without reading."""
        with socket.create_connection((self.host, self.port), timeout=60) as sock:
            sock.sendall(head + body)
            if close_after is not None:
                time.sleep(close_after)
                return None
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed without an answer")
                data += chunk
            return int(data.split(b" ", 2)[1])

    def _head(self, length: int, extra: str = "") -> bytes:
        return (
            f"POST /v1/models/{self.model}/predict HTTP/1.1\r\nHost: soak\r\nContent-Type: image/png\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n"
        ).encode()

    def send(self, kind: str, rng: random.Random) -> int | None:
        png = rng.choice(self.pngs)
        predict = f"/v1/models/{self.model}/predict"
        if kind == "predict":
            return self._post(predict, png, "image/png")
        if kind == "predict multipart":
            return self.client.post(predict, files={"file": ("d.png", png, "image/png")}).status_code
        if kind == "batch of 4":
            files = [("file", (f"{i}.png", rng.choice(self.pngs), "image/png")) for i in range(4)]
            return self.client.post(predict + "/batch", files=files).status_code
        if kind == "explain":
            return self._post(f"/v1/models/{self.model}/explain", png, "image/png")
        if kind == "v2 infer":
            body, headers = rng.choice(self.v2)
            headers = {**headers, "content-type": "application/octet-stream"}
            return self.client.post(
                f"/v2/models/{self.model}/infer", content=body, headers=headers
            ).status_code
        if kind in ("healthz", "metrics"):
            return self.client.get("/" + kind).status_code
        if kind == "not an image":
            return self._post(predict, b"hello, world" * rng.randint(1, 100), "image/png")
        if kind == "truncated PNG":
            return self._post(predict, png[: len(png) // 2], "image/png")
        if kind == "malformed multipart":
            return self._post(predict, b"--x\r\n\r\ngarbage", "multipart/form-data; boundary=x")
        if kind == "absurd top_k":
            return self._post(predict + "?top_k=" + "9" * 5000, png, "image/png")
        if kind == "unknown model":
            return self._post("/v1/models/nope/predict", png, "image/png")
        if kind == "text content type":
            return self._post(predict, b"hello", "text/plain")
        if kind == "over the limit, then close":
            return self._raw(self._head(OVER_LIMIT, "Connection: close\r\n"), bytes(OVER_LIMIT))
        if kind == "gone mid-body":
            return self._raw(self._head(100_000), bytes(5_000), close_after=0.05)
        if kind == "stalled body":
            return self._raw(self._head(STALL_BYTES), bytes(100))
        raise ValueError(kind)


def process_figures(pid: int | None) -> tuple[float | None, int | None]:
    """The server's resident memory (MiB) and open file descriptors, from /proc."""
    if pid is None:
        return None, None
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None, None


def soak(
    url: str, model: str, pid: int | None, minutes: float, rate: float, workers: int, seed: int
) -> list[dict]:
    requests = Requests(url, model, digits_as_png(100))
    kinds = [k for k, _, _ in MIX]
    weights = [w for _, w, _ in MIX]
    rng = random.Random(seed)
    records: list[tuple[float, str, int | None, float, str | None]] = []  # (due, kind, status, ms, error)
    lock = threading.Lock()
    minute_figures: dict[int, tuple] = {}
    t0 = time.monotonic()

    def one(due: float, kind: str, seed_i: int) -> None:
        status, error = None, None
        try:
            status = requests.send(kind, random.Random(seed_i))
        except Exception as e:  # a connection error: unexpected, whatever the kind
            error = f"{type(e).__name__}: {e}"
        ms = 1000 * (time.monotonic() - due)
        with lock:
            records.append((due - t0, kind, status, ms, error))

    end = t0 + 60 * minutes
    n, last_minute = 0, 0
    with ThreadPoolExecutor(workers) as pool:
        while (due := t0 + n / rate) < end:
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            minute = int((time.monotonic() - t0) // 60)
            if minute > last_minute:  # the end of the minute before
                minute_figures[last_minute] = process_figures(pid)
                last_minute = minute
                print(f"  minute {minute} of {minutes:g} done", file=sys.stderr, flush=True)
            pool.submit(one, due, rng.choices(kinds, weights)[0], rng.randrange(1 << 30))
            n += 1
    minute_figures[max(0, math.ceil(minutes) - 1)] = process_figures(pid)  # the last, once all have ended
    requests.client.close()
    return summarize(records, minute_figures), by_kind(records)


def by_kind(records) -> list[tuple[str, int, float, float]]:
    """(kind, requests, p50 ms, p99 ms) over the whole run, answered ones."""
    out = []
    for kind, _, _ in MIX:
        ms = sorted(r[3] for r in records if r[1] == kind and not r[4])
        if ms:
            out.append((kind, len(ms), statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))]))
    return out


def summarize(records, minute_figures: dict[int, tuple]) -> list[dict]:
    rows = []
    for minute in sorted({int(r[0] // 60) for r in records}):
        recs = [r for r in records if int(r[0] // 60) == minute]
        good = sorted(ms for _, kind, status, ms, _ in recs if EXPECTED[kind] == 200 and status == 200)
        unexpected = [
            (kind, status, error) for _, kind, status, _, error in recs if error or status != EXPECTED[kind]
        ]
        rss, fds = minute_figures.get(minute, (None, None))
        rows.append(
            {
                "minute": minute + 1,
                "requests": len(recs),
                "not_200": dict(sorted(Counter(s for _, _, s, _, e in recs if s not in (200, None)).items())),
                "no_answer": sum(1 for _, k, s, _, e in recs if s is None and not e),
                "unexpected": len(unexpected),
                "unexpected_examples": [f"{k}: {s} {e or ''}".strip() for k, s, e in unexpected[:3]],
                "p50_ms": statistics.median(good) if good else None,
                "p99_ms": good[min(len(good) - 1, int(0.99 * len(good)))] if good else None,
                "rss_mib": rss,
                "fds": fds,
            }
        )
    return rows


def print_report(rows: list[dict], kinds: list[tuple[str, int, float, float]]) -> None:
    print("| minute | requests | answers other than 200 | no answer (gone mid-body) | unexpected | p50 ms | p99 ms | RSS MiB | open fds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        codes = ", ".join(f"{c}: {n}" for c, n in r["not_200"].items()) or "-"
        rss = f"{r['rss_mib']:.1f}" if r["rss_mib"] is not None else "?"
        p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "?"
        p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "?"
        print(f"| {r['minute']} | {r['requests']:,} | {codes} | {r['no_answer']} | {r['unexpected']} | {p50} | {p99} | {rss} | {r['fds'] if r['fds'] is not None else '?'} |")  # fmt: skip
    unexpected = sum(r["unexpected"] for r in rows)
    examples = [e for r in rows for e in r["unexpected_examples"]][:5]
    later = rows[1:] if len(rows) > 1 else rows
    p99s = [r["p99_ms"] for r in later if r["p99_ms"] is not None]
    spread = max(p99s) / min(p99s) if p99s else float("nan")
    rss = [r["rss_mib"] for r in rows if r["rss_mib"] is not None]
    growth = 100 * (rss[-1] - rss[0]) / rss[0] if len(rss) > 1 else float("nan")
    total = sum(r["requests"] for r in rows)
    print()
    print(
        f"requests: {total:,}; unexpected: {unexpected} (goal 0){'  e.g. ' + '; '.join(examples) if examples else ''}"
    )
    print(f"p99 after the first minute: {min(p99s, default=float('nan')):.1f}-{max(p99s, default=float('nan')):.1f} ms, max/min {spread:.2f}x (goal <= 2x)")  # fmt: skip
    print(
        "by kind (whole run): "
        + "; ".join(f"{k} {n:,}: p50 {p50:.1f} / p99 {p99:.1f} ms" for k, n, p50, p99 in kinds)
    )
    print(f"RSS from the end of minute 1 to the end: {rss[0] if rss else float('nan'):.1f} -> {rss[-1] if rss else float('nan'):.1f} MiB, {growth:+.1f}% (goal < 10%)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", help="what to serve (default: the bundled LeNet-5, MNIST)")
    ap.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    ap.add_argument("--workers", type=int, default=32, help="client threads (default 32)")
    ap.add_argument("--seed", type=int, default=0, help="the draw of request kinds (default 0)")
    ap.add_argument("--url", help="soak a server already running here instead")
    ap.add_argument("--pid", type=int, help="with --url: the server's process, for its RSS and fds")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = ap.parse_args()
    proc, pid = None, args.pid
    if args.url:
        url = args.url.rstrip("/")
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        proc, url = start_server(args.source, [])
        pid = proc.pid
    try:
        model = wait_ready(url)
        print(
            f"soaking {url} ({model}) for {args.minutes:g} min at {args.rate:g} requests/s", file=sys.stderr
        )
        rows, kinds = soak(url, model, pid, args.minutes, args.rate, args.workers, args.seed)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    print_report(rows, kinds)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
