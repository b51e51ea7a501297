"""Small things a user sees (issue 20, item 8): --version, help texts with defaults, help(cnnzoo), the models
table's Inception lines, the bundled weights' "made by" commands, figures rounded, progress in log files."""

import importlib.util
import io
import json
import pydoc
from pathlib import Path

import pytest

import cnnzoo
from cnnzoo._io import progress
from cnnzoo._version import __version__
from cnnzoo.cli import main
from cnnzoo.engine.config import TrainConfig, train_command
from cnnzoo.errors import CnnzooError
from cnnzoo.models._builder import param_count_on_meta
from cnnzoo.models._pretrained import list_pretrained

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"cnnzoo {__version__}"


def test_top_level_help_speaks_to_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    first = out.split("\n\n")[1]  # the description, after the usage line
    assert "LeNet-5" in first and "subcommand" not in first and "library function" not in first
    assert "--version" in out and "examples:" in out and "cnnzoo train lenet5 --data mnist" in out


def test_train_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for field in ("epochs", "seed", "momentum", "schedule", "eval_every"):
        default = TrainConfig.__dataclass_fields__[field].default
        assert f"(default: {default}" in text, field
    assert "(default: 10; set per model and dataset by the recipe)" in text  # epochs: LeNet's recipe differs
    assert "(default: 0.9)" in text  # momentum: no recipe changes it


def test_help_of_the_package_is_short_and_names_the_entry_points():
    text = pydoc.render_doc(cnnzoo, renderer=pydoc.plaintext)
    head = "\n".join(text.splitlines()[:25])
    for name in ("create_model(", "train(", "finetune(", "load(", "list_models(", "CnnzooError"):
        assert name in head, name
    assert "inherited from" not in text and "__getattr__" not in text
    assert len(text.splitlines()) < 110
    assert cnnzoo.CnnzooError is CnnzooError and callable(cnnzoo.train)


def test_the_inception_lines_say_why_their_count_differs(capsys):
    assert main(["models", "*"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for name, heads in (
        ("googlenet", "its 2 auxiliary classifiers"),
        ("inception_v3", "its auxiliary classifier"),
    ):
        with_aux, without = param_count_on_meta(name), param_count_on_meta(name, aux_logits=False)
        assert f"{with_aux:,}" in lines[name] and f"with {heads}; {without:,} without" in lines[name]
    assert "auxiliary" not in lines["resnet18"]


@pytest.mark.parametrize("entry", list_pretrained(), ids=lambda e: e.name)
def test_made_by_commands_come_from_the_recipe(entry):
    """The manifest's command is generated from the recipe the weights were trained with (that it re-makes
    it through `cnnzoo train`'s parser is tests/inference/test_pretrained.py's check)."""
    recipe = entry.record["recipe"]
    assert entry.record["command"] == train_command(TrainConfig.from_dict(recipe))
    assert f"--augment {recipe['augment']}" in entry.record["command"]  # even at the data set's default


def test_fashion_mnist_names_its_augmentation():
    manifest = json.loads((ROOT / "src/cnnzoo/assets/pretrained/manifest.json").read_text())
    assert "--augment crop=2,flip" in manifest["models"]["lenet5:fashion-mnist"]["command"]


def test_bench_train_rounds_its_seconds():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "bench" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.fmt_reached(69.24003251999966) == "69.2 s" and bench.fmt_reached(None) == "not reached"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_writes_final_lines_to_a_log_and_a_bar_to_a_terminal():
    log = io.StringIO()
    assert list(progress(range(7), total=7, desc="rendering fonts", unit="font", file=log)) == list(range(7))
    assert "\r" not in log.getvalue() and log.getvalue().startswith("rendering fonts: 7/7 fonts in ")
    assert log.getvalue().count("\n") == 1
    terminal = _Terminal()
    list(progress(range(7), total=7, desc="rendering fonts", unit="font", file=terminal))
    assert "\r" in terminal.getvalue()  # tqdm's frames, where they redraw in place
    quiet = io.StringIO()
    list(progress(range(7), total=7, desc="x", unit="font", enabled=False, file=quiet))
    assert quiet.getvalue() == ""
