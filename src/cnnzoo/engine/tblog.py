"""TensorBoard event files of a run, in RUN/tensorboard/ (`tensorboard --logdir runs` shows every run).

Written by rank 0 of a run that saves, when the optional `tensorboard` package is installed
(`pip install cnnzoo[tensorboard]`) and the config's `tensorboard` is on (the default; `--no-tensorboard`
turns it off), and by a study's fits, which save nothing else, in the folder their `RunContext.tensorboard_dir`
names (`studies/_common.py`: runs/studies/NAME/tensorboard/LABEL/). Tags:

    step/train_loss, step/lr   x = optimizer step, at each refresh of the loop's progress figures (every 20
                               steps and at an epoch's last): the mean loss of the steps since the previous
                               point, from the running sum the loop reads there anyway (no host sync added),
                               and the learning rate of that step
    epoch/...                  x = epoch: train_loss, train_acc, test_loss, test_acc, lr, images_per_s
    final/...                  test_acc and best_acc, with the hyper-parameters (the HParams dashboard)
    predictions                the first 16 test images, each titled "predicted (true)", red when wrong

Why a point every 20 steps rather than every step: the writer costs ~55 us an event on the development
machine (a protobuf, and a pure-Python CRC in its writer thread, which holds the interpreter), so two events
a step would add ~110 us of host time to every step, which a small model's GPU step, launched from the host,
cannot hide (LeNet-5's CPU step is ~13 ms: 1%); two events per refresh cost ~6 us a step.

A resumed run purges what the interrupted one logged past its checkpoint (`purge_step`): no doubled stretch.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .._io import describe_os_error, note
from ..errors import CnnzooError

__all__ = ["TensorBoardLog", "open_tensorboard", "run_events", "tensorboard_installed", "EPOCH_KEYS"]

EPOCH_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s")
PREDICTION_IMAGES = 16


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def open_tensorboard(
    run_dir: Path | None, enabled: bool, *, purge_step: int | None = None, log_dir: Path | None = None
) -> TensorBoardLog | None:
    """The run's event writer (in `log_dir`, else RUN/tensorboard), or None when `enabled` is off or the
    package is missing (then nothing is said: the option is on by default, and most users of a plain install
    never asked for it)."""
    if not enabled or not tensorboard_installed():
        return None
    try:
        return TensorBoardLog(
            Path(log_dir) if log_dir is not None else Path(run_dir) / "tensorboard", purge_step=purge_step
        )
    except ImportError as e:  # installed but broken (a protobuf it cannot use): the run goes on without it
        note(f"no TensorBoard events for this run: the tensorboard package does not import ({e})")
        return None


def run_events(ctx, cfg, *, purge_step: int) -> TensorBoardLog | None:
    """The event writer of a run (`RunContext.events_dir`: RUN/tensorboard, a study's folder, or none on
    ranks and runs that write nothing), when `cfg.tensorboard` and the installed package allow."""
    return open_tensorboard(
        ctx.run_dir,
        ctx.events_dir is not None and cfg.tensorboard,
        purge_step=purge_step,
        log_dir=ctx.events_dir,
    )


class TensorBoardLog:
    def __init__(self, log_dir: Path, *, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        with self._writing():
            # purge_step: TensorBoard drops the events at or after it that an earlier file of this folder holds
            self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        self.new_epoch()

    @contextmanager
    def _writing(self):
        """A failed write (full disk, read-only folder) is one line naming the folder, as the run log's."""
        try:
            yield
        except OSError as e:
            raise CnnzooError(f"cannot write {self.log_dir}: {describe_os_error(e)}") from None

    def new_epoch(self) -> None:
        """The loop's running sums restart at each epoch (and at a resumed epoch's first batch)."""
        self._sum, self._seen = 0.0, 0

    def steps(self, step: int, loss_sum: float, seen: int, lr: float) -> None:
        """A point at optimizer step `step`: the mean loss since the previous point, from the epoch's running
        `loss_sum` over `seen` images (already read on the host), and the step's learning rate."""
        with self._writing():
            if seen > self._seen:
                self.writer.add_scalar("step/train_loss", (loss_sum - self._sum) / (seen - self._seen), step)
            self.writer.add_scalar("step/lr", lr, step)
        self._sum, self._seen = loss_sum, seen

    def epoch(self, record: dict) -> None:
        """metrics.jsonl's figures of one epoch (those it has: the head-only path has no train accuracy)."""
        with self._writing():
            for key in EPOCH_KEYS:
                if isinstance(record.get(key), int | float):
                    self.writer.add_scalar(f"epoch/{key}", record[key], record["epoch"])

    def finish(self, hparams: dict, metrics: dict, step: int) -> None:
        """The hyper-parameters and the final figures (`metrics`, named final/...), for the HParams view.

        `add_hparams` writes them as its own file; run_name "." puts that file in this run's folder, so
        TensorBoard shows one run with its curves, not a second, timestamped one beside it."""
        values = {k: _hparam(v) for k, v in hparams.items()}
        with self._writing():
            self.writer.flush()
            self.writer.add_hparams(
                values, {f"final/{k}": v for k, v in metrics.items()}, run_name=".", global_step=step
            )

    def finish_run(self, result, test_loader, ctx, cfg, *, epochs: int, predictions: bool = True) -> None:
        """A finished run's last entries: `predictions` of `result.model` (unless off: a study's fits, whose
        metadata has no classes, and which would draw a figure per fit), then `finish` with the config's and
        the context's hyper-parameters and the final and best accuracy."""
        if predictions:
            self.predictions(result.model, test_loader, ctx.meta, epochs)
        hparams = {**cfg.to_dict(), **ctx.hparams}
        self.finish(hparams, {"test_acc": result.final_acc, "best_acc": result.best_acc}, epochs)

    @torch.no_grad()
    def predictions(self, model: nn.Module, test_loader, meta: dict, step: int) -> None:
        """A figure of the first test images with the model's predicted and true classes."""
        x, y = next(iter(test_loader))
        x, y = x[:PREDICTION_IMAGES], y[:PREDICTION_IMAGES]
        was_training = model.training
        model.eval()
        try:
            predicted = model(x).argmax(1)
        finally:
            model.train(was_training)
        mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
        images = (x.float().cpu() * std + mean).clamp(0, 1)  # (N, C, H, W) as the dataset's pixels
        figure = _prediction_figure(images, predicted.tolist(), y.tolist(), list(meta["classes"]))
        with self._writing():
            self.writer.add_figure("predictions", figure, step)  # closes the figure

    def close(self) -> None:
        with self._writing():
            self.writer.close()


