"""What every study shares: how a run starts and ends (`start_study`, `StudyRun.finish`, `write_readme`),
the machine it ran on, short fits without checkpoints, measured receptive fields, mean and spread,
plots and the results.json round trip (the reports' Markdown is `_md`'s).

A study's fits keep no checkpoints, but write TensorBoard events (when the tensorboard package is installed)
into the study's log folder, never into the report's: `study_log_dir` (runs/studies/NAME for the default
report folder, OUT/.work for another --out), one sub-folder per fit under its tensorboard/ (`StudyEvents`).
They are a side output: results.json and the report are the same bytes with or without them, and
re-rendering a report (`--report-only`) writes none.

Receptive fields two ways, so a study can show they agree:
  computed   `computed_rf`: the op tracer of `cnnzoo.summary` follows kernel, stride and dilation of
             every op (rf_out = rf_in + d (k - 1) jump_in); no forward value is looked at.
  measured   `measured_rf`: the gradient of one output unit (the centre of the map, summed over its
             channels) with respect to the input; the input pixels it depends on are the ones whose
             gradient is not zero. With ReLUs a path can be switched off for one input, so the support
             is the union over a few random inputs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.base import ArrayDataset, Splits
from ..data.loader import InMemoryLoader
from ..engine.config import TrainConfig
from ..engine.evaluate import evaluate_model
from ..engine.loop import fit
from ..engine.setup import RunContext, run_loaders
from ..engine.tblog import tensorboard_installed
from ..errors import CnnzooError, unknown_name
from ..runtime import EVAL_BATCH, resolve_device
from ..summary.trace import WHOLE_INPUT, Field, OpTracer
from ._progress import StudyProgress
from ._registry import run_folder

__all__ = [
    "StudyRun",
    "start_study",
    "study_runner",
    "study_log_dir",
    "StudyEvents",
    "write_readme",
    "machine",
    "mean_std",
    "pyplot",
    "save_figure",
    "save_results",
    "load_results",
    "provenance_lines",
    "Fit",
    "fit_quiet",
    "accuracy_on",
    "subset",
    "subset_index",
    "pm",
    "new_results",
    "train_config",
    "computed_rf",
    "measured_rf",
    "images_per_second",
    "Plateau",
    "PLATEAU",
    "BUDGET_BOUND",
    "ONE_SEED",
    "spread_verdict",
    "budget_verdict",
    "rerun_hint",
    "loss_figure",
]


# --- where and how a study ran ----------------------------------------------------------------------


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def machine() -> dict:
    """The CPU (lscpu's model name), its cores, the threads torch uses and the process's niceness."""
    cpu = _lscpu()
    return {
        "cpu": cpu.get("Model name") or platform.processor() or "unknown",
        "cores": int(cpu.get("CPU(s)", os.cpu_count() or 0)),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "nice": os.nice(0) if hasattr(os, "nice") else 0,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def command(name: str, preset: str, seeds: int | None, device: str = "auto") -> str:
    flags = {"quick": " --quick", "full": ""}.get(preset, f" --preset {preset}")
    flags += f" --device {device}" if device not in ("auto", "cpu") else ""
    return f"cnnzoo study {name}{flags}" + (f" --seeds {seeds}" if seeds else "")


def provenance_lines(results: dict) -> list[str]:
    """The report's first paragraph: exact command, machine, seeds and wall time."""
    m = results["machine"]
    env = []
    if m.get("omp_num_threads"):
        env.append(f"OMP_NUM_THREADS={m['omp_num_threads']}")
    if m.get("nice"):
        env.append(f"under `nice -n {m['nice']}`")
    seeds = results.get("seeds")
    return [
        f"Command: `{results['command']}`"
        + (f" ({', '.join(env)})" if env else "")
        + f"; preset **{results['preset']}**"
        + (f", {seeds} seed(s) (0..{seeds - 1})" if seeds else "")
        + f"; wall time **{results['seconds'] / 60:.1f} min**.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), torch {m['torch']}, "
        f"Python {m['python']}. The machine is shared with other jobs, so speeds are noisy and wall times "
        "are upper bounds.",
        "",
    ]


# --- numbers and plots --------------------------------------------------------------------------------


def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values, digits: int = 2) -> str:
    """'mean ± std' of a list of numbers, or the number alone for one value."""
    m, s = mean_std(values)
    return f"{m:.{digits}f}" if len(list(values)) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


ONE_SEED = "one seed: no spread; run with --seeds 3"


