"""`cnnzoo serve` under load: requests/s, p50/p99 latency, errors and mean batch size, with micro-batching
on and off in the same run.

    python bench/bench_serve.py                                   # the bundled LeNet-5, 10,000 requests at 32
    python bench/bench_serve.py runs/lenet5-mnist-...             # any source `cnnzoo serve` takes
    python bench/bench_serve.py --requests 2000 --concurrency 16
    python bench/bench_serve.py --rounds 3                        # on, off, on, off, on, off: a busy machine
    python bench/bench_serve.py --url http://127.0.0.1:8000 --model lenet5-mnist   # a server already running

For each setting the script starts `cnnzoo serve SOURCE --port 0` as its own process (batching on: the
defaults, --max-batch-size 32 --max-delay-ms 2; off: --max-batch-size 1, one forward per request), waits
for /readyz, and runs a load generator in a third process: C keep-alive HTTP/1.1 connections on loopback,
each sending its share of N POSTs of MNIST test digits (PNG) one after another. It measures

    lone     one connection, one request at a time: latency p50/p99 of a request that has no company
    loaded   N requests at concurrency C: requests/s, p50/p99 latency, errors, mean X-Batch-Size

The generator speaks raw HTTP over asyncio streams (no client library), so that on a 2-core machine the
load it costs is small beside the server's; the server keeps its access log on, as it is by default
(written to /dev/null here). The goals of the issue: >= 1,000 requests/s at concurrency 32, p50 < 10 ms
for a lone request, batching >= 2x the throughput of one forward per request, no errors in 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import time
from urllib.parse import urlsplit

# --- the load generator (its own process) -----------------------------------------------------------


async def _one_connection(host, port, requests: list[bytes], out: list) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for raw in requests:
            start = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            batch = re.search(rb"(?i)x-batch-size: *(\d+)", head)
            out.append((time.perf_counter() - start, status, int(batch.group(1)) if batch else 0))
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        out.extend((0.0, f"{type(e).__name__}", 0) for _ in range(len(requests) - len(out)))
    finally:
        writer.close()


def _generate(url: str, path: str, bodies: list[bytes], n: int, concurrency: int, queue) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    u = urlsplit(url)
    host, port = u.hostname, u.port
    raws = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]
    shares = [[raws[(c + i * concurrency) % len(raws)] for i in range(n // concurrency + (c < n % concurrency))]
              for c in range(concurrency)]  # fmt: skip

    async def run():
        outs = [[] for _ in range(concurrency)]
        start = time.perf_counter()
        await asyncio.gather(*[_one_connection(host, port, s, o) for s, o in zip(shares, outs, strict=True)])
        return time.perf_counter() - start, [r for o in outs for r in o]

    cpu = time.process_time()
    seconds, results = asyncio.run(run())
    queue.put((seconds, results, time.process_time() - cpu))


def load(url: str, path: str, bodies: list[bytes], n: int, concurrency: int) -> dict:
    """N requests at `concurrency`, from a separate process: throughput, latency, errors, batch sizes."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_generate, args=(url, path, bodies, n, concurrency, queue))
    proc.start()
    seconds, results, client_cpu = queue.get()
    proc.join()
    ok = sorted(lat for lat, status, _ in results if status == 200)
    errors = len(results) - len(ok)
    batches = [b for _, status, b in results if status == 200]

    def pct(q: float) -> float:
        return 1000 * ok[min(len(ok) - 1, int(q * len(ok)))] if ok else float("nan")

    return {
        "requests": len(results),
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(ok) / seconds, 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        "errors": errors,
        "mean_batch": round(statistics.fmean(batches), 2) if batches else None,
        "client_cpu_ms_per_request": round(1000 * client_cpu / max(1, len(results)), 3),
    }


# --- the server (its own process) -------------------------------------------------------------------


