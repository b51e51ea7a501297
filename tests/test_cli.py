"""The command line: one clear line and exit 2 for bad input, never a traceback."""

import argparse
import json
import subprocess
import sys

import pytest

import cnnzoo.cli as cli
from cnnzoo.cli import main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "cnnzoo", *args], capture_output=True, text=True, timeout=300
    )


def test_models_lists_every_family(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["lenet5"]["params"] == 61_706
    assert rows["lenet5_1998"]["params"] == 60_000
    assert rows["resnet50"]["params"] == 25_557_032
    assert rows["vgg16"]["min_size"] == 32
    assert rows["googlenet"]["params_without_aux"] == 6_624_904
    assert rows["inception_v3"]["params"] == 27_161_264
    assert {"name", "family", "params", "input_size", "min_size", "paper"} <= set(rows["alexnet"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["summary", "resnet81"], "did you mean resnet18"),
        (["summary", "vgg16", "--input-size", "16"], "minimum is 32"),
        (["summary", "lenet5", "--input-size", "0"], "positive integer"),
        (["summary", "lenet5", "--num-classes", "-1"], "positive integer"),
        (["models", "nothing*"], "no model matches"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message):
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]  # argparse puts its usage above the error line
    assert message in last and last.startswith("cnnzoo")
    assert "Traceback" not in r.stderr


def test_summary_json_reproduces_the_lenet5_table(capsys):
    assert main(["summary", "lenet5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_params"] == 156 + 2_416 + 48_120 + 10_164 + 850
    assert out["trainable_params"] == 61_706 and out["frozen_params"] == 0
    assert out["total_macs"] == 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10


def test_summary_text_shows_the_arithmetic(capsys):
    assert main(["summary", "lenet5", "--num-classes", "7"]) == 0
    text = capsys.readouterr().out
    assert "6 x (1x5x5 + 1) = 156" in text and "7 x (84 + 1) = 595" in text


def test_datasets_lists_and_describes(capsys):
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert "mnist" in listing and "glyphs-cyrillic" in listing and "folder:PATH" in listing
    assert main(["datasets", "mnist", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["classes"] == [str(d) for d in range(10)] and facts["image_size"] == 28
    assert facts["channels"] == 1 and facts["train"] == 60_000 and facts["test"] == 10_000
    assert abs(facts["mean"][0] - 0.1307) < 1e-3 and abs(facts["std"][0] - 0.3081) < 1e-3


def test_download_is_needed_for_cifar():
    r = run_cli("train", "lenet5", "--data", "cifar10", "--data-dir", "/nonexistent/cifar")
    assert r.returncode == 2 and "--download" in r.stderr and "Traceback" not in r.stderr


# --- the command table: the extension point ---------------------------------------------------------


def subparsers(parser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def option(subparser, flag: str) -> argparse.Action:
    return next(a for a in subparser._actions if flag in a.option_strings)


def test_the_command_table_is_the_parser(monkeypatch, capsys):
    """Every COMMANDS entry is a subcommand, in the table's order, and a new entry is a new command: its
    `_add_NAME_arguments` declares the flags, its `cmd_NAME` runs."""
    assert list(subparsers(cli.build_parser())) == [c.name for c in cli.COMMANDS]

    def add_arguments(p):
        p.add_argument("--to", default="world", help="whom to greet")

    def run(args):
        print(f"hello {args.to}")
        return 0

    monkeypatch.setattr(cli, "_add_hello_arguments", add_arguments, raising=False)
    monkeypatch.setattr(cli, "cmd_hello", run, raising=False)
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, cli.Command("hello", "greet someone")))
    assert list(subparsers(cli.build_parser()))[-1] == "hello"
    assert main(["hello", "--to", "you"]) == 0 and capsys.readouterr().out == "hello you\n"


def test_choices_are_the_librarys_own():
    from cnnzoo.engine.config import PRECISIONS
    from cnnzoo.explain import METHODS
    from cnnzoo.inference.export import FORMATS

    subs = subparsers(cli.build_parser())
    assert option(subs["explain"], "--method").choices == METHODS
    assert all(m in option(subs["explain"], "--method").help for m in METHODS)
    for name in ("evaluate", "predict"):
        precision = option(subs[name], "--precision")
        assert precision.choices == PRECISIONS and all(p in precision.help for p in PRECISIONS)
    formats = option(subs["export"], "--format")
    assert formats.default == ",".join(FORMATS) and f"subset of {', '.join(FORMATS)} " in formats.help


def test_main_declares_only_the_command_it_runs():
    """`main`'s parser declares a command's arguments when the command is used (so `cnnzoo models` imports
    nothing for `explain`'s or `export`'s choices), and then they are the eager parser's, help and all."""
    eager, deferred = subparsers(cli.build_parser()), subparsers(cli.build_parser(deferred=True))
    assert all(len(p._actions) == 1 for p in deferred.values())  # -h only, until used
    for name, p in eager.items():
        assert deferred[name].format_help() == p.format_help(), name
        assert [a.dest for a in deferred[name]._actions] == [a.dest for a in p._actions]
        assert deferred[name].get_default("func") is p.get_default("func") is not None
