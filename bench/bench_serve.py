"""`cnnzoo serve` under load, both protocols: requests/s, p50/p99 latency, errors and mean batch size, with
micro-batching on and off, for /v1 and the Open Inference Protocol's /v2 in the same run.

    python bench/bench_serve.py                                   # the bundled LeNet-5, 10,000 requests at 32
    python bench/bench_serve.py runs/lenet5-mnist-...             # any source `cnnzoo serve` takes
    python bench/bench_serve.py --requests 2000 --concurrency 16
    python bench/bench_serve.py --rounds 3                        # on, off, on, off, on, off: a busy machine
    python bench/bench_serve.py --baseline HEAD~1                 # and that commit's server, in the same run
    python bench/bench_serve.py --url http://127.0.0.1:8000 --model lenet5-mnist   # a server already running

For each setting the script starts `cnnzoo serve SOURCE --port 0` as its own process (batching on: the
defaults, --max-batch-size 32 --max-delay-ms 2; off: --max-batch-size 1, one forward per request), waits
for /readyz, and for each protocol runs a load generator in a third process: C keep-alive HTTP/1.1
connections on loopback, each sending its share of N POSTs of MNIST test digits one after another:

    v1   POST /v1/models/NAME/predict, the PNG as the body
    v2   POST /v2/models/NAME/infer, the PNG as the `image` input in binary tensor data, both outputs back
         binary: the request tritonclient sends (`InferInput("image", [1], "BYTES")`, binary_data=True)

It measures

    lone     one connection, one request at a time: latency p50/p99 of a request that has no company
    loaded   N requests at concurrency C: requests/s, p50/p99 latency, errors, mean X-Batch-Size

`--baseline REF` also measures the server of a commit (its `src/`, from `git archive`), alternating with
this tree's, so a change is compared with what it changes on the same machine at the same minutes.
The generator speaks raw HTTP over asyncio streams (no client library), so that on a 2-core machine the
load it costs is small beside the server's; the server keeps its access log on, as it is by default
(written to /dev/null here). The goals (issue 18): a lone request's p50 <= 2.5 ms, >= 1,000 requests/s
at concurrency 32 on either protocol, no errors; and, from before, batching >= 2x the throughput of one
forward per request.
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
import tempfile
import time
from queue import Empty
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
            length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            batch = re.search(rb"(?im)^x-batch-size: *(\d+)", head)
            out.append((time.perf_counter() - start, status, int(batch.group(1)) if batch else 0))
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        out.extend((0.0, f"{type(e).__name__}", 0) for _ in range(len(requests) - len(out)))
    finally:
        writer.close()


def _generate(url: str, raws: list[bytes], n: int, concurrency: int, queue) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    u = urlsplit(url)
    host, port = u.hostname, u.port
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


def http_requests(url: str, path: str, bodies: list[bytes], headers: dict[str, str]) -> list[bytes]:
    """Each body as one whole HTTP/1.1 POST to `path`, ready to write to the socket."""
    u = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return [
        f"POST {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n{extra}Content-Length: {len(b)}\r\n\r\n".encode()
        + b
        for b in bodies
    ]


def load(url: str, raws: list[bytes], n: int, concurrency: int) -> dict:
    """N requests at `concurrency`, from a separate process: throughput, latency, errors, batch sizes."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_generate, args=(url, raws, n, concurrency, queue))
    proc.start()
    while True:
        try:
            seconds, results, client_cpu = queue.get(timeout=1)
            break
        except Empty:
            if not proc.is_alive():
                raise SystemExit(
                    f"the load generator died (exit {proc.exitcode}): see its traceback above"
                ) from None
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


def start_server(
    source: str | None, extra: list[str], src: str | None = None
) -> tuple[subprocess.Popen, str]:
    """`cnnzoo serve` in its own process, this tree's or (`src`) another's: the process and its URL."""
    cmd = [sys.executable, "-m", "cnnzoo", "serve", *([source] if source else []), "--port", "0", *extra]
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+?)/ ", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {' '.join(cmd)}\n{line}")
    return proc, match.group(1)