def spread_verdict(
    diffs: list[tuple[float, float]], seeds: int, *, want_positive: bool = True
) -> tuple[str, str]:
    """(verdict, note) for differences each with its spread (std over seeds): Held when every one has the
    wanted sign beyond its spread, Did not hold when one has the other sign beyond it, Inconclusive otherwise.
    One seed has no spread, so it never yields Held or Did not hold (note: `ONE_SEED`)."""
    if seeds < 2:
        return "Inconclusive", ONE_SEED
    sign = 1 if want_positive else -1
    if all(sign * d > s for d, s in diffs):
        return "Held", ""
    if any(sign * d < -s for d, s in diffs):
        return "Did not hold", ""
    return "Inconclusive", "the difference is within the spread"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay the figure out, write it at 100 dpi and close it (open figures keep their memory)."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def save_results(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))


def load_results(out: str | Path, name: str) -> dict:
    path = Path(out) / "results.json"
    if not path.exists():
        raise CnnzooError(f"no study results in {path}: run `cnnzoo study {name}` first")
    return json.loads(path.read_text())


def new_results(
    name: str, preset: str, seeds: int | None, seeds_flag: int | None = None, device: str = "auto"
) -> dict:
    """The record every study starts from: `seeds` used, and the command (`seeds_flag`: --seeds as given)."""
    return {
        "study": name,
        "preset": preset,
        "seeds": seeds,
        "command": command(name, preset, seeds_flag, device),
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_readme(out: Path, lines: list[str]) -> Path:
    """`out`/README.md from the report's lines. The index above it (reports/README.md) is refreshed by the
    registry's study after its run or report returns (`cnnzoo.studies.get_study`)."""
    path = Path(out) / "README.md"
    path.write_text("\n".join(lines))
    return path


# --- how a run starts and ends -----------------------------------------------------------------------


@dataclass
class StudyRun:
    """One run of a study: its preset, the seeds it trains (None where nothing is trained) and the results
    record it fills, with the wall clock started."""

    preset: Any  # the study's own Preset dataclass
    seeds: int | None
    results: dict
    start: float = field(default_factory=time.perf_counter)

    def finish(self, out: Path, write_report: Callable[[dict, Path], Path]) -> Path:
        """Wall time and results.json, then the report rendered from them (as `--report-only` renders it)."""
        self.results["seconds"] = time.perf_counter() - self.start
        save_results(Path(out), self.results)
        return write_report(self.results, Path(out))


def start_study(
    name: str,
    presets: dict[str, Any],
    *,
    preset: str | None,
    quick: bool,
    seeds: int | None = None,
    device: str = "auto",
) -> StudyRun:
    """The preset (`preset` by name, else "quick" or "full"), the seeds (--seeds, else the preset's; a preset
    without a `seeds` field trains nothing and takes none) and the record every study starts from."""
    preset_name = preset or ("quick" if quick else "full")
    if preset_name not in presets:
        raise unknown_name("preset", preset_name, presets, f"{name}'s presets: {', '.join(presets)}")
    p = presets[preset_name]
    trains = hasattr(p, "seeds")
    used = (seeds or p.seeds) if trains else None
    results = new_results(name, preset_name, used, seeds if trains else None, device)
    results["preset_config"] = asdict(p)
    return StudyRun(p, used, results)


def study_log_dir(name: str, out: str | Path, default_out: str) -> Path:
    """A study's log folder (its fits' TensorBoard events): runs/studies/NAME for the default report folder
    (reports/ is committed, runs/ is not), OUT/.work for another OUT (as the transfer study's work), so
    a study run into a temporary folder writes nothing else."""
    return Path("runs/studies") / name if Path(out) == Path(default_out) else Path(out) / ".work"


@dataclass
class StudyEvents:
    """Where the fits of a running study write TensorBoard events: `root`/LABEL/, one folder per fit (a
    repeated label gets -2, -3...); `hparams` (study, preset, label) join each fit's configuration."""

    root: Path
    hparams: dict
    labels: list[str] = field(default_factory=list)  # the folders written, in order

    def folder(self, label: str) -> tuple[Path, str]:
        """A fresh sub-folder name for `label` ('/' and ':' made '_') and the label as recorded."""
        base = label.replace("/", "_").replace(":", "_")
        label, n = base, 1
        while label in self.labels:
            n += 1
            label = f"{base}-{n}"
        return self.root / label, label


# the events and progress of the study being measured (set by `study_runner` around `measure`, read by
# `fit_quiet`): the studies' helpers that fit networks need not carry them through every signature
_EVENTS: ContextVar[StudyEvents | None] = ContextVar("study_events", default=None)
_PROGRESS: ContextVar[StudyProgress | None] = ContextVar("study_progress", default=None)


def _progress_after(name: str, out: Path, preset: str) -> StudyProgress:
    """Progress for a run into `out`, estimated from the last run of `preset` there (its results.json)."""
    try:
        last = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        last = {}
    if not isinstance(last, dict) or last.get("preset") != preset:
        last = {}
    return StudyProgress(name, expected_fits=last.get("fits"), expected_seconds=last.get("seconds"))


def study_runner(
    name: str,
    presets: dict[str, Any],
    measure: Callable[[StudyRun, Path, str], None],
    write_report: Callable[[dict, Path], Path],
    *,
    default_out: str,
) -> Callable[..., Path]:
    """A study's `run(out, *, quick, seeds, device, preset, log_dir)` for the registry and the CLI: the
    preset and seeds chosen (`start_study`), the report folder made (without `out`: `run_folder`, so only
    the default run writes the committed `default_out`), `measure(run, out, device)` filling
    `run.results` (its fits' TensorBoard events in `log_dir`/tensorboard/, default `study_log_dir`), then
    results.json and the report written (`StudyRun.finish`), and one line saying where the events are."""

    def run_study(
        out: str | Path | None = None,
        *,
        quick: bool = False,
        seeds: int | None = None,
        device: str = "auto",
        preset: str | None = None,
        log_dir: str | Path | None = None,
    ) -> Path:
        run = start_study(name, presets, preset=preset, quick=quick, seeds=seeds, device=device)
        out = Path(out) if out is not None else run_folder(name, default_out, run.results["preset"], seeds)
        out.mkdir(parents=True, exist_ok=True)
        log_dir = Path(log_dir) if log_dir is not None else study_log_dir(name, out, default_out)
        events = StudyEvents(log_dir / "tensorboard", {"study": name, "preset": run.results["preset"]})
        token = _EVENTS.set(events if tensorboard_installed() else None)
        progress = _progress_after(name, out, run.results["preset"])
        progress_token = _PROGRESS.set(progress)
        try:
            with progress:
                measure(run, out, device)
        finally:
            _EVENTS.reset(token)
            _PROGRESS.reset(progress_token)
        if progress.fit_seconds:
            run.results["fits"] = len(progress.fit_seconds)  # the next run's estimate of the time left
        path = run.finish(out, write_report)
        if events.labels:
            n, root = len(events.labels), events.root
            print(f"TensorBoard events of {n} fit(s) in {root}: tensorboard --logdir {root}")
        return path

    run_study.__name__ = run_study.__qualname__ = f"run_{name.replace('-', '_')}_study"
    run_study.__doc__ = (
        f"Run the {name} study into `out` (default {default_out} for the full preset, else runs/studies/"
        f"{name}/PRESET); {measure.__doc__ or ''}"
    )
    return run_study


# --- short fits, nothing written to disk ------------------------------------------------------------


def subset_index(total: int, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of `n` of `total` items drawn at random (seeded); all of them when n is 0 or not smaller."""
    if not n or n >= total:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=gen)[:n].sort().values


def subset(data: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    """`n` images drawn at random (seeded); all of them when n is 0 or not smaller."""
    return data.subset(subset_index(len(data), n, seed))


@dataclass
class Fit:
    model: nn.Module
    history: list[dict]  # one record per epoch: train_loss, train_acc, test_acc (when evaluated), ...
    seconds: float
    final_acc: float  # test accuracy after the last epoch, in %
    image_size: int


def fit_quiet(
    model: nn.Module, splits: Splits, cfg: TrainConfig, *, image_size: int, label: str | None = None
) -> Fit:
    """Train `model` on `splits` with the engine's loop (same optimiser, schedule and precision as
    `cnnzoo train`), keeping nothing on disk but, inside a running study, TensorBoard events in its
    log folder's tensorboard/`label`/ (default label: MODEL-seedN)."""
    device = resolve_device(cfg.device)
    loaders = run_loaders(splits, cfg, image_size, device)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    ctx = RunContext(Path("."), {}, quiet=True, save=False)
    events = _EVENTS.get()
    if events is not None and cfg.tensorboard:
        ctx.tensorboard_dir, label = events.folder(label or f"{cfg.model}-seed{cfg.seed}")
        ctx.hparams = {**events.hparams, "label": label}
    progress = _PROGRESS.get()
    if progress is not None:
        progress.fit_started(label or f"{cfg.model}-seed{cfg.seed}")
    result = fit(model, loaders, cfg, ctx, device=device)
    if progress is not None:
        progress.fit_done()
    if ctx.tensorboard_dir is not None and ctx.tensorboard_dir.is_dir():  # the package imported
        events.labels.append(label)
    final = result.history[-1].get("test_acc", 0.0)
    return Fit(model, result.history, time.perf_counter() - start, final, image_size)


@torch.no_grad()
def accuracy_on(model: nn.Module, data: ArrayDataset, image_size: int, device: str = "cpu") -> float:
    """Accuracy (%) on `data` without augmentation, in fp32: the train accuracy a gap is measured with."""
    info = data.info
    loader = InMemoryLoader(
        data,
        EVAL_BATCH,
        shuffle=False,
        image_size=image_size,
        channels=info.channels,
        mean=info.mean,
        std=info.std,
        device=resolve_device(device),
    )
    return evaluate_model(model, loader)["accuracy"]


def images_per_second(
    models: dict[str, nn.Module], x: Tensor, *, train: bool, repeats: int = 3
) -> dict[str, float]:
    """Images per second of each model: a forward pass (eval, no grad) or a training step (forward,
    cross-entropy, backward, SGD step). The best of `repeats` rounds after a warm-up, the models taking
    turns within a round, so a burst of load on the shared machine hits them alike."""
    y = torch.zeros(len(x), dtype=torch.long)
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()} if train else {}

    def step(key: str, model: nn.Module) -> None:
        if train:
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = nn.functional.cross_entropy(out, y)
            opts[key].zero_grad(set_to_none=True)
            loss.backward()
            opts[key].step()
        else:
            with torch.no_grad():
                model(x)

    best = dict.fromkeys(models, float("inf"))
    for key, model in models.items():
        model.train(train)
        step(key, model)  # warm-up
    for _ in range(repeats):
        for key, model in models.items():
            t = time.perf_counter()
            step(key, model)
            best[key] = min(best[key], time.perf_counter() - t)
    for model in models.values():
        model.eval()
    return {k: len(x) / v for k, v in best.items()}


