"""The command line's contract: every flag documented, training flags generated from TrainConfig, --config."""

import argparse
import json
from dataclasses import fields

import pytest

from cnnzoo.cli import build_parser, main
from cnnzoo.engine.config import TrainConfig, load_config
from cnnzoo.errors import CnnzooError
from cnnzoo.studies import list_studies


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_of_every_command_has_help():
    for name, sub in subcommands().items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"cnnzoo {name} {'/'.join(action.option_strings) or action.dest} has no help"


def test_training_flags_are_the_config_fields():
    flags = {s for a in subcommands()["train"]._actions for s in a.option_strings}
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.metadata.get("cli"):
            assert flag in flags, flag
    assert "--data" in flags and "--config" in flags  # the model is positional


def test_study_choices_come_from_the_registry():
    study = subcommands()["study"]
    name = next(a for a in study._actions if a.dest == "name")
    assert list(name.choices) == list_studies() and "transfer" in name.choices


def test_config_reruns_a_recorded_run_with_overrides(tmp_path, capsys):
    common = ["--train-subset", "300", "--epochs", "1", "--batch-size", "100", "--quiet"]
    assert main(["train", "lenet5", *common, "--out", str(tmp_path / "a")]) == 0
    recorded = tmp_path / "a" / "config.json"
    assert main(["train", "--config", str(recorded), "--seed", "3", "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / r / "config.json").read_text()) for r in "ab")
    assert b.pop("seed") == 3 and a.pop("seed") == 0
    assert a == b  # everything else as recorded


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"model": "lenet5", "epochs": "ten"}', "'epochs' should be int"),
        ('{"epochs": 3}', "names no model"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_a_bad_config_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(CnnzooError, match=message):
        load_config(path)
