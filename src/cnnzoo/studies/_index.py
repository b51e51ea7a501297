"""Rewrite reports/README.md, the index of the studies, from each study's results.json:

    python -m cnnzoo.studies._index            # rewrite reports/README.md
    python -m cnnzoo.studies._index OTHER_DIR  # the same for another reports folder

The index itself is `_report_index`'s (re-exported here); this module is its command line.
"""

from __future__ import annotations

import sys

from ._registry import registered
from ._report_index import MARKER, refresh_index, write_index

__all__ = ["write_index", "refresh_index", "MARKER"]

if __name__ == "__main__":
    # Run as a script, the package is imported first, so every study is registered by now.
    print(f"written: {write_index(sys.argv[1] if len(sys.argv) > 1 else 'reports', registered())}")