# --- convergence: verdicts are read only from runs that stopped learning ---------------------------------

BUDGET_BOUND = "Budget-bound"


@dataclass(frozen=True)
class Plateau:
    """The stated convergence criterion on a run's training loss (one value per epoch), smoothed by a
    moving average of `smooth` epochs: the last `window` of the epochs (at least `min_window`) brought less
    than `tol` of the whole run's fall of that loss, or the loss is below `floor` (the training images are
    fitted). The fall is measured against the run's own fall, not the loss's level: a plain-56 stuck high
    and creeping down is still learning, a run that fell from 2.3 to 0.03 and moves by 0.01 is not. A run too
    short to have such a window, or whose loss did not fall, has not converged."""

    window: float = 0.2  # the last fifth of the epochs: with one-cycle, the low-rate end of the schedule
    min_window: int = 3
    smooth: int = 3  # epochs averaged: the per-epoch loss of a small set is noisy
    tol: float = 0.05  # 5% of the run's fall: more would still move the accuracies compared
    floor: float = 0.01  # nats: ~99.5%+ of the training images fitted with confidence

    def describe(self) -> str:
        return (
            f"a run has converged when the last {100 * self.window:.0f}% of its epochs (at least "
            f"{self.min_window}) brought less than {100 * self.tol:.0f}% of the whole run's fall of its training "
            f"loss (averaged over {self.smooth} epochs), or the loss is below {self.floor} (its training images "
            "fitted)"
        )

    def check(self, losses: list[float]) -> dict:
        """{converged, improvement (the window's share of the run's fall, None when too short), window, loss}."""
        n = len(losses)
        k = max(self.min_window, round(self.window * n))
        if n < k + self.smooth:
            last = losses[-1] if losses else None
            return {"converged": False, "improvement": None, "window": k, "loss": last}
        smoothed = [statistics.fmean(losses[i - self.smooth + 1 : i + 1]) for i in range(self.smooth - 1, n)]
        first, before, last = smoothed[0], smoothed[-1 - k], smoothed[-1]
        if first <= last:  # no fall at all: stuck, not converged
            return {"converged": last < self.floor, "improvement": None, "window": k, "loss": last}
        share = (before - last) / (first - last)
        return {
            "converged": last < self.floor or share < self.tol,
            "improvement": share,
            "window": k,
            "loss": last,
        }