def _hparam(value):
    """TensorBoard takes numbers and strings: a dict (model_kwargs) or tuple is shown as its JSON."""
    if isinstance(value, bool):  # else a number, 1 or 0
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, int | float | str):
        return value
    return json.dumps(value, default=str)


def _prediction_figure(images: torch.Tensor, predicted: list[int], true: list[int], classes: list[str]):
    """One picture of the images in rows of 8, each under its "predicted (true)" label (red when wrong).

    One axes holding a tiled canvas, not a subplot per image: 0.05 s to draw instead of 0.35 s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, c, h, w = images.shape
    columns, pad, label = 8, 2, max(10, h // 4)  # label: the band above each image its text sits in
    rows = -(-n // columns)
    canvas = torch.ones(c, rows * (label + h + pad), columns * (w + pad) + pad)  # white between images
    fig = plt.figure(figsize=(10.4, 10.4 * canvas.shape[1] / canvas.shape[2]), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    for i, (p, t) in enumerate(zip(predicted, true, strict=True)):
        row, column = divmod(i, columns)
        y, x = row * (label + h + pad) + label, pad + column * (w + pad)
        canvas[:, y : y + h, x : x + w] = images[i]
        text = f"{_short(classes, p)} ({_short(classes, t)})"
        ax.text(
            x + w / 2, y - 1, text, ha="center", va="bottom", fontsize=7, color="black" if p == t else "red"
        )
    shown = canvas[0] if c == 1 else canvas.permute(1, 2, 0)  # (H, W) or (H, W, 3)
    ax.imshow(shown.numpy(), cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.axis("off")
    return fig


def _short(classes: list[str], index: int) -> str:
    name = classes[index] if 0 <= index < len(classes) else str(index)
    return textwrap.shorten(str(name), 12, placeholder="…")
