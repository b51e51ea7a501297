"""Multi-process training through torchrun: one rank per device, DistributedDataParallel.

`torchrun --nproc_per_node=N -m cnnzoo train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; everything else
in cnnzoo stays single-process unless these are present.

Elastic runs (`torchrun --max-restarts=K`): when a rank dies, torchrun stops the others and starts them all
again with `TORCHELASTIC_RESTART_COUNT` one higher; `train` then continues the run folder from its last
checkpoint (`restart_count`). A rank that loses its peers says so in one line (`LostPeer`, built by
`lost_peer`) instead of gloo's traceback, and exits non-zero so that torchrun restarts it.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ..artifacts.checkpoint import read_meta
from ..errors import CnnzooError

__all__ = [
    "DistEnv",
    "environ_dist_env",
    "setup_distributed",
    "cleanup_distributed",
    "restart_count",
    "check_same_start",
    "LostPeer",
    "Stopped",
    "peer_failure",
    "lost_peer",
    "stop_on_sigterm",
]


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def restart_count() -> int:
    """How many times torchrun restarted this job's workers (0: the first start, or no torchrun)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def environ_dist_env() -> DistEnv:
    """This process's place among torchrun's ranks (one process without torchrun); joins nothing."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def setup_distributed(device: torch.device) -> DistEnv:
    """Join the process group torchrun prepared (gloo on CPU, NCCL on CUDA); a no-op without torchrun."""
    env = environ_dist_env()
    world_size = env.world_size
    if not env.enabled:
        return env
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # The rendezvous store of torchrun's agent outlives a restart, with the previous attempt's keys:
            # restarted ranks could read a dead rank's address and fail to connect (pytorch issue #135712,
            # seen here in 2 restarts of 3). Each attempt gets keys of its own.
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
            store = dist.PrefixStore(f"cnnzoo/attempt-{restart_count()}", store)
            dist.init_process_group(backend, store=store, rank=env.rank, world_size=world_size)
        else:
            dist.init_process_group(backend)
    return env


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def check_same_start(step: int, dist_env: DistEnv, device: torch.device) -> None:
    """Refuse, before the first step, ranks that would start from different points of the run: each reads
    the checkpoint from the run folder itself, so a folder that is not on a filesystem every node sees
    would have rank 0 continue a run that the others start over (a hang, or silently different models)."""
    if not dist_env.enabled:
        return
    t = torch.tensor([step, -step], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # one call: the highest step and (negated) the lowest
    high, low = int(t[0]), -int(t[1])
    if high != low:
        raise CnnzooError(
            f"rank {dist_env.rank}: the ranks would start from different points of the run (optimizer steps "
            f"{low} to {high}; this rank: {step}): they do not see the same run folder. Continuing a run under "
            "torchrun needs the run folder on a filesystem every node sees (README: Several nodes)"
        )


# --- a rank that loses its peers ------------------------------------------------------------------------


class LostPeer(CnnzooError):
    """This rank cannot go on: a peer died (or torchrun stopped this rank). Exit status 1, not 2: the
    input was fine, and any non-zero status lets torchrun restart the job."""

    exit_status = 1


class Stopped(BaseException):
    """SIGTERM, as torchrun stops the surviving ranks when one failed (a BaseException: nothing in the
    training code may swallow it)."""


# what gloo, NCCL and the c10d store say when the other end went away (gloo raises a bare RuntimeError)
_MARKERS = {
    "connection reset": "connection reset",
    "connection closed": "connection closed",
    "broken pipe": "broken pipe",
    "connection refused": "connection refused",
    "timed out": "timed out",
    "timeout": "timed out",
    "nccl": "NCCL error",
    "gloo": "gloo error",
}


def peer_failure(error: BaseException, dist_env: DistEnv) -> str | None:
    """What happened, in a few words, when `error` means this rank lost its peers; None otherwise."""
    if isinstance(error, Stopped):
        return "stopped by SIGTERM, as torchrun stops every rank when one fails"
    if not dist_env.enabled or not isinstance(error, (RuntimeError, dist.DistError)):
        return None
    text = str(error).lower()
    for marker, words in _MARKERS.items():
        if marker in text:
            return f"lost contact with {_peer(dist_env)} ({words})"
    if isinstance(error, dist.DistError):
        return f"lost contact with {_peer(dist_env)} ({type(error).__name__})"
    return None


def _peer(dist_env: DistEnv) -> str:
    return f"rank {1 - dist_env.rank}" if dist_env.world_size == 2 else "another rank"


def lost_peer(what: str, dist_env: DistEnv, where: str, run_dir: Path | None) -> LostPeer:
    """The one line a rank prints when it cannot go on: which rank, what happened, where, the last checkpoint."""
    return LostPeer(f"rank {dist_env.rank}: {what} {where}; {_last_checkpoint(run_dir)}")


def _last_checkpoint(run_dir: Path | None) -> str:
    if run_dir is None:
        return "the run saves nothing: it starts over"
    last = Path(run_dir) / "last.safetensors"
    try:
        meta = read_meta(last)
    except CnnzooError:  # none yet, or the run folder is on another node's disk
        return f"no checkpoint in {run_dir} yet"
    epoch, batch = int(meta.get("epoch", 0)), int(meta.get("batch") or 0)
    at = f"epoch {epoch + 1}, batch {batch}" if batch else f"end of epoch {epoch}"
    return f"last checkpoint {last} ({at})"


@contextmanager
def stop_on_sigterm(dist_env: DistEnv):
    """Under torchrun, SIGTERM raises `Stopped` (so the rank says where it stopped in one line); the
    previous handler is restored after. A no-op in one process or off the main thread."""
    if not dist_env.enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Stopped()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
