"""A run folder's log: the resolved config, metrics as JSON lines, and PNG curves.

A failed write (disk full, a folder made read-only) is one `CnnzooError` naming the file and the cause;
the curves and a truncated log are written atomically, so a failure leaves the previous file whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from .._io import atomic_write, describe_os_error
from ..errors import CnnzooError

__all__ = ["RunLog", "plot_curves"]


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.path = self.run_dir / "metrics.jsonl"

    def write(self, record: dict) -> None:
        if self.enabled:
            try:
                with self.path.open("a") as f:  # one line per epoch: appending never rewrites what is there
                    f.write(json.dumps(record) + "\n")
            except OSError as e:
                raise CnnzooError(f"cannot write {self.path}: {describe_os_error(e)}") from None

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a kill or a full disk: not a record
                continue
        return [r for r in records if isinstance(r, dict)]

    def truncate_after(self, epoch: int) -> None:
        """On resume, drop records of epochs the interrupted run logged past its checkpoint."""
        if self.enabled and self.path.exists():
            kept = [r for r in self.records() if r.get("epoch", 0) <= epoch]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))


def plot_curves(records: list[dict], run_dir: Path) -> list[Path]:
    """loss.png and accuracy.png (train and test per epoch); returns the files written."""
    if not records:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    written = []
    for key, ylabel in (("loss", "loss"), ("acc", "accuracy (%)")):
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        for split in ("train", "test"):
            values = [r.get(f"{split}_{key}") for r in records]
            if any(v is not None for v in values):
                values = [float("nan") if v is None else v for v in values]  # epochs without a test pass
                ax.plot(epochs, values, marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = Path(run_dir) / f"{'loss' if key == 'loss' else 'accuracy'}.png"
        try:
            atomic_write(out, lambda tmp, fig=fig: fig.savefig(tmp, format="png"))
        finally:
            plt.close(fig)
        written.append(out)
    return written
