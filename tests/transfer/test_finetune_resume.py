"""`cnnzoo finetune` keeps `cnnzoo train`'s interrupt/resume contract (issue 20, item 3): an interrupted run
prints a hint that works and no final accuracy; `--resume RUN` and `--auto-resume` continue it exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.cli import main
from cnnzoo.data.loader import InMemoryLoader


def args_for(source, run, strategy: str, *extra: str) -> list[str]:
    # 20 digits per class in batches of 16: 13 steps per epoch
    return ["finetune", "--from", str(source), "--data", "digits", "--strategy", strategy,
            "--samples-per-class", "20", "--epochs", "3", "--batch-size", "16", "--precision", "fp32",
            "--device", "cpu", "--quiet", "--no-tensorboard", "--out", str(run), *extra]  # fmt: skip


def interrupt_at(monkeypatch, n: int) -> None:
    """Ctrl-C when the n-th shuffled training batch is drawn."""
    original_iter, seen = InMemoryLoader.__iter__, [0]

    def interrupting_iter(self):
        for batch in original_iter(self):
            if self.shuffle:
                seen[0] += 1
                if seen[0] == n:
                    raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(InMemoryLoader, "__iter__", interrupting_iter)


def assert_same_weights(a, b) -> None:
    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


def epochs_logged(run) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("strategy, resume", [("full", "--resume"), ("gradual", "--auto-resume")])
def test_interrupted_finetune_resumes_exactly(strategy, resume, source, tmp_path, monkeypatch, capsys):
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(args_for(source, straight, strategy)) == 0
    capsys.readouterr()
    # gradual: 1 epoch's head phase draws 13 batches once to cache features, then its 3 epochs of the whole model
    interrupt_at(monkeypatch, (13 if strategy == "gradual" else 0) + 13 + 5)  # epoch 2, after its 4th batch
    assert (
        main(
            args_for(source, run, strategy, "--head-epochs", "1")
            if strategy == "gradual"
            else args_for(source, run, strategy)
        )
        == 130
    )
    out = capsys.readouterr().out
    assert f"continue with: cnnzoo finetune --resume {run}" in out and "test accuracy" not in out
    monkeypatch.undo()
    if resume == "--resume":
        assert main(["finetune", "--resume", str(run), "--quiet"]) == 0
    else:  # the same command requeued
        assert main([*args_for(source, run, strategy, "--head-epochs", "1"), "--auto-resume"]) == 0
    captured = capsys.readouterr()
    assert (
        f"continuing the fine-tuning run {run} from its last checkpoint (1 epoch done, 4 batches into the next)"
        in captured.err
    )
    assert "test accuracy" in captured.out
    if strategy == "gradual":  # the reference, with the same head phase
        assert main([*args_for(source, tmp_path / "ref", strategy, "--head-epochs", "1")]) == 0
        straight = tmp_path / "ref"
    assert_same_weights(straight, run)
    assert epochs_logged(run) == [1, 2, 3]
    capsys.readouterr()
    assert main(["finetune", "--resume", str(run)]) == 0
    assert f"{run} is already finished: 3 epochs" in capsys.readouterr().out


def test_head_strategy_interrupted_starts_over_on_resume(source, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    interrupt_at(monkeypatch, 3)  # while the features are cached
    assert main(args_for(source, run, "head")) == 130
    out = capsys.readouterr().out
    assert f"continue with: cnnzoo finetune --resume {run}" in out and "test accuracy" not in out
    monkeypatch.undo()
    with (run / "metrics.jsonl").open("a") as f:  # as a head interrupted after its first epoch leaves it
        f.write(json.dumps({"epoch": 1, "train_loss": 9.0}) + "\n")
    assert main(["finetune", "--resume", str(run), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"continuing the fine-tuning run {run} from the start" in captured.err
    assert "with strategy head" in captured.out
    assert epochs_logged(run) == [1, 2, 3]


def test_finetune_resume_and_auto_resume_refuse_what_they_cannot_continue(source, tmp_path, capsys):
    run = tmp_path / "run"
    args = args_for(source, run, "head", "--epochs", "1")
    assert main(args) == 0
    capsys.readouterr()
    cases = [
        ([*args, "--auto-resume", "--lr", "0.01"], f"--auto-resume: {run} already holds another run"),
        (
            ["finetune", "--resume", str(run), "--lr", "0.01"],
            "a resumed run keeps its recorded configuration",
        ),
        (["finetune", "--resume", str(run), "--from", str(source)], "--from does not go with it"),
        (["finetune", "--resume", str(source)], "is not a fine-tuning run"),
        (["train", "--resume", str(run)], f"continue it with `cnnzoo finetune --resume {run}`"),
        (args, f"continue it with `cnnzoo finetune --resume {run}`"),
        (["finetune", "--data", "digits"], "name the source and the target"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("cnnzoo: error: ") and message in err[-1], (argv, err)
