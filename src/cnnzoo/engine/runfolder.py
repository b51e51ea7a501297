"""The rules of a run folder: never overwritten unasked, written by one process at a time, resumed as recorded.

1. A new run refuses a folder that already holds a run (metrics or a checkpoint) unless `overwrite`; a
   folder holding only the config.json of a run that stopped before training is reused, saying so; a path
   that is a file, or a folder that cannot be written, is refused before any work.
2. While a process writes a run folder it holds an exclusive `flock` on `.cnnzoo.lock` inside it (released
   by the kernel when the process ends, even by kill -9); a second process is refused with the holder's pid
   and host. Under torchrun only rank 0 writes, so only rank 0 locks.
3. `--resume` keeps the recorded configuration (`resume.py`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .._io import describe_os_error, note, output_file, output_folder  # noqa: F401  (re-exported until callers move)
from ..artifacts.checkpoint import PREVIOUS, read_meta, stale_temporaries
from ..errors import CnnzooError

__all__ = ["RunLock", "new_run", "holds_trained_run", "describe_run"]

LOCK_NAME = ".cnnzoo.lock"
RUN_FILES = ("config.json", "metrics.jsonl", "loss.png", "accuracy.png")
CHECKPOINT_TAGS = ("last", "best", "last" + PREVIOUS, "best" + PREVIOUS)
CHECKPOINT_SUFFIXES = (".safetensors", ".json", ".state.pt")


_HELD: set[int] = set()  # descriptors of the locks this process holds


def count(n: int, noun: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _drop_locks_in_child() -> None:
    """A forked child (a DataLoader worker) closes its copies of the lock descriptors: a flock lasts while
    any copy is open, so a worker that outlives the run would otherwise keep the folder locked."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_locks_in_child)


class RunLock:
    """An exclusive lock on a run folder while this process writes it (a context manager)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): the folder is written unlocked
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise CnnzooError(
                f"cannot write in the run folder {self.run_dir}: {describe_os_error(e)}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "pid unknown"
            os.close(fd)
            raise CnnzooError(
                f"{self.run_dir} is being written by another cnnzoo process ({holder}): wait for it to "
                "finish, or write into another folder"
            ) from None
        except OSError as e:  # a filesystem without locks: carry on, saying so
            os.close(fd)
            note(f"cannot lock {self.path} ({describe_os_error(e)}): writing the run folder unlocked")
            return self
        os.ftruncate(fd, 0)
        os.write(
            fd,
            f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
        )
        self.fd = fd
        _HELD.add(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            _HELD.discard(self.fd)
            os.close(self.fd)  # closing releases the flock; the file stays (removing it would race)
            self.fd = None


def check_writable(run_dir: Path) -> None:
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise CnnzooError(
            f"cannot write in the run folder {run_dir}: {os.strerror(13)} (the folder is read-only)"
        )


def clean_temporaries(run_dir: Path) -> None:
    stale = stale_temporaries(run_dir)
    for p in stale:
        p.unlink()
    if stale:
        note(
            f"removed {len(stale)} half-written file(s) an interrupted save left in {run_dir}: "
            + ", ".join(p.name for p in stale)
        )


def _run_files(run_dir: Path) -> list[Path]:
    names = [*RUN_FILES, *(tag + suffix for tag in CHECKPOINT_TAGS for suffix in CHECKPOINT_SUFFIXES)]
    return [run_dir / n for n in names if (run_dir / n).exists()]


def holds_trained_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a run that trained (metrics or a checkpoint), not only a configuration."""
    return any(p.name != "config.json" for p in _run_files(Path(run_dir)))