PLATEAU = Plateau()


def budget_verdict(verdict: str, checks: list[dict], rerun: str) -> tuple[str, str]:
    """(verdict, note): `verdict` as read when every run it rests on converged (`Plateau.check`), else
    "Budget-bound" (never "Did not hold": the runs cannot answer yet) with how many were still learning
    and `rerun`, the command and estimated time of a budget that can (`rerun_hint`)."""
    still = sum(not c["converged"] for c in checks)
    if not still:
        return verdict, ""
    return (
        BUDGET_BOUND,
        f"{still} of {len(checks)} runs not converged by the criterion (read as {verdict}); {rerun}",
    )


def rerun_hint(name: str, results: dict, preset: str, factor: float) -> str:
    """The command of `preset` (a study's larger budget; "cuda": sized for one H100-class GPU) and its time
    estimated from this run's wall time, `factor` times this run's training, on this machine (a GPU's time is
    not measured here)."""
    hours = results["seconds"] * factor / 3600
    flags = f" --preset {preset}" + (" --device cuda" if preset == "cuda" else "")
    return (
        f"a budget that can answer: `cnnzoo study {name}{flags}`, {factor:.0f}x this run's training "
        f"(about {hours:.0f} h on this CPU; GPU time not measured)"
    )


def loss_figure(panels: dict[str, dict[str, list[list[float]]]], path: Path, title: str) -> Path:
    """The curves a convergence verdict is read from: one panel per entry of `panels`, in it the training
    loss per epoch of each label (thin: each seed; bold: their mean), log scale, with the last window of
    the plateau criterion (`PLATEAU`) shaded."""
    plt = pyplot()
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=100, squeeze=False)
    for ax, (panel, curves) in zip(axes.flat, panels.items(), strict=False):
        for i, (label, seeds) in enumerate(curves.items()):
            n = min(len(c) for c in seeds)
            epochs = range(1, n + 1)
            for c in seeds:
                ax.plot(epochs, c[:n], color=f"C{i}", lw=0.6, alpha=0.5)
            ax.plot(
                epochs,
                [statistics.fmean(c[e] for c in seeds) for e in range(n)],
                color=f"C{i}",
                lw=1.8,
                label=label,
            )
            k = PLATEAU.check(seeds[0])["window"]
        ax.axvspan(n - k + 0.5, n + 0.5, color="0.85", zorder=0)
        ax.set_yscale("log")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("training loss (log)")
    fig.suptitle(title + " (shaded: the window the plateau criterion reads)", fontsize=10)
    return save_figure(fig, path)


