"""Elastic training (issue 19): a torchrun restart continues the run folder from its last checkpoint, a rank
whose peer died says so in one line, and `--auto-resume` continues a run a scheduler requeued.

The torchrun tests run 2 gloo ranks on small slices of MNIST (a few seconds of training each); a worker is
killed with SIGKILL once a mid-epoch checkpoint exists, as in the issue.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.cli import main
from cnnzoo.data.loader import InMemoryLoader

# 1280 images in batches of 32: 40 steps per epoch, mid-epoch saves after batches 1 and 21 (every host sync)
REQUEUE = ["lenet5", "--train-subset", "1280", "--batch-size", "32", "--epochs", "2", "--eval-every", "2",
           "--precision", "fp32", "--device", "cpu", "--quiet", "--checkpoint-minutes", "1e-9"]  # fmt: skip


class Killed(BaseException):
    """Stands for kill -9: nothing in cnnzoo catches it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, port: int, nproc: int = 2, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
            f"--max-restarts={restarts}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            "--monitor-interval=0.1", *args]  # fmt: skip


def weights(run: Path) -> dict:
    return load_file(str(run / "last.safetensors"))


def assert_close_weights(a: Path, b: Path, tol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=tol, atol=tol)


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("cnnzoo: error: ") and not any("Traceback" in x for x in err), err
    return err[-1]


# --- --auto-resume: a scheduler requeues the same command --------------------------------------------------


def test_auto_resume_continues_a_requeued_run_exactly(tmp_path, monkeypatch, capsys):
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(["train", *REQUEUE, "--out", str(straight)]) == 0
    requeued = ["train", *REQUEUE, "--out", str(run), "--auto-resume"]
    # the first attempt starts the empty folder and is killed at batch 30 of epoch 2 (saved: batch 21)
    original_iter, seen = InMemoryLoader.__iter__, [0]

    def dying_iter(self):
        for batch in original_iter(self):
            if self.shuffle:
                seen[0] += 1
                if seen[0] == 40 + 30:
                    raise Killed
            yield batch

    monkeypatch.setattr(InMemoryLoader, "__iter__", dying_iter)
    with pytest.raises(Killed):
        main(requeued)
    monkeypatch.setattr(InMemoryLoader, "__iter__", original_iter)
    saved = json.loads((run / "last.json").read_text())
    assert (saved["epoch"], saved["batch"]) == (1, 21)
    capsys.readouterr()
    # requeued: the same command continues it, says so once, and ends as the uninterrupted run
    assert main(requeued) == 0
    captured = capsys.readouterr()
    assert (
        captured.err.count(
            f"--auto-resume: continuing {run} from its last checkpoint (1 of 2 epochs done, 21 batches into the next)"
        )
        == 1
    )
    assert epochs_logged(run) == [1, 2]
    assert_close_weights(straight, run, 1e-6)
    # requeued once more after it finished: nothing to train, exit 0
    assert main(requeued) == 0
    assert "already finished" in capsys.readouterr().out
    assert epochs_logged(run) == [1, 2]


