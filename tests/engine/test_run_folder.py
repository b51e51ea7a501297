"""Run folders under faults: a checkpoint's three files stay one unit, an existing run is never overwritten
unasked, a folder is written by one process at a time, and --resume says what it keeps and refuses.

Each case of issue 12 that concerns run folders is reproduced here (crash mid-save, disk full, kill before
the first checkpoint, a pickle with code or a truncated state file, a config missing a key, modes, locks).
"""

import errno
import json
import os
import pickle
import stat
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import cnnzoo.artifacts.checkpoint as checkpoint
from cnnzoo.artifacts.checkpoint import checkpoint_problem, save_checkpoint
from cnnzoo.cli import main
from cnnzoo.data.loader import InMemoryLoader
from cnnzoo.engine import TrainConfig, default_config, train
from cnnzoo.engine.resume import write_config
from cnnzoo.engine.runfolder import RunLock

# 640 images in batches of 64: 10 steps per epoch, a second or two per run on 2 cores
TINY = dict(train_subset=640, epochs=2, batch_size=64, lr=0.1, precision="fp32")


def tiny_cfg(**kw) -> TrainConfig:
    return replace(default_config("lenet5", "mnist"), **{**TINY, **kw})


def tiny_args(run, *extra) -> list[str]:
    return ["train", "lenet5", "--train-subset", "640", "--batch-size", "64", "--epochs", "1", "--quiet",
            "--precision", "fp32", "--out", str(run), *extra]  # fmt: skip


class Killed(BaseException):
    """Stands for kill -9: nothing in cnnzoo catches it."""


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("cnnzoo: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


def assert_same_weights(a_dir, b_dir):
    a = load_file(str(a_dir / "last.safetensors"))
    b = load_file(str(b_dir / "last.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted two-epoch run every resumed run must reproduce."""
    run = tmp_path_factory.mktemp("straight") / "run"
    train(tiny_cfg(), run_dir=run, quiet=True)
    return run


# --- a checkpoint is one unit --------------------------------------------------------------------


def test_crash_between_the_renames_falls_back_to_the_previous_set(straight, tmp_path, monkeypatch, capsys):
    """Killed while renaming the second epoch's files into place: last.safetensors/.state.pt are epoch 2,
    last.json epoch 1. --resume must not mix them: it takes last.prev (epoch 1), says so, and ends with
    exactly the weights of the uninterrupted run."""
    run = tmp_path / "run"
    real_replace, count = os.replace, {"json": 0}

    def replace_then_die(src, dst):
        if str(dst).endswith("last.json"):
            count["json"] += 1
            if count["json"] == 2:
                raise Killed
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        train(tiny_cfg(), run_dir=run, quiet=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert "different saves" in checkpoint_problem(run / "last.safetensors", state=True)
    assert checkpoint_problem(run / "last.prev.safetensors", state=True) is None
    (run / ".last.safetensors.0a1b2c3d").write_bytes(b"half a file")  # what kill -9 leaves mid-write
    capsys.readouterr()

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "removed 1 half-written file(s)" in err and ".last.safetensors.0a1b2c3d" in err
    assert "using the previous consistent checkpoint last.prev.safetensors (epoch 1)" in err
    assert not (run / ".last.safetensors.0a1b2c3d").exists()
    assert_same_weights(straight, run)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert checkpoint_problem(run / "last.safetensors", state=True) is None


def test_disk_full_during_a_save_keeps_the_earlier_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(tiny_args(run)) == 0
    before = (run / "last.json").read_text()
    real_save_file = checkpoint.save_file

    def full_disk(state, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\0" * 1000)  # some bytes made it, then the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2
    line = one_line_error(capsys)
    assert f"cannot write {run / 'last.safetensors'}: No space left on device" in line
    assert "the previous last.safetensors is intact" in line
    monkeypatch.setattr(checkpoint, "save_file", real_save_file)
    assert (run / "last.json").read_text() == before
    assert checkpoint_problem(run / "last.safetensors", state=True) is None
    assert not [p.name for p in run.iterdir() if p.name.startswith(".last")]  # no temporaries left
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0  # and it resumes


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_files_get_the_users_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        train(tiny_cfg(epochs=1), run_dir=tmp_path / "run", quiet=True)
    finally:
        os.umask(old)
    for p in (tmp_path / "run").rglob("*"):  # TensorBoard's folder and event files too
        if p.name != ".cnnzoo.lock":
            assert stat.S_IMODE(p.stat().st_mode) == (0o777 if p.is_dir() else 0o666) & ~mask, p.name


def test_save_checkpoint_keeps_the_previous_consistent_set(tmp_path):
    model = torch.nn.Linear(2, 2)
    meta = {"model": "x", "classes": ["a", "b"], "in_chans": 1, "image_size": 2, "mean": [0], "std": [1]}
    save_checkpoint(tmp_path, "best", model, {**meta, "epoch": 1})
    save_checkpoint(tmp_path, "best", model, {**meta, "epoch": 2})
    assert json.loads((tmp_path / "best.prev.json").read_text())["epoch"] == 1
    assert checkpoint_problem(tmp_path / "best.prev.safetensors") is None


# --- broken checkpoints: one line each -----------------------------------------------------------


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cnnzoo-pwned",))


@pytest.fixture()
def one_epoch_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_args(run)) == 0
    capsys.readouterr()
    return run


@pytest.mark.parametrize(
    "damage, message",
    [
        ("code", r"last\.state\.pt is unusable: it holds Python objects .*can run code: posix\.system"),
        ("raw-pickle", r"last\.state\.pt is unusable: it holds Python objects .*can run code: posix\.system"),
        ("truncated", r"last\.state\.pt is unusable: it is truncated or corrupt"),
        ("no-image-size", r"last\.json: checkpoint config lacks 'image_size'"),
        ("bad-json", r"last\.json: corrupt checkpoint config"),
        ("config-type", r"config\.json: configuration field 'epochs' should be int"),
        ("config-json", r"config\.json is not valid JSON"),
        ("finetune-run", r"is a fine-tuning run: continue it with `cnnzoo finetune --resume "),
    ],
)
def test_resume_of_a_broken_checkpoint_is_one_line(one_epoch_run, capsys, damage, message):
    run = one_epoch_run
    state = run / "last.state.pt"
    if damage == "code":
        torch.save({"progress": {}, "x": Evil()}, state)
    elif damage == "raw-pickle":
        state.write_bytes(pickle.dumps(Evil()))
    elif damage == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "no-image-size":
        meta = json.loads((run / "last.json").read_text())
        del meta["image_size"]
        (run / "last.json").write_text(json.dumps(meta))
    elif damage == "bad-json":
        (run / "last.json").write_text('{"model": "lenet5",')
    elif damage == "config-type":
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "epochs": "ten"}))
    elif damage == "config-json":
        (run / "config.json").write_text("{not json")
    else:
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({"finetune": {"source": "x"}, "train": config}))
    if os.path.exists("/tmp/cnnzoo-pwned"):
        os.unlink("/tmp/cnnzoo-pwned")
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    import re

    assert re.search(message, one_line_error(capsys))
    assert not os.path.exists("/tmp/cnnzoo-pwned")  # the pickle's code never ran


