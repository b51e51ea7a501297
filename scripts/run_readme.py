"""Run every command of README's bash blocks as written, in order, and table what each did.

    python scripts/run_readme.py --list                     # the commands, as they will run
    python scripts/run_readme.py --timeout 120 --busy       # in a clean clone, beside a busy process

A newcomer's first hour, replayed: from the repository root of a clean clone, each command runs in a shell
with `.venv/bin` first on PATH (README says to activate it), stdout and stderr kept, under a time limit
(long runs by design, full studies and benchmarks, are stopped there and reported as such). Only what
cannot exist on a fresh machine is replaced, and the table says so: the example run folder's timestamped
name becomes the run the earlier `cnnzoo train lenet5 --data mnist` made, `digit.png` and `my-digit.jpg` are a
real MNIST test digit, `~/my-images` and `folder:photos` the clothes folder README makes with
`scripts/make_clothes_folder.py`. Commands that need the network for weights (a torchvision download) are
listed, not run. `cnnzoo serve` and `tensorboard` start in the background for the commands after them and are
stopped when the next command is not a `curl`. `--busy` starts one busy process (a Python loop on one core)
for the whole run, as a user's laptop has. The last lines are a Markdown table: command, exit status, seconds
and the first line of what README says beside it, for the reader to compare with the output's last line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS_NETWORK = ("resnet18-f37072fd.pth", "torchvision:")
BACKGROUND = ("cnnzoo serve", "tensorboard --logdir")
SKIPPED = {
    "make test": "the CI command (.ci/run), run and timed on its own",
    "make test-peers": "side environment",
}


def readme_commands(text: str) -> list[tuple[str, str]]:
    """(command, README's comment beside it) for each line of the bash blocks, continuations joined."""
    out = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if lang not in ("bash", "sh", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition(" #")
            command = command.strip()
            if command and not command.startswith("#"):
                out.append((command, comment.strip()))
    return out


def substituted(command: str, workdir: Path) -> tuple[str, list[str]]:
    """The command with what a fresh machine lacks replaced by the nearest real thing, and what was replaced."""
    notes = []
    runs = sorted((workdir / "runs").glob("lenet5-mnist-*"), key=lambda p: p.stat().st_mtime)
    replacements = [
        (r"runs/lenet5-mnist-20261127-204500|runs/lenet5-mnist-\.\.\.", str(runs[0]) if runs else None),
        (r"(?<![\w/])(my-)?digit\.(png|jpg)", str(workdir / "digit.png")),
        (
            r"~/my-images|folder:photos",
            "folder:/tmp/clothes" if "folder:photos" in command else "/tmp/clothes",
        ),
    ]
    for pattern, value in replacements:
        if value is not None and re.search(pattern, command):
            command = re.sub(pattern, value.replace("\\", "/"), command)
            notes.append(f"{pattern.split('|')[0]} -> {value}")
    return command, notes


def make_digit(workdir: Path, python: str) -> None:
    code = (
        "from PIL import Image; from cnnzoo.data import load_dataset; "
        f"Image.fromarray(load_dataset('mnist').test.images[0, 0].numpy()).save({str(workdir / 'digit.png')!r})"
    )
    subprocess.run([python, "-c", code], check=False)


def run_all(args) -> list[dict]:
    workdir = Path.cwd()
    env = {**os.environ, "PATH": f"{workdir / '.venv/bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OMP_NUM_THREADS", None)
    rows, background = [], None
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        for command, comment in readme_commands((ROOT / "README.md").read_text()):
            if background is not None and not command.startswith("curl"):
                _stop(background)
                background = None
            if command in SKIPPED or any(n in command for n in NEEDS_NETWORK):
                why = SKIPPED.get(command, "needs a download (torchvision weights)")
                rows.append(
                    {"command": command, "status": "not run", "seconds": 0, "says": comment, "why": why}
                )
                continue
            if not (workdir / "digit.png").exists() and (workdir / ".venv/bin/python").exists():
                make_digit(workdir, str(workdir / ".venv/bin/python"))
            run, notes = substituted(command, workdir)
            start = time.monotonic()
            if any(run.startswith(b) for b in BACKGROUND):
                background = _start(run, env)
                time.sleep(args.server_wait)
                status = "running" if background.poll() is None else f"exit {background.returncode}"
                rows.append(_row(command, run, notes, status, time.monotonic() - start, comment, ""))
                continue
            process = _start(run, env)
            try:
                output = process.communicate(timeout=args.timeout)[0]
                status = f"exit {process.returncode}"
            except subprocess.TimeoutExpired:
                _stop(process)  # the whole process group: the shell's children too
                status = f"stopped at {args.timeout:.0f} s"
                output = process.communicate()[0] or ""
            rows.append(_row(command, run, notes, status, time.monotonic() - start, comment, output))
            print(f"{status:>18}  {rows[-1]['seconds']:7.1f} s  {command[:100]}", flush=True)
    finally:
        if background is not None:
            _stop(background)
        if busy is not None:
            busy.kill()
    return rows


def _start(run: str, env: dict) -> subprocess.Popen:
    """`run` in a shell of its own process group (so that `_stop` reaches its children), output captured."""
    return subprocess.Popen(
        run,
        shell=True,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _row(command, run, notes, status, seconds, comment, output) -> dict:
    lines = [ln for ln in output.replace("\r", "\n").splitlines() if ln.strip()]
    return {
        "command": command,
        "ran": run if run != command else None,
        "replaced": notes,
        "status": status,
        "seconds": round(seconds, 1),
        "says": comment,
        "last_line": lines[-1][:200] if lines else "",
    }


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the commands and stop")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds a command may run (default 120)"
    )
    parser.add_argument("--server-wait", type=float, default=20.0, help="seconds a server gets to start")
    parser.add_argument("--busy", action="store_true", help="run beside one busy process of this script's")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.list:
        for command, comment in readme_commands((ROOT / "README.md").read_text()):
            print(command + (f"    # {comment}" if comment else ""))
        return
    rows = run_all(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("\n| command | status | seconds | README says | last line of the output |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = [shlex.quote(r["command"])[:90], r["status"], f"{r['seconds']:.1f}", r["says"][:80]]
        cells.append(r.get("last_line") or r.get("why", ""))
        print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")


if __name__ == "__main__":
    main()
