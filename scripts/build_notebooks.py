"""Build the lecture's notebooks (notebooks/*.ipynb) from their reviewable sources (notebooks/src/*.py).

Each source is a jupytext "percent" file: `# %% [markdown]` and `# %%` start the cells. This script turns
one into a notebook, executes it top to bottom with nbclient in a scratch folder (so nothing lands in the
repository), and writes it with its outputs and, in its metadata, what tests/test_notebooks.py checks:

    "cnnzoo": {"source_sha256": ..., "mode": "full" | "quick", "seconds": wall time of the run}

`source_sha256` hashes the cells' types and sources, so a committed notebook whose source changed since
it was executed is caught. `--quick` runs with CNNZOO_QUICK=1 (each notebook's small preset).

    python scripts/build_notebooks.py                  # every notebook, full run (about 3 minutes each)
    python scripts/build_notebooks.py 01_lenet --quick # one notebook, quick preset
    python scripts/build_notebooks.py --check          # only check the committed notebooks' hashes

Needs nbformat, nbclient, ipykernel and jupytext (the `dev` extra); run it with OMP_NUM_THREADS=2 to
measure what a 2-core machine does.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "notebooks" / "src"
NOTEBOOKS = ROOT / "notebooks"
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def sources() -> list[Path]:
    """The notebook sources, in lecture order."""
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def notebook_path(source: Path) -> Path:
    return NOTEBOOKS / f"{source.stem}.ipynb"


def read_source(source: Path):
    """The notebook a percent-format source describes, without outputs (jupytext's metadata dropped)."""
    import jupytext

    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = {"kernelspec": dict(KERNEL), "language_info": {"name": "python"}}
    for cell in nb.cells:
        cell.metadata = {}
    return nb


def cells_hash(nb) -> str:
    """SHA-256 of the cells' types and sources: what a run's outputs were computed from."""
    cells = [[c.cell_type, c.source] for c in nb.cells]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def execute(nb, *, quick: bool, timeout: float = 900, cwd: str | Path | None = None) -> float:
    """Run `nb` top to bottom in a fresh python3 kernel (inheriting this environment, CNNZOO_QUICK set
    as asked), in `cwd` or a scratch folder; returns the wall time in seconds. A cell's error raises
    nbclient's CellExecutionError; a notebook still running `timeout` seconds after it started stops at
    its current cell with nbclient's CellTimeoutError (a guard against hangs, not a speed test)."""
    from nbclient import NotebookClient

    deadline = time.monotonic() + timeout

    saved = os.environ.get("CNNZOO_QUICK")
    os.environ["CNNZOO_QUICK"] = "1" if quick else "0"
    try:
        with tempfile.TemporaryDirectory(prefix="cnnzoo-nb-") as scratch:
            client = NotebookClient(
                nb,
                timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
                kernel_name="python3",
                record_timing=False,
                resources={"metadata": {"path": str(cwd or scratch)}},
            )
            start = time.perf_counter()
            client.execute()
            return time.perf_counter() - start
    finally:
        if saved is None:
            os.environ.pop("CNNZOO_QUICK", None)
        else:
            os.environ["CNNZOO_QUICK"] = saved


def build(source: Path, *, quick: bool, timeout: float = 900) -> Path:
    """Execute `source` and write its notebook with outputs and the cnnzoo metadata."""
    import nbformat

    nb = read_source(source)
    load_before = round(os.getloadavg()[0], 1)
    seconds = execute(nb, quick=quick, timeout=timeout)
    nb.metadata["cnnzoo"] = {
        "source_sha256": cells_hash(nb),
        "mode": "quick" if quick else "full",
        "seconds": round(seconds, 1),
        # the machine's state, so the seconds can be read: threads the kernel's torch used (its
        # first output says too) and the 1-minute load average before and after the run
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "load_average": [load_before, round(os.getloadavg()[0], 1)],
    }
    out = notebook_path(source)
    tmp = out.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(out)
    return out


def check(source: Path) -> str | None:
    """None if the committed notebook of `source` was executed from its current cells, else what is wrong."""
    import nbformat

    out = notebook_path(source)
    if not out.exists():
        return f"{out.name} is missing: run python scripts/build_notebooks.py {source.stem}"
    committed = nbformat.read(out, as_version=4)
    meta = committed.metadata.get("cnnzoo", {})
    want = cells_hash(read_source(source))
    if meta.get("source_sha256") != want or cells_hash(committed) != want:
        return f"{out.name} was not executed from the current {source.name}: rebuild it"
    if meta.get("mode") not in ("quick", "full"):
        return f"{out.name} does not say whether its outputs are from the quick or the full run"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (e.g. 01_lenet); default: all")
    parser.add_argument("--quick", action="store_true", help="run with CNNZOO_QUICK=1")
    parser.add_argument("--check", action="store_true", help="only check the committed notebooks")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds one notebook may run (default 900)"
    )
    args = parser.parse_args(argv)
    needed = ["jupytext", "nbformat"] + ([] if args.check else ["nbclient", "ipykernel"])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        print(f"needs {', '.join(missing)}: pip install -e '.[notebooks]'", file=sys.stderr)
        return 2
    chosen = [s for s in sources() if not args.names or s.stem in args.names]
    unknown = set(args.names) - {s.stem for s in chosen}
    if unknown:
        print(f"no notebook source named {', '.join(sorted(unknown))} in {SOURCES}", file=sys.stderr)
        return 2
    if args.check:
        problems = [p for p in map(check, chosen) if p]
        print("\n".join(problems) or f"{len(chosen)} notebooks match their sources")
        return 1 if problems else 0
    for source in chosen:
        start = time.perf_counter()
        out = build(source, quick=args.quick, timeout=args.timeout)
        print(f"{out.relative_to(ROOT)}: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
