"""Moved: the checkpoint format is `cnnzoo.artifacts.checkpoint` (re-exported here until callers move)."""

from .._io import atomic_write, describe_os_error, note, write_files  # noqa: F401
from ..artifacts.checkpoint import *  # noqa: F403
from ..artifacts.checkpoint import (  # noqa: F401
    PREVIOUS,
    checkpoint_files,
    read_meta,
    restore_previous,
    stale_temporaries,
    usable_checkpoint,
)
from ..models._weights import describe_load_error, load_state_dict_checked, read_weights  # noqa: F401
