"""Files written so that nothing already there is lost, and the one channel for notes to the user.

`write_files` writes every file of a unit completely to a temporary beside it (with the user's umask,
flushed to disk) before renaming any into place, so a full disk or a read-only folder leaves what was
there untouched; checkpoints, run logs, reports, caches and export folders all write through it.
`note` is the line on stderr that says what cnnzoo did (shown even with --quiet). `output_folder` and
`output_file` refuse an unusable `--out` in one line before any work starts.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .errors import CnnzooError

__all__ = [
    "atomic_write",
    "write_files",
    "write_json",
    "describe_os_error",
    "note",
    "output_folder",
    "output_file",
]


def _os_cause(e: BaseException) -> str | None:
    """The strerror of the OSError behind `e`, also when a library wrapped it (torch.save raises a
    RuntimeError whose context is the OSError; safetensors writes "os error 28" into its message)."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    match = re.search(r"os error (\d+)", str(e))
    return os.strerror(int(match.group(1))) if match else None


def describe_os_error(e: BaseException) -> str:
    """The cause of a failed file operation in a few words ("No space left on device")."""
    cause = _os_cause(e)
    if cause is not None:
        return cause
    text = str(e).strip().splitlines()[0] if str(e).strip() else "no detail"
    return f"{type(e).__name__}: {text}"


def _temp_beside(path: Path) -> str:
    """A new hidden file next to `path`, created with the user's umask (mkstemp's would be 0600); for a
    device or fifo (whose folder, /dev, may not be writable) in the temporary folder."""
    folder = Path(tempfile.gettempdir()) if _is_special(path) else path.parent
    while True:
        tmp = folder / f".{path.name}.{secrets.token_hex(4)}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return str(tmp)
        except FileExistsError:
            continue


def _umask() -> int:
    """The process's umask (read without changing it where /proc tells; else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: str | Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return  # some platforms cannot open a folder; the data is written all the same
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cannot_write(path: Path, e: BaseException) -> CnnzooError:
    why = _os_cause(e)
    if why is None:  # a library error with no OSError inside: a full disk is the usual reason
        try:
            full = shutil.disk_usage(path.parent).free < 1 << 20
        except OSError:
            full = False
        why = os.strerror(errno.ENOSPC) if full else describe_os_error(e)
    kept = f"; the previous {path.name} is intact" if path.exists() else ""
    return CnnzooError(f"cannot write {path}: {why}{kept}")


def write_files(
    files: list[tuple[Path, Callable[[str], None]]], before_replace: Callable[[], None] | None = None
) -> None:
    """Write every `(path, write)` pair as `write(temporary)`, then rename all into place together.

    Nothing is renamed until every file is complete, so a failed write leaves what was there untouched;
    `before_replace` runs between the two phases (keeping the previous checkpoint).
    """
    temps: list[tuple[str, Path]] = []
    try:
        for path, write in files:
            path = Path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = _temp_beside(path)
                temps.append((tmp, path))
                write(tmp)
                os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) make their file 0600
                _fsync(tmp)
            except CnnzooError:
                raise
            except Exception as e:  # OSError, or a library's wrapper of one
                raise _cannot_write(path, e) from None
        if before_replace is not None:
            before_replace()
        for tmp, path in temps:
            try:
                if _is_special(path):  # /dev/null, a fifo: its bytes go into it; the file is never replaced
                    with open(tmp, "rb") as src, open(path, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                else:
                    os.replace(tmp, path)
            except OSError as e:
                raise _cannot_write(path, e) from None
        for folder in {path.parent for _, path in temps}:
            _fsync(folder, directory=True)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _is_special(path: Path) -> bool:
    """A device, fifo or socket (as root, renaming onto /dev/null would replace the device itself)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` then rename the temporary file onto `path` (same folder, same disk)."""
    write_files([(Path(path), write)])


def read_json_object(path: Path, what: str) -> dict:
    """A JSON file holding one object (a config), or one line naming `what` is wrong with it."""
    try:
        obj = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CnnzooError(f"{path}: corrupt {what} ({e})") from None
    except OSError as e:
        raise CnnzooError(f"cannot read {path}: {describe_os_error(e)}") from None
    if not isinstance(obj, dict):
        raise CnnzooError(f"{path}: corrupt {what} (a JSON object expected)")
    return obj


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def progress(
    iterable: Iterable, *, total: int, desc: str, unit: str, enabled: bool = True, file=None
) -> Iterator:
    """`iterable` with a progress bar on a terminal. Where the stream is a file or a pipe (`2> train.log`,
    `| tee`), a bar's carriage-return frames would pile up in it: there, one line when the loop is done."""
    stream = file if file is not None else sys.stderr
    if not enabled:
        yield from iterable
        return
    if getattr(stream, "isatty", lambda: False)():
        yield from tqdm(iterable, total=total, desc=desc, unit=unit, file=stream)
        return
    start, n = time.perf_counter(), 0
    for item in iterable:
        n += 1
        yield item
    stream.write(f"{desc}: {n}/{total} {unit}s in {time.perf_counter() - start:.1f} s\n")
    stream.flush()


def note(message: str) -> None:
    """A line on stderr about what cnnzoo did to a run folder (shown even with --quiet)."""
    print(f"cnnzoo: {message}", file=sys.stderr, flush=True)


def output_folder(path: str | Path, flag: str) -> Path:
    """A folder a command will write into: created when missing; a file, or a folder that cannot be
    written, is refused in one line before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CnnzooError(f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnnzooError(f"cannot create {path} ({flag}): {describe_os_error(e)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CnnzooError(f"cannot write in {path} ({flag}): {os.strerror(13)} (the folder is read-only)")
    return path


def output_file(path: str | Path, flag: str) -> Path:
    """A file a command will write: its folder is created when missing; a folder in its place, or a
    folder that cannot be written, is refused in one line before any work."""
    path = Path(path)
    if path.is_dir():
        raise CnnzooError(f"{flag} {path} is a folder: name a file")
    output_folder(path.parent if str(path.parent) else Path("."), flag)
    return path
