"""A run folder's log: metrics as JSON lines, the same per epoch as `summary.csv`, and PNG curves.

`metrics.jsonl` has every figure of an epoch; `summary.csv` has one row per epoch with the columns other
tools read (timm writes one of the same shape): epoch, train_loss, train_acc, test_loss, test_acc, lr and
seconds (wall time since the previous row, evaluation and saving included, so the column sums to the run's
time; an epoch without a test pass leaves its test cells empty).

A failed write (disk full, a folder made read-only) is one `CnnzooError` naming the file and the cause;
the curves, `summary.csv` and a truncated log are written atomically, so a failure leaves the previous file
whole.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

from .._io import atomic_write, describe_os_error
from ..artifacts.figure import label_axes, new_figure, save_figure
from ..errors import CnnzooError

__all__ = ["RunLog", "plot_curves", "smoothed_loss_floor", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.path = self.run_dir / "metrics.jsonl"
        self.summary = self.run_dir / "summary.csv"
        self._clock = time.perf_counter()  # the first row's seconds count from here

    def write(self, record: dict) -> None:
        if self.enabled:
            try:
                with self.path.open("a") as f:  # one line per epoch: appending never rewrites what is there
                    f.write(json.dumps(record) + "\n")
            except OSError as e:
                raise CnnzooError(f"cannot write {self.path}: {describe_os_error(e)}") from None
            now, since = time.perf_counter(), self._clock
            self._clock = now
            row = {k: record.get(k) for k in SUMMARY_COLUMNS} | {"seconds": round(now - since, 3)}
            rows = [r for r in self.summary_rows() if _epoch(r) < record.get("epoch", 0)]
            self._write_summary([*rows, row])

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

    def summary_rows(self) -> list[dict]:
        """summary.csv's rows (cells as text); for a run older than the file, rebuilt from metrics.jsonl
        (without seconds)."""
        if not self.summary.exists():
            return [{k: r.get(k) for k in SUMMARY_COLUMNS} for r in self.records()]
        with self.summary.open(newline="") as f:
            return [r for r in csv.DictReader(f) if _epoch(r) > 0]

    def truncate_after(self, epoch: int) -> None:
        """On resume, drop records of epochs the interrupted run logged past its checkpoint."""
        if self.enabled and self.path.exists():
            kept = [r for r in self.records() if r.get("epoch", 0) <= epoch]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))
            self._write_summary([r for r in self.summary_rows() if _epoch(r) <= epoch])

    def _write_summary(self, rows: list[dict]) -> None:
        """The whole file, atomically: a kill while writing leaves the previous one (a few hundred rows at
        most, so rewriting costs nothing)."""
        text = io.StringIO()
        writer = csv.DictWriter(text, SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)  # None (no test pass that epoch) is an empty cell
        atomic_write(self.summary, lambda tmp: Path(tmp).write_text(text.getvalue()))


def _epoch(row: dict) -> int:
    try:
        return int(row.get("epoch") or 0)
    except (TypeError, ValueError):  # a row edited by hand: not an epoch
        return 0


def smoothed_loss_floor(label_smoothing: float, num_classes: int) -> float:
    """The lowest cross-entropy a model can reach against smoothed targets (its prediction equal to the
    target distribution: the target's entropy). With label smoothing 0.1 over 10 classes it is 0.50, so a
    train loss measured with smoothing sits above a test loss measured without it."""
    if label_smoothing <= 0 or num_classes < 2:
        return 0.0
    hit = 1 - label_smoothing + label_smoothing / num_classes
    miss = label_smoothing / num_classes
    return -(hit * math.log(hit) + (num_classes - 1) * miss * math.log(miss))


def plot_curves(
    records: list[dict],
    run_dir: Path,
    *,
    name: str = "",
    label_smoothing: float = 0.0,
    num_classes: int = 0,
) -> list[Path]:
    """loss.png and accuracy.png (train and test per epoch); returns the files written.

    `name` ("lenet5 on mnist") heads both titles. The train figures are the mean over the epoch's batches
    (augmented, weights still moving), the test figures the end-of-epoch model on the test split; a train
    loss under label smoothing is said in the legend, with the floor smoothing puts under it."""
    if not records:
        return []
    epochs = [r["epoch"] for r in records]
    smoothed = label_smoothing > 0
    kinds = (
        ("loss", "loss", "cross-entropy loss (nats per image)", "loss per epoch"),
        ("acc", "accuracy", "accuracy (%)", "accuracy per epoch"),
    )
    written = []
    for key, stem, ylabel, what in kinds:
        fig, ax = new_figure(6.4, 4.2)
        for split in ("train", "test"):
            values = [r.get(f"{split}_{key}") for r in records]
            if any(v is not None for v in values):
                values = [float("nan") if v is None else v for v in values]  # epochs without a test pass
                if split == "train":
                    how = (
                        f"epoch mean, label smoothing {label_smoothing:g}"
                        if smoothed and key == "loss"
                        else "epoch mean"
                    )
                else:
                    how = "end of epoch, no smoothing" if smoothed and key == "loss" else "end of epoch"
                ax.plot(epochs, values, marker="o", label=f"{split} ({how})")
        floor = smoothed_loss_floor(label_smoothing, num_classes) if key == "loss" else 0.0
        if floor > 0:
            ax.axhline(
                floor,
                color="gray",
                ls=":",
                label=f"lowest train loss with smoothing {label_smoothing:g}: {floor:.2f}",
            )
        label_axes(ax, xlabel="epoch", ylabel=ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        title = f"{name}: {what}" if name else what.capitalize()
        written.append(save_figure(fig, Path(run_dir) / f"{stem}.png", title=title))
    return written
