"""Where downloaded and generated datasets are kept between runs."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """Root of the cache: $CNNZOO_CACHE, else $XDG_CACHE_HOME/cnnzoo, else ~/.cache/cnnzoo."""
    if os.environ.get("CNNZOO_CACHE"):
        return Path(os.environ["CNNZOO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cnnzoo"