# --- receptive fields --------------------------------------------------------------------------------


def computed_rf(module: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int] | str:
    """The receptive field of `module`'s output, from the summary's op tracer (no values involved)."""
    x = torch.zeros(1, *input_size)
    tracer = OpTracer()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), tracer:
            tracer.set_field(x, Field((1, 1), (1, 1)))
            out = module(x)
        field = tracer.field(out)
    finally:
        module.train(was_training)
    if field is None or field.rf is None:
        return WHOLE_INPUT
    return tuple(field.rf)


def measured_rf(
    module: nn.Module, input_size: tuple[int, int, int], *, trials: int = 4, seed: int = 0
) -> tuple[int, int]:
    """Height and width of the input region that one output unit (the centre of the output map, all its
    channels summed) depends on, measured as the bounding box of the input gradient's support."""
    gen = torch.Generator().manual_seed(seed)
    was_training = module.training
    module.eval()
    support = torch.zeros(input_size[1:], dtype=torch.bool)
    try:
        for _ in range(trials):
            x = torch.randn(1, *input_size, generator=gen).requires_grad_(True)
            out = module(x)  # (1, C, H', W')
            h, w = out.shape[-2:]
            out[0, :, h // 2, w // 2].sum().backward()
            support |= (x.grad[0] != 0).any(0)
    finally:
        module.train(was_training)
    rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
    if len(rows) == 0:
        return (0, 0)
    return (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))


def train_config(**kwargs) -> TrainConfig:
    """A TrainConfig for a study's own (unregistered) network: the engine reads only the recipe fields."""
    kwargs.setdefault("model", "study")
    return TrainConfig(**kwargs)