def test_evaluate_falls_back_to_the_previous_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_args(run, "--epochs", "2")) == 0
    meta = json.loads((run / "last.json").read_text())
    (run / "last.json").write_text(json.dumps({**meta, "save_id": "from another save"}))
    capsys.readouterr()
    assert main(["evaluate", str(run / "last.safetensors"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "using the previous consistent checkpoint last.prev.safetensors (epoch 1)" in err
    assert json.loads(out)["images"] == 10_000


# --- refuse, overwrite, lock ---------------------------------------------------------------------


def test_an_existing_run_is_refused_unless_overwrite(one_epoch_run, capsys):
    run = one_epoch_run
    assert main(tiny_args(run)) == 2
    line = one_line_error(capsys)
    assert f"{run} already holds a run (lenet5 on mnist, 1 of 1 epochs done)" in line
    assert "--resume" in line and "--overwrite" in line
    assert main(tiny_args(run, "--overwrite")) == 0
    assert "--overwrite: removed the earlier run" in capsys.readouterr().err


def test_finetune_into_an_existing_run_is_refused(one_epoch_run, capsys):
    run = one_epoch_run
    assert main(["finetune", "--from", str(run), "--data", "digits", "--out", str(run)]) == 2
    assert f"{run} already holds a run (lenet5 on mnist, 1 of 1 epochs done)" in one_line_error(capsys)


def test_a_run_refused_for_bad_input_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "runs" / "typo"
    assert main(["train", "lenet5", "--data", "nosuchdata", "--out", str(out)]) == 2
    assert "unknown dataset" in one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_out_naming_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(tiny_args(tmp_path / "notes.txt")) == 2
    assert f"--out {tmp_path / 'notes.txt'} is a file, not a folder" in one_line_error(capsys)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_folder_being_written_is_locked(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):  # another process writing the run (flock conflicts between open files too)
        assert main(tiny_args(run)) == 2
        line = one_line_error(capsys)
        assert f"{run} is being written by another cnnzoo process (pid {os.getpid()} on " in line
        assert main(["train", "--resume", str(run)]) == 2  # no config.json: not a run at all yet
    assert main(tiny_args(run)) == 0  # released on exit


def test_resume_is_locked_too(one_epoch_run, capsys):
    with RunLock(one_epoch_run):
        assert main(["train", "--resume", str(one_epoch_run), "--epochs", "2"]) == 2
        assert "is being written by another cnnzoo process" in one_line_error(capsys)


# --- resume: what is kept, changed, refused ------------------------------------------------------


def test_resume_says_what_it_keeps_and_refuses(one_epoch_run, tmp_path, capsys):
    run = one_epoch_run
    assert main(["train", "resnet20", "--resume", str(run), "--lr", "0.3"]) == 2
    line = one_line_error(capsys)
    recorded_lr = json.loads((run / "config.json").read_text())["lr"]  # the recipe's, whatever it is today
    assert recorded_lr != 0.3
    assert "model resnet20 (recorded: lenet5)" in line and f"--lr 0.3 (recorded: {recorded_lr})" in line
    assert "only --epochs, --device" in line
    assert main(["train", "--resume", str(run), "--out", str(tmp_path / "elsewhere")]) == 2
    assert "--out" in one_line_error(capsys)
    assert main(["train", "--resume", str(run), "--config", str(run / "config.json")]) == 2
    one_line_error(capsys)


def test_finished_run_says_so_and_epochs_extend_it(one_epoch_run, capsys):
    run = one_epoch_run
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"{run} is already finished: 1 epoch, " in out and "--epochs N" in out
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"extending the finished run {run} to 2 epochs (recorded: 1; 1 done)" in err
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert json.loads((run / "last.json").read_text())["epoch"] == 2
    assert main(["train", "--resume", str(run), "--epochs", "1"]) == 2
    assert "has already trained 2 epochs" in one_line_error(capsys)


def test_run_killed_before_its_first_checkpoint_starts_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_config(run, tiny_cfg(epochs=1))  # all a kill -9 during data loading leaves
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "has no checkpoint yet (it stopped before its first save): starting it over" in err
    assert json.loads((run / "last.json").read_text())["epoch"] == 1


def test_mid_epoch_checkpoint_loses_minutes_not_an_epoch(tmp_path, monkeypatch):
    """With checkpoint_minutes tiny, `last` is saved at every progress refresh (every 20 batches); a kill
    at batch 30 of 40 resumes from batch 21 and ends with the uninterrupted run's exact weights."""
    cfg = tiny_cfg(train_subset=1280, batch_size=32, epochs=1, checkpoint_minutes=1e-9)
    straight = train(cfg, run_dir=tmp_path / "straight", quiet=True)
    original_iter, seen = InMemoryLoader.__iter__, {"n": 0}

    def dying_iter(self):
        for batch in original_iter(self):
            if self.shuffle:
                seen["n"] += 1
                if seen["n"] == 31:
                    raise Killed
            yield batch

    monkeypatch.setattr(InMemoryLoader, "__iter__", dying_iter)
    with pytest.raises(Killed):
        train(cfg, run_dir=tmp_path / "killed", quiet=True)
    monkeypatch.setattr(InMemoryLoader, "__iter__", original_iter)
    saved = json.loads((tmp_path / "killed" / "last.json").read_text())
    assert (saved["epoch"], saved["batch"]) == (0, 21)
    resumed = train(None, resume=tmp_path / "killed", quiet=True)
    assert resumed.epochs_run == 1
    assert_same_weights(tmp_path / "straight", tmp_path / "killed")
    assert resumed.final_acc == pytest.approx(straight.final_acc, abs=0.02)


def test_a_fine_tuning_run_is_refused_suggesting_finetune_resume(one_epoch_run, tmp_path, capsys):
    """The refusal of a fine-tuning run's folder offers `cnnzoo finetune --resume` (not train's), and names
    the run by its source (its recorded model is a placeholder)."""
    ft = tmp_path / "ft"
    args = ["finetune", "--from", str(one_epoch_run), "--data", "digits", "--samples-per-class", "5",
            "--epochs", "1", "--quiet", "--out", str(ft)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    line = one_line_error(capsys)
    assert (
        f"{ft} already holds a run (a fine-tuning of {one_epoch_run} on digits, 1 of 1 epochs done)" in line
    )
    assert f"continue it with `cnnzoo finetune --resume {ft}`" in line and "--overwrite" in line