def start_server(source: str | None, extra: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "cnnzoo", "serve", *([source] if source else []), "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+?)/ ", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {' '.join(cmd)}\n{line}")
    return proc, match.group(1)


def wait_ready(url: str, timeout: float = 120) -> str:
    """Wait for /readyz; return the first model's name."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz") as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} was not ready after {timeout:.0f} s")
        time.sleep(0.1)
    with urllib.request.urlopen(url + "/v1/models") as r:
        return json.load(r)["models"][0]["name"]


def digits_as_png(count: int = 100) -> list[bytes]:
    from PIL import Image

    from cnnzoo.data import load_dataset

    test = load_dataset("mnist").test
    out = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(test.images[i, 0].numpy()).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux), None where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, TypeError):
        return None


def measure(url: str, model: str | None, bodies, args, pid: int | None = None) -> dict:
    model = model or wait_ready(url)
    path = f"/v1/models/{model}/predict"
    load(url, path, bodies, 300, min(8, args.concurrency))  # warm-up: connections, caches, allocator
    lone = load(url, path, bodies, args.lone_requests, 1)
    before, load_before = cpu_seconds(pid), os.getloadavg()[0]
    loaded = load(url, path, bodies, args.requests, args.concurrency)
    after = cpu_seconds(pid)
    # how busy the machine was: 1-minute load average before and after (this run's own processes included)
    loaded["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    # the server's CPU per request: a figure the other processes on a shared machine disturb less
    if before is not None and after is not None:
        loaded["server_cpu_ms_per_request"] = round(1000 * (after - before) / args.requests, 3)
    return {"lone": lone, "loaded": loaded}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "source", nargs="?", help="what `cnnzoo serve` serves (default: its default, the bundled LeNet-5)"
    )
    ap.add_argument(
        "--requests", type=int, default=10_000, help="requests in the loaded phase (default 10,000)"
    )
    ap.add_argument(
        "--concurrency", type=int, default=32, help="connections in the loaded phase (default 32)"
    )
    ap.add_argument("--lone-requests", type=int, default=500, help="requests one at a time (default 500)")
    ap.add_argument("--url", help="measure a server already running here instead (one setting only)")
    ap.add_argument("--model", help="with --url: the model to ask (default: the first listed)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="measure on and off this many times, alternating (default 1)"
    )
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    bodies = digits_as_png()
    print(f"{os.cpu_count()} CPUs; {args.requests:,} requests at concurrency {args.concurrency}; "
          f"{args.lone_requests} lone requests")  # fmt: skip

    rows: list[tuple[str, dict]] = []  # (setting, figures), in the order measured
    if args.url:
        rows.append(("given server", measure(args.url.rstrip("/"), args.model, bodies, args)))
    else:
        settings = {"batching on (32, 2 ms)": [], "batching off (1 per forward)": ["--max-batch-size", "1"]}
        for _ in range(args.rounds):  # on, off, on, off...: a busy spell of the machine hits both
            for label, extra in settings.items():
                proc, url = start_server(args.source, extra)
                try:
                    rows.append((label, measure(url, None, bodies, args, proc.pid)))
                finally:
                    proc.terminate()
                    proc.wait(60)

    print(
        f"{'setting':<30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'batch':>6} "
        f"{'CPU ms/req':>16}   {'lone p50 / p99 ms':>17}   load"
    )
    for label, r in rows:
        lo, ld = r["lone"], r["loaded"]
        server = ld.get("server_cpu_ms_per_request")
        cpu = f"{server if server is not None else '-'} + {ld['client_cpu_ms_per_request']}"
        print(
            f"{label:<30} {ld['requests_per_s']:>8,.0f} {ld['p50_ms']:>8.2f} {ld['p99_ms']:>8.2f} "
            f"{ld['errors'] + lo['errors']:>7} {ld['mean_batch']:>6} {cpu:>16}   "
            f"{lo['p50_ms']:>7.2f} / {lo['p99_ms']:<7.2f}   {ld['loadavg'][0]:.1f}-{ld['loadavg'][1]:.1f}"
        )
    print("CPU ms/req: server + load generator, loaded phase; load: 1-minute load average before-after it")
    if not args.url:
        ratios = [
            on["loaded"]["requests_per_s"] / off["loaded"]["requests_per_s"]
            for (_, on), (_, off) in zip(rows[::2], rows[1::2], strict=True)
        ]
        print(
            "micro-batching: "
            + ", ".join(f"{x:.2f}x" for x in ratios)
            + " the throughput of one forward per "
            "request" + (" (each round's pair)" if len(ratios) > 1 else "")
        )
    if args.json:
        print(json.dumps([{"setting": label, **r} for label, r in rows], indent=2))


if __name__ == "__main__":
    main()