def describe_run(run_dir: Path) -> str:
    """A few words on the run a folder holds: "lenet5 on mnist, 2 of 8 epochs done"."""
    words = []
    try:
        config = json.loads((run_dir / "config.json").read_text())
        finetune = config.get("finetune") if isinstance(config, dict) else None
        config = config.get("train", config) if isinstance(config, dict) else {}
        if isinstance(finetune, dict):  # its train.model is a placeholder: the source names the model
            words.append(f"a fine-tuning of {finetune.get('source', '?')} on {config.get('data', '?')}")
        else:
            words.append(f"{config.get('model', '?')} on {config.get('data', '?')}")
        total = config.get("epochs")
    except (OSError, ValueError, AttributeError):
        total = None
    for weights in (run_dir / "last.safetensors", run_dir / f"last{PREVIOUS}.safetensors"):
        try:
            done = read_meta(weights).get("epoch")
        except CnnzooError:
            continue
        words.append(f"{done} of {total} epochs done" if total else f"{done} epochs done")
        break
    else:
        words.append("no checkpoint yet")
    return ", ".join(words)


class new_run:  # noqa: N801 (used as a context manager, like open)
    """Prepare a fresh run folder and hold its lock: refuse a file or an existing run (unless `overwrite`,
    which removes the earlier run's files and says so), clean a crash's leftovers, write config.json.

    `config` writes the run's configuration (`write_config` for training; fine-tuning has its own). A run
    refused for bad input (a `CnnzooError`) before it trained leaves nothing behind: what this made is
    removed. A kill or Ctrl-C leaves config.json, so that `--resume` starts the run over.
    """

    def __init__(self, run_dir: Path, config, *, overwrite: bool = False, flag: str = "--out"):
        self.run_dir, self.config, self.overwrite, self.flag = Path(run_dir), config, overwrite, flag
        self.lock = RunLock(self.run_dir)
        self.made: Path | None = None  # the outermost folder this created

    def __enter__(self) -> Path:
        run_dir = self.run_dir
        if run_dir.exists() and not run_dir.is_dir():
            raise CnnzooError(f"{self.flag} {run_dir} is a file, not a folder: name a folder for the run")
        missing = [p for p in [run_dir, *run_dir.parents] if not p.exists()]
        self.made = missing[-1] if missing else None
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CnnzooError(f"cannot create the run folder {run_dir}: {describe_os_error(e)}") from None
        self.lock.__enter__()
        try:
            check_writable(run_dir)
            existing = _run_files(run_dir)
            trained = [p for p in existing if p.name != "config.json"]
            if trained and not self.overwrite:
                recorded = read_json(run_dir / "config.json")
                tuned = isinstance(recorded, dict) and isinstance(recorded.get("finetune"), dict)
                resume = f"continue it with `cnnzoo {'finetune' if tuned else 'train'} --resume {run_dir}`, "
                raise CnnzooError(
                    f"{run_dir} already holds a run ({describe_run(run_dir)}): {resume}replace it with "
                    f"--overwrite, or choose another {self.flag}"
                )
            what = describe_run(run_dir) if existing else ""
            for p in existing:
                p.unlink()
            if trained:
                note(f"--overwrite: removed the earlier run in {run_dir} ({what})")
            elif existing:  # a run stopped before it trained (a typo in --data): nothing to lose
                note(f"replacing the configuration of a run that never trained in {run_dir} ({what})")
            clean_temporaries(run_dir)
            self.config(run_dir)
        except BaseException as e:
            self.__exit__(type(e), e, None)
            raise
        return run_dir

    def __exit__(self, exc_type=None, exc=None, tb=None) -> None:
        try:
            if exc_type is not None and issubclass(exc_type, CnnzooError):
                self._undo()
        finally:
            self.lock.__exit__()

    def _undo(self) -> None:
        """Remove the config, lock and folders this made, unless the run has trained meanwhile."""
        run_dir = self.run_dir
        if [p for p in _run_files(run_dir) if p.name != "config.json"]:
            return
        for name in ("config.json", LOCK_NAME):
            try:
                (run_dir / name).unlink()
            except OSError:
                pass
        if self.made is not None:
            for folder in [run_dir, *run_dir.parents]:
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    break
                if folder == self.made:
                    break


def read_json(path: Path):
    """A JSON file's content; None when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # load_config reports it properly