def checkout_src(ref: str, into: str) -> str:
    """The `src/` of commit `ref`, written under `into` (git archive: the working tree is not touched)."""
    archive = subprocess.run(["git", "archive", ref, "src"], capture_output=True, check=False)
    if archive.returncode:
        raise SystemExit(f"git archive {ref} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)
    return os.path.join(into, "src")


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


def v2_image_request(png: bytes) -> tuple[bytes, dict[str, str]]:
    """The body and headers tritonclient sends for one PNG as the `image` input (binary tensor data,
    every output back binary)."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(png) + 4},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return head + len(png).to_bytes(4, "little") + png, {"Inference-Header-Content-Length": str(len(head))}


def protocol_requests(url: str, model: str, protocol: str, pngs: list[bytes]) -> list[bytes]:
    if protocol == "v1":
        return http_requests(url, f"/v1/models/{model}/predict", pngs, {"Content-Type": "image/png"})
    raws = []
    for png in pngs:
        body, headers = v2_image_request(png)
        raws += http_requests(url, f"/v2/models/{model}/infer", [body], headers)
    return raws


def speaks_v2(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/v2") as r:
            return r.status == 200
    except urllib.error.URLError:  # an HTTPError (404) too: a server from before /v2
        return False


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux), None where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, TypeError):
        return None


def measure(url: str, model: str | None, raws: list[bytes], args, pid: int | None = None) -> dict:
    load(url, raws, 300, min(8, args.concurrency))  # warm-up: connections, caches, allocator
    lone = load(url, raws, args.lone_requests, 1)
    before, load_before = cpu_seconds(pid), os.getloadavg()[0]
    loaded = load(url, raws, args.requests, args.concurrency)
    after = cpu_seconds(pid)
    # how busy the machine was: 1-minute load average before and after (this run's own processes included)
    loaded["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    # the server's CPU per request: a figure the other processes on a shared machine disturb less
    if before is not None and after is not None:
        loaded["server_cpu_ms_per_request"] = round(1000 * (after - before) / args.requests, 3)
    return {"lone": lone, "loaded": loaded}


def measure_server(url: str, model: str | None, pngs, args, pid: int | None = None) -> list[tuple[str, dict]]:
    """Each protocol the server speaks, one after the other: [(protocol, figures)]."""
    model = model or wait_ready(url)
    protocols = [p for p in args.protocols.split(",") if p == "v1" or speaks_v2(url)]
    return [(p, measure(url, model, protocol_requests(url, model, p, pngs), args, pid)) for p in protocols]


def parse_args():
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
    ap.add_argument("--protocols", default="v1,v2", help="which to measure: v1, v2 or both (default v1,v2)")
    ap.add_argument("--url", help="measure a server already running here instead (one setting only)")
    ap.add_argument("--model", help="with --url: the model to ask (default: the first listed)")
    ap.add_argument("--baseline", metavar="REF", help="also measure the server of this commit (git archive)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="measure on and off this many times, alternating (default 1)"
    )
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    return ap.parse_args()


SETTINGS = {"batching on (32, 2 ms)": [], "batching off (1 per forward)": ["--max-batch-size", "1"]}


def run_all(args, pngs, builds: dict[str, str | None]) -> list[tuple[str, str, str, dict]]:
    """(build, setting, protocol, figures) for each round, build, setting and protocol, alternating."""
    rows = []
    for _ in range(args.rounds):  # on, off, on, off...: a busy spell of the machine hits both
        for build, src in builds.items():
            for label, extra in SETTINGS.items():
                proc, url = start_server(args.source, extra, src)
                try:
                    for protocol, r in measure_server(url, None, pngs, args, proc.pid):
                        rows.append((build, label, protocol, r))
                finally:
                    proc.terminate()
                    proc.wait(60)
    return rows


def print_table(rows) -> None:
    print(
        f"{'server':<12} {'setting':<29} {'proto':<5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'batch':>6} {'CPU ms/req':>15}   {'lone p50 / p99 ms':>17}   load"
    )
    for build, label, protocol, r in rows:
        lo, ld = r["lone"], r["loaded"]
        server = ld.get("server_cpu_ms_per_request")
        cpu = f"{server if server is not None else '-'} + {ld['client_cpu_ms_per_request']}"
        print(
            f"{build:<12} {label:<29} {protocol:<5} {ld['requests_per_s']:>7,.0f} {ld['p50_ms']:>7.2f} "
            f"{ld['p99_ms']:>7.2f} {ld['errors'] + lo['errors']:>6} {ld['mean_batch']!s:>6} {cpu:>15}   "
            f"{lo['p50_ms']:>7.2f} / {lo['p99_ms']:<7.2f}   {ld['loadavg'][0]:.1f}-{ld['loadavg'][1]:.1f}"
        )
    print("CPU ms/req: server + load generator, loaded phase; load: 1-minute load average before-after it")


def print_ratios(rows) -> None:
    """Batching on over off, per server and protocol; this tree over the baseline, per setting and protocol."""
    by = {}
    for build, label, protocol, r in rows:
        by.setdefault((build, label, protocol), []).append(r)
    on, off = list(SETTINGS)
    for (build, label, protocol), runs in by.items():
        if label == on and (build, off, protocol) in by:
            ratios = [a["loaded"]["requests_per_s"] / b["loaded"]["requests_per_s"]
                      for a, b in zip(runs, by[(build, off, protocol)], strict=True)]  # fmt: skip
            print(f"micro-batching, {build} {protocol}: " + ", ".join(f"{x:.2f}x" for x in ratios)
                  + " the throughput of one forward per request")  # fmt: skip
    builds = list(dict.fromkeys(b for b, _, _, _ in rows))
    if len(builds) < 2:
        return
    for (build, label, protocol), runs in by.items():
        base = by.get((builds[1], label, protocol))
        if build != builds[0] or base is None:
            continue
        speed = [
            a["loaded"]["requests_per_s"] / b["loaded"]["requests_per_s"]
            for a, b in zip(runs, base, strict=True)
        ]
        lone = [a["lone"]["p50_ms"] / b["lone"]["p50_ms"] for a, b in zip(runs, base, strict=True)]
        print(f"{builds[0]} over {builds[1]}, {label}, {protocol}: req/s "
              + ", ".join(f"{x:.2f}x" for x in speed) + "; lone p50 " + ", ".join(f"{x:.2f}x" for x in lone))  # fmt: skip


def main() -> None:
    args = parse_args()
    pngs = digits_as_png()
    print(f"{os.cpu_count()} CPUs; {args.requests:,} requests at concurrency {args.concurrency}; "
          f"{args.lone_requests} lone requests")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        if args.url:
            url = args.url.rstrip("/")
            rows = [("given", "given server", p, r) for p, r in measure_server(url, args.model, pngs, args)]
        else:
            builds = {"this tree": None}
            if args.baseline:
                builds[args.baseline[:12]] = checkout_src(args.baseline, tmp)
            rows = run_all(args, pngs, builds)
    print_table(rows)
    print_ratios(rows)
    if args.json:
        print(json.dumps([{"server": b, "setting": s, "protocol": p, **r} for b, s, p, r in rows], indent=2))


if __name__ == "__main__":
    main()
