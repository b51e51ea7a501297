"""README as written: every command it shows exists with the flags it shows, and its Python snippets run.

A newcomer copies README's code blocks. The commands are checked against the real parsers (cnnzoo's
subcommands, the bench scripts' --help, the Makefile's targets, the files named); the Python snippets are
executed, with only what cannot run in a test swapped: training is shortened (the same calls, fewer images),
`digit.png` is a real MNIST test digit, and the Triton client talks to a real `cnnzoo serve` on a free port.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from cnnzoo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)


def shell_lines() -> list[str]:
    """Each command of README's bash blocks (continuation lines joined, comments dropped)."""
    lines = []
    for lang, body in BLOCKS:
        if lang not in ("bash", "sh", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def cnnzoo_invocations() -> list[list[str]]:
    """The arguments after `cnnzoo` (or `python -m cnnzoo`, `torchrun ... -m cnnzoo`) in each command."""
    found = []
    for line in shell_lines():
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
            try:
                words = shlex.split(part)
            except ValueError:
                words = part.split()
            for i, word in enumerate(words):
                if word.endswith("/cnnzoo") or word == "cnnzoo" and (i == 0 or words[i - 1] == "-m"):
                    found.append(words[i + 1 :])
                    break
    return found


@cache
def options_of(command: str) -> set[str] | None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    p = sub.choices.get(command)
    if p is None:
        return None
    return {s for a in p._actions for s in a.option_strings}


def test_readme_shows_commands_at_all():
    assert len(cnnzoo_invocations()) > 30


@pytest.mark.parametrize("args", cnnzoo_invocations(), ids=lambda a: " ".join(a)[:60])
def test_each_cnnzoo_command_exists_with_its_flags(args):
    top = {"--help", "-h", "--version"}
    if not args or args[0] in top:
        assert not args or args[0] in options_of_top(), args
        return
    command = args[0]
    known = options_of(command)
    assert known is not None, f"README shows `cnnzoo {command}`, which is no command"
    for word in args[1:]:
        if word.startswith("--"):
            flag = word.split("=")[0]
            assert flag in known, f"README shows `cnnzoo {command} {flag}`, which it does not accept"


def options_of_top() -> set[str]:
    return {s for a in build_parser()._actions for s in a.option_strings}


def test_make_targets_and_files_named_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    for line in shell_lines():
        words = line.split()
        if words[0] == "make":
            for target in (w for w in words[1:] if "=" not in w and not w.startswith("-")):
                assert target in targets, f"README shows `make {target}`, which the Makefile lacks"
        for word in words:
            if re.fullmatch(r"(bench|scripts|notebooks)/[\w./-]+\.(py|sh|ipynb)", word):
                assert (ROOT / word).is_file(), f"README names {word}, which does not exist"


@pytest.mark.parametrize(
    "script", sorted({w for line in shell_lines() for w in line.split() if re.fullmatch(r"bench/\w+\.py", w)})
)
def test_bench_flags_shown_exist(script):
    flags = {
        w.split("=")[0]
        for line in shell_lines()
        if script in line.split()
        for w in line.split()[line.split().index(script) + 1 :]
        if w.startswith("--")
    }
    if not flags:
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    help_text = subprocess.run(
        [sys.executable, script, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    ).stdout
    for flag in flags:
        assert flag in help_text, f"README shows `python {script} {flag}`, which its --help does not list"


# --- the Python snippets, run ------------------------------------------------------------------------


def python_snippets() -> list[str]:
    return [body for lang, body in BLOCKS if lang == "python"]


@pytest.fixture
def digit_png(tmp_path):
    from PIL import Image

    from cnnzoo.data import load_dataset

    test = load_dataset("mnist").test
    Image.fromarray(test.images[0, 0].numpy()).save(tmp_path / "digit.png")
    return tmp_path / "digit.png"


@pytest.fixture
def shortened(monkeypatch):
    """cnnzoo.train and cnnzoo.finetune as README calls them, on fewer images (the same keywords)."""
    import cnnzoo

    real_train, real_finetune = cnnzoo.train, cnnzoo.finetune

    def train(*args, **kw):
        return real_train(*args, **{**kw, "epochs": 1, "train_subset": 500, "quiet": True})

    def finetune(*args, **kw):
        return real_finetune(*args, **{**kw, "epochs": 1, "samples_per_class": 5, "quiet": True})

    monkeypatch.setattr(cnnzoo, "train", train)
    monkeypatch.setattr(cnnzoo, "finetune", finetune)


def test_every_python_snippet_is_run_here():
    kinds = [snippet_kind(s) for s in python_snippets()]
    assert None not in kinds, "a README snippet this test does not know how to run"


def snippet_kind(code: str) -> str | None:
    if "tritonclient" in code:
        return "triton"
    if "torch.hub.load" in code:
        return "hub"
    return "plain"


def run_snippet(code: str, cwd: Path, namespace: dict | None = None) -> dict:
    namespace = namespace if namespace is not None else {}
    old = Path.cwd()
    os.chdir(cwd)
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(old)
    return namespace


def test_python_snippets_run(tmp_path, digit_png, shortened):
    namespace: dict = {}  # one session, as a reader pasting them in order would have
    for code in python_snippets():
        if snippet_kind(code) == "plain":
            run_snippet(code, digit_png.parent, namespace)


def test_torch_hub_snippet_runs(tmp_path):
    for code in python_snippets():
        if snippet_kind(code) == "hub":
            ns = run_snippet(code, ROOT)
            assert ns["model"].fc.out_features == 10


def test_triton_snippet_runs_against_a_real_server(digit_png, serving):
    pytest.importorskip("tritonclient.http")
    import cnnzoo

    with serving({"lenet5-mnist": cnnzoo.load("lenet5:mnist")}) as address:
        for code in python_snippets():
            if snippet_kind(code) == "triton":
                ns = run_snippet(code.replace("127.0.0.1:8000", address), digit_png.parent)
                assert ns["result"].as_numpy("logits").shape == (1, 10)