def test_auto_resume_refuses_another_configuration(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", *REQUEUE, "--epochs", "1", "--out", str(run)]
    assert main(args) == 0
    before = (run / "last.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*args, "--auto-resume", "--lr", "0.01"]) == 2
    line = one_line_error(capsys)
    assert (
        f"--auto-resume: {run} already holds another run (lenet5 on mnist, 1 of 1 epochs done; --lr 0.01"
        in line
    )
    assert "--overwrite" in line
    assert (run / "last.safetensors").read_bytes() == before  # untouched
    for extra, message in [
        (["--overwrite"], "--overwrite does not go with it"),
        (["--resume", str(run)], "--resume does not go with it"),
    ]:
        assert main([*args, "--auto-resume", *extra]) == 2
        assert message in one_line_error(capsys)
    assert main(["train", *REQUEUE, "--auto-resume"]) == 2
    assert "--auto-resume continues the run folder --out names" in one_line_error(capsys)


# --- torchrun: a rank killed, the job restarted -------------------------------------------------------------


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker `rank` (a child of the launcher), read from its environment."""
    try:
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
@pytest.mark.slow
def test_torchrun_restart_resumes_a_killed_run_exactly(tmp_path):
    """The issue's command with rank 1 killed (kill -9) after a mid-epoch checkpoint: rank 0 prints one line,
    torchrun restarts both, the run continues from the checkpoint and ends as an uninterrupted run."""
    # 1536 images in global batches of 32: 48 steps per epoch, a mid-epoch save at every 20th
    args = ["train", "lenet5", "--train-subset", "1536", "--batch-size", "32", "--epochs", "3",
            "--eval-every", "3", "--precision", "fp32", "--device", "cpu", "--quiet",
            "--checkpoint-minutes", "1e-9"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run, straight = tmp_path / "run", tmp_path / "straight"
    jobs = {}
    for name in ("run", "straight"):  # the uninterrupted reference runs beside the job whose rank is killed
        cmd = torchrun("-m", "cnnzoo", *args, "--out", str(tmp_path / name), port=free_port(), restarts=2)
        with (tmp_path / f"{name}.out").open("w") as out, (tmp_path / f"{name}.err").open("w") as err:
            jobs[name] = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
    job = jobs["run"]
    killed, deadline = None, time.monotonic() + 240
    try:
        while job.poll() is None and killed is None and time.monotonic() < deadline:
            try:
                meta = json.loads((run / "last.json").read_text())
            except (OSError, ValueError):
                meta = {}
            if meta.get("epoch", 0) >= 1 and meta.get("batch", 0) >= 21:  # mid-epoch, 21 batches into epoch 2
                killed = rank_pid(job.pid, 1)
                if killed:
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.02)
        for j in jobs.values():
            j.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for j in jobs.values():
            if j.poll() is None:
                j.kill()
    assert jobs["straight"].returncode == 0, (tmp_path / "straight.err").read_text()[-3000:]
    stderr = (tmp_path / "run.err").read_text()
    assert killed, "rank 1 was not found to kill before the run ended"
    assert job.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lost = re.findall(r"cnnzoo: error: rank 0: .*", stderr)
    assert len(lost) <= 1 and all(  # torchrun's SIGTERM may come before gloo's error
        re.match(r"cnnzoo: error: rank 0: (lost contact with rank 1 \(.+\)|stopped by SIGTERM.*) at epoch \d+, "
                 rf"batch \d+ of 48; last checkpoint {re.escape(str(run))}/last\.safetensors \(epoch \d+, batch \d+\)", x)
        for x in lost
    ), lost  # fmt: skip
    assert "already holds a run" not in stderr
    assert stderr.count("torchrun restart 1: continuing") == 1, stderr[-3000:]
    assert epochs_logged(run) == [1, 2, 3]
    assert_close_weights(straight, run, 1e-4)


# --- several nodes -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_nodes_of_one_process_each_train_as_one_process(tmp_path):
    """README's multi-node command on one machine: two torchrun "nodes" (--nnodes=2, one process each) meet
    at a c10d rendezvous on 127.0.0.1 and write one run folder (rank 0's), equal to one process's run."""
    args = ["train", "lenet5", "--train-subset", "1024", "--batch-size", "64", "--epochs", "2", "--quiet",
            "--precision", "fp32", "--device", "cpu", "--no-tensorboard"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port, jobs = free_port(), []
    one = subprocess.Popen(
        [sys.executable, "-m", "cnnzoo", *args, "--out", str(tmp_path / "one")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               f"--node-rank={node}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
               "--rdzv-id=cnnzoo-test", "-m", "cnnzoo", *args, "--out", str(tmp_path / "two")]  # fmt: skip
        jobs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        results = [j.communicate(timeout=300) for j in (one, *jobs)]
    finally:
        for j in (one, *jobs):
            if j.poll() is None:
                j.kill()
    for j, (_, err) in zip((one, *jobs), results, strict=True):
        assert j.returncode == 0, err[-3000:]
    assert sum(out.count("test accuracy") for out, _ in results[1:]) == 1  # rank 0 reports for both
    assert epochs_logged(tmp_path / "two") == [1, 2]
    assert_close_weights(tmp_path / "one", tmp_path / "two", 1e-4)
    logs = [
        [json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("one", "two")
    ]
    assert [r["train_images"] for r in logs[1]] == [1024, 1024]  # both nodes' shards counted once each


def test_streamed_folders_shard_across_ranks_as_in_memory_ones(tmp_path):
    """A folder too large for memory streams through worker processes; under torchrun each rank's loader
    takes the same shard of every global batch as the in-memory loader's rank does."""
    import numpy as np
    from PIL import Image

    from cnnzoo.data.base import ArrayDataset
    from cnnzoo.data.folder import load_folder
    from cnnzoo.data.stream import StreamingLoader
    from cnnzoo.engine.distributed import DistEnv
    from cnnzoo.engine.setup import make_loaders

    rng = np.random.default_rng(0)
    for name in ("ant", "bee", "cat"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(11):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    streamed = load_folder(tmp_path / "images", max_memory_bytes=1, progress=False)
    held = load_folder(tmp_path / "images", progress=False)
    assert not isinstance(streamed.train, ArrayDataset) and isinstance(held.train, ArrayDataset)
    options = dict(batch_size=8, image_size=16, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, augment="flip",
                   device=torch.device("cpu"), seed=3)  # fmt: skip
    shards = {}
    for rank in (0, 1):
        env = DistEnv(rank, 2)
        s_train, _ = make_loaders(streamed, dist_env=env, **options)
        h_train, _ = make_loaders(held, dist_env=env, **options)
        assert isinstance(s_train, StreamingLoader) and s_train.batch_size == h_train.batch_size == 4
        for epoch in (0, 1):
            s_train.set_epoch(epoch)
            h_train.set_epoch(epoch)
            pairs = list(zip(s_train, h_train, strict=True))
            assert all(torch.equal(xs, xh) and torch.equal(ys, yh) for (xs, ys), (xh, yh) in pairs)
            shards[rank, epoch] = torch.cat([ys for (_, ys), _ in pairs])
    for epoch in (0, 1):  # the two shards make up the epoch: every image once
        assert len(shards[0, epoch]) + len(shards[1, epoch]) == len(streamed.train)


# --- the one line a rank prints --------------------------------------------------------------------------


def test_a_lost_peer_or_sigterm_is_one_line_naming_rank_and_checkpoint(tmp_path):
    from cnnzoo.engine.distributed import DistEnv, LostPeer, Stopped, lost_peer, peer_failure, stop_on_sigterm

    env = DistEnv(1, 2)
    gloo = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4242"
    )
    assert peer_failure(gloo, env) == "lost contact with rank 0 (connection closed)"
    assert peer_failure(gloo, DistEnv()) is None  # one process has no peer
    assert peer_failure(ValueError("Connection closed"), env) is None  # not a collective's error
    assert peer_failure(RuntimeError("shape mismatch"), env) is None  # a bug keeps its traceback
    assert (
        peer_failure(RuntimeError("gloo: timed out"), DistEnv(0, 4))
        == "lost contact with another rank (timed out)"
    )
    with pytest.raises(Stopped), stop_on_sigterm(env):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    assert peer_failure(Stopped(), env).startswith("stopped by SIGTERM")
    # the last checkpoint, read from the shared run folder
    run = tmp_path / "run"
    assert main(["train", *REQUEUE, "--epochs", "1", "--out", str(run)]) == 0
    error = lost_peer(peer_failure(gloo, env), env, "at epoch 2, batch 7 of 40", run)
    assert isinstance(error, LostPeer) and error.exit_status == 1
    assert str(error) == (
        f"rank 1: lost contact with rank 0 (connection closed) at epoch 2, batch 7 of 40; last checkpoint "
        f"{run}/last.safetensors (end of epoch 1)"
    )
    assert str(lost_peer("x", env, "while starting", tmp_path / "none")).endswith(
        f"no checkpoint in {tmp_path / 'none'} yet"
    )


@pytest.mark.slow
def test_nodes_that_do_not_share_the_run_folder_are_refused_before_training(tmp_path):
    """Without a shared filesystem a continued run would have rank 0 resume and the other node start over:
    both ranks stop before the first step, with one line saying why (README: Several nodes)."""
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir(), node1.mkdir()
    args = ["train", *REQUEUE, "--no-tensorboard", "--out", "run"]  # relative: each node's own folder
    assert main([*args[:-1], str(node0 / "run"), "--epochs", "1"]) == 0  # only node 0 holds a checkpoint
    port, jobs = free_port(), []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for rank, cwd in enumerate((node0, node1)):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
               "-m", "cnnzoo", *args, "--auto-resume"]  # fmt: skip
        jobs.append(
            subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        )
    try:
        results = [j.communicate(timeout=300) for j in jobs]
    finally:
        for j in jobs:
            if j.poll() is None:
                j.kill()
    for rank, (j, (out, err)) in enumerate(zip(jobs, results, strict=True)):
        # torchrun reports the failed job with its own traceback (ChildFailedError); none comes from cnnzoo
        frames = [x for x in err.splitlines() if x.strip().startswith('File "') and "cnnzoo" in x]
        assert j.returncode != 0 and not frames and "test accuracy" not in out, err[-3000:]
        lines = [x for x in err.splitlines() if x.startswith("cnnzoo: error: ")]
        assert lines == [
            f"cnnzoo: error: rank {rank}: the ranks would start from different points of the run (optimizer "
            f"steps 0 to 40; this rank: {40 if rank == 0 else 0}): they do not see the same run folder. "
            "Continuing a run under torchrun needs the run folder on a filesystem every node sees (README: "
            "Several nodes)"
        ], err[-3000:]
    assert epochs_logged(node0 / "run") == [1] and not (node1 / "run").exists()
