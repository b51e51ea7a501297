"""`cnnzoo export`: a trained network leaves cnnzoo as one folder, with its parity measured.

    cnnzoo export runs/lenet5-mnist-... --format onnx,torchscript,safetensors --out exported/lenet5

writes, into a temporary folder beside `--out` that is renamed into place only when every check passed:

    config.json        architecture, builder kwargs, classes, input size, channels, mean/std, framing,
                       cnnzoo and torch versions: all a reader needs to feed the model
    model.safetensors  the weights; `config.json` + this file rebuild the model (checked: equal logits)
    model.onnx         `torch.onnx.export(dynamo=True)`, opset 18, a dynamic batch axis; checked with
                       onnxruntime on real test images at batch 1 and at another batch size
    model.pt           TorchScript; checked in a Python process that never imports cnnzoo
    README.md          the model card: data, recipe, accuracy, the parity figures, how to load each file

A failed check (parity beyond the tolerance, top-1 disagreement) raises `CnnzooError` saying by how much,
and nothing is left behind.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from .. import __version__
from ..errors import CnnzooError

__all__ = ["FORMATS", "ExportReport", "export_model", "is_export_folder", "load_export", "parse_formats"]

FORMATS = ("onnx", "torchscript", "safetensors")
OPSET = 18
TOLERANCE = 1e-4  # max |ONNX - PyTorch| / max |logit|: the parity goal
PARITY_IMAGES = 32  # real test images in the larger batch (the first ones also go through one at a time)
SINGLE_IMAGES = 8  # images run at batch 1


@dataclass
class ExportReport:
    out: Path
    files: list[str]
    source: str
    parity: list[dict] = field(default_factory=list)  # per batch size: images, max_abs_diff, relative, top1
    checks: list[str] = field(default_factory=list)  # one line per other check that passed
    images: str = ""  # where the parity images came from

    def lines(self) -> list[str]:
        out = [f"exported {self.source} to {self.out}: {', '.join(self.files)}"]
        out += [f"onnx parity, {p_line(p)}" for p in self.parity]
        out += self.checks
        return out


def p_line(p: dict) -> str:
    return (
        f"batch {p['batch']} ({p['images']} {p['what']}): max |diff| {p['max_abs_diff']:.2e} = "
        f"{p['relative']:.1e} of the logit scale {p['logit_scale']:.3g} (goal <= {TOLERANCE:g}), top-1 agreement "
        f"{p['top1_agreement']:.1f}% (goal 100%)"
    )


def parse_formats(text: str) -> list[str]:
    """ "onnx,torchscript" -> ["onnx", "torchscript"]; an unknown or empty format is one clear error."""
    names = [f.strip().lower() for f in str(text).split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise CnnzooError(
            f"unknown export format {', '.join(map(repr, unknown)) or repr(text)} (choose from {', '.join(FORMATS)})"
        )
    return list(dict.fromkeys(names))


# --- reading an export folder ----------------------------------------------------------------------


def is_export_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def load_export(folder) -> tuple[nn.Module, dict]:
    """Rebuild the model from `config.json` and `model.safetensors` alone (eval mode, CPU)."""
    from ..engine.checkpoint import load_state_dict_checked, read_weights
    from ..models import create_model

    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
        model = create_model(
            meta["model"],
            num_classes=len(meta["classes"]),
            in_chans=meta["in_chans"],
            **meta.get("model_kwargs", {}),
        )
    except json.JSONDecodeError as e:
        raise CnnzooError(f"{folder / 'config.json'}: corrupt export config ({e})") from None
    except (KeyError, TypeError) as e:
        raise CnnzooError(f"{folder / 'config.json'}: export config lacks {e}") from None
    load_state_dict_checked(model, read_weights(folder / "model.safetensors"), source=str(folder))
    return model.eval(), meta


# --- exporting -------------------------------------------------------------------------------------


def export_model(
    source: str | Path, out: str | Path, formats: list[str] | str = FORMATS, *, overwrite: bool = False
) -> ExportReport:
    """Export a run, checkpoint, export folder or bundled name into `out`; see the module docstring."""
    from .predictor import open_model

    formats = parse_formats(formats) if isinstance(formats, str) else parse_formats(",".join(formats))
    out = Path(out)
    _check_out(out, overwrite)
    model, meta, label = open_model(source)
    model = model.float().eval().cpu()
    config = export_config(model, meta, label)
    x, y, what = parity_batch(meta, config)
    tmp = _make_tmp(out)
    try:
        report = ExportReport(out, [], label, images=what)
        _write_json(tmp / "config.json", config)
        report.files.append("config.json")
        if "safetensors" in formats:
            _write_safetensors(model, tmp / "model.safetensors")
            report.files.append("model.safetensors")
            report.checks.append(_check_round_trip(model, tmp, x))
        if "onnx" in formats:
            report.files.append("model.onnx")
            report.parity = _write_onnx(model, tmp / "model.onnx", x, what)
        if "torchscript" in formats:
            report.files.append("model.pt")
            report.checks.append(_write_torchscript(model, tmp / "model.pt", x))
        (tmp / "README.md").write_text(model_card(config, report, formats, _provenance(source, meta), out))
        report.files.append("README.md")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CnnzooError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CnnzooError(
            f"--out {out} already exists and is not empty (choose another folder, or --overwrite)"
        )


def _make_tmp(out: Path) -> Path:
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as e:
        raise CnnzooError(f"cannot write the export to {out}: {e.strerror or e}") from None


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished folder into place (replacing an old export only now that the new one is whole)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; the export is an ordinary folder
    for f in tmp.iterdir():
        os.chmod(f, 0o666 & ~umask)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError as e:
        if old is not None:
            os.replace(old, out)
        raise CnnzooError(f"cannot write the export to {out}: {e.strerror or e}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def export_config(model: nn.Module, meta: dict, label: str) -> dict:
    from .framing import framing_for

    framing = framing_for(meta.get("dataset")) if int(meta["in_chans"]) == 1 else None
    return {
        "format": "cnnzoo-export/1",
        "model": meta["model"],
        "model_kwargs": dict(meta.get("model_kwargs") or {}),
        "classes": list(meta["classes"]),
        "num_classes": len(meta["classes"]),
        "in_chans": int(meta["in_chans"]),
        "image_size": int(meta["image_size"]),
        "input_shape": ["batch", int(meta["in_chans"]), int(meta["image_size"]), int(meta["image_size"])],
        "mean": list(meta["mean"]),
        "std": list(meta["std"]),
        "normalize": "x = (pixels / 255 - mean) / std, per channel; pixels are the image resized to image_size",
        "dataset": meta.get("dataset"),
        "framing": None
        if framing is None
        else {
            "box": framing.box,
            "at": list(framing.at),
            "centre": framing.centre,
            "canvas": framing.canvas,
        },  # fmt: skip
        "source": label,
        "pretrained_cfg": {
            k: v for k, v in getattr(model, "pretrained_cfg", {}).items() if k in ("first_conv", "classifier")
        },
        "versions": {"cnnzoo": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
    }


def parity_batch(meta: dict, config: dict) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Real test images of the model's dataset, preprocessed as in training: (x, labels, description).

    Falls back to random images (and says so) when the dataset cannot be loaded here."""
    from ..data import load_dataset
    from .predictor import Predictor

    n = PARITY_IMAGES
    try:
        test = load_dataset(meta["dataset"]).test
        images, labels = test.images[:n], test.labels[:n]
        what = f"{meta['dataset']} test images"
    except (CnnzooError, KeyError, OSError):
        gen = torch.Generator().manual_seed(0)
        size = config["image_size"]
        images = torch.randint(0, 256, (n, config["in_chans"], size, size), generator=gen, dtype=torch.uint8)
        labels, what = None, "random images (the training data set is not available here)"
    predictor = Predictor(nn.Identity(), meta, fit=False)
    x = predictor.preprocess([im for im in images])  # the training pipeline's resize and normalisation
    return x.float().cpu(), labels, what


def _write_safetensors(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "cnnzoo-export"})


@torch.no_grad()
def _check_round_trip(model: nn.Module, folder: Path, x: torch.Tensor) -> str:
    rebuilt, _ = load_export(folder)
    diff = (rebuilt(x) - model(x)).abs().max().item()
    if diff != 0:
        raise CnnzooError(
            f"round trip failed: the model rebuilt from config.json + model.safetensors differs by {diff:.3g}"
        )
    return "safetensors round trip: config.json + model.safetensors rebuild the model, logits identical"


def _write_onnx(model: nn.Module, path: Path, x: torch.Tensor, what: str) -> list[dict]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise CnnzooError(
            "ONNX export needs onnxruntime (and onnx, onnxscript): pip install 'cnnzoo[export]'"
        ) from None
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (x[:2],), dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic,
                input_names=["images"], output_names=["logits"], verbose=False,
            )  # fmt: skip
            program.save(str(path))
    except ImportError as e:
        raise CnnzooError(
            f"ONNX export needs {e.name or 'onnxscript'}: pip install 'cnnzoo[export]'"
        ) from None
    finally:
        quiet.setLevel(level)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    with torch.no_grad():
        ref = model(x).numpy()
    single = min(SINGLE_IMAGES, len(x))
    got_single = np.concatenate([session.run(None, {name: x[i : i + 1].numpy()})[0] for i in range(single)])
    got_batch = session.run(None, {name: x.numpy()})[0]
    parity = [
        _parity(1, got_single, ref[:single], what),
        _parity(len(x), got_batch, ref, what),
    ]
    bad = [p for p in parity if p["relative"] > TOLERANCE or p["top1_agreement"] < 100.0]
    if bad:
        raise CnnzooError(
            "ONNX parity check failed: " + "; ".join(p_line(p) for p in bad) + "; nothing written"
        )
    return parity


def _parity(batch: int, got: np.ndarray, ref: np.ndarray, what: str) -> dict:
    diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    agree = float((got.argmax(1) == ref.argmax(1)).mean() * 100)
    return {"batch": batch, "images": len(ref), "what": what, "max_abs_diff": diff, "logit_scale": scale,
            "relative": diff / scale, "top1_agreement": agree}  # fmt: skip


# Runs in a fresh interpreter: TorchScript must load and run without cnnzoo (nor its source) present.
_JIT_CHECK = """
import sys, torch
model = torch.jit.load(sys.argv[1])
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(x), sys.argv[3])
assert not any(m == "cnnzoo" or m.startswith("cnnzoo.") for m in sys.modules), "cnnzoo was imported"
"""


def _write_torchscript(model: nn.Module, path: Path, x: torch.Tensor) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    scripted.save(str(path))
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = Path(tmp) / "x.pt", Path(tmp) / "y.pt"
        torch.save(x, inp)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env.pop("PYTHONPATH", None)
        done = subprocess.run(
            [sys.executable, "-I", "-c", _JIT_CHECK, str(path), str(inp), str(outp)],
            capture_output=True, text=True, cwd=tmp, env=env, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CnnzooError(f"TorchScript check failed: torch.jit.load in a fresh Python process: {why}")
        got = torch.load(outp)
    with torch.no_grad():
        diff = (got - model(x)).abs().max().item()
    if diff > 1e-5 * max(1.0, model(x).abs().max().item()):
        raise CnnzooError(f"TorchScript check failed: its logits differ from PyTorch's by {diff:.3g}")
    return (
        f"torchscript: torch.jit.load in a Python process without cnnzoo gives the same logits "
        f"(max |diff| {diff:.1e} on {len(x)} images)"
    )


# --- the model card ------------------------------------------------------------------------------


def _provenance(source, meta: dict) -> dict:
    """Training data, recipe and accuracy, from wherever the source records them."""
    from .pretrained import is_pretrained_name, pretrained_entry

    info = {"dataset": meta.get("dataset"), "accuracy": None, "recipe": None, "command": None}
    if is_pretrained_name(str(source)):
        entry = pretrained_entry(str(source))
        r = entry.record
        return {**info, "accuracy": entry.accuracy, "recipe": r.get("recipe"), "command": r.get("command"),
                "bundled": entry.name}  # fmt: skip
    acc = (meta.get("metrics") or {}).get("test_acc")
    info["accuracy"] = None if acc is None else round(float(acc), 2)
    path = Path(source)
    run = path if path.is_dir() else path.parent
    if (run / "config.json").is_file() and not is_export_folder(run):
        try:
            info["recipe"] = json.loads((run / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            pass
    return info


def model_card(config: dict, report: ExportReport, formats: list[str], prov: dict, out: Path) -> str:
    name, data = config["model"], config.get("dataset") or "unknown data"
    n, c, s = config["num_classes"], config["in_chans"], config["image_size"]
    acc = (
        f"{prov['accuracy']:.2f}% top-1 on the {data} test split"
        if prov.get("accuracy") is not None
        else "not recorded"
    )
    lines = [
        f"# {name} trained on {data}",
        "",
        f"Exported by cnnzoo {__version__} (torch {torch.__version__}) from `{report.source}`.",
        "",
        "## Model",
        "",
        f"- architecture: `{name}` {json.dumps(config['model_kwargs']) if config['model_kwargs'] else ''}".rstrip(),
        f"- input: `(batch, {c}, {s}, {s})` float32, normalised per channel: `(pixels / 255 - mean) / std` with "
        f"mean {config['mean']} and std {config['std']}",
        f"- output: `(batch, {n})` logits over the classes in `config.json` (`classes`, in order); softmax gives "
        "probabilities",
        f"- training data: {data}; measured accuracy: {acc}",
    ]
    if config.get("framing"):
        f = config["framing"]
        lines.append(
            f"- the training images were framed (light ink on black, longest side {f['box']} px, centred by "
            f"{f['centre']} in {f['canvas']}x{f['canvas']}): frame a person's picture the same way "
            "(`cnnzoo.inference.framing.frame_image`, on by default in `cnnzoo predict` and `cnnzoo.load`)"
        )
    if prov.get("command"):
        lines.append(f"- made by: `{prov['command']}`")
    if prov.get("recipe"):
        r = prov["recipe"]
        keys = ("epochs", "batch_size", "optimizer", "lr", "schedule", "weight_decay", "augment", "seed")
        # the options that change what was learned, when they are on (a subset is not a full run)
        extras = ("train_subset", "label_smoothing", "grad_clip", "ema")
        shown = [f"{k} {r[k]}" for k in keys if k in r] + [f"{k} {r[k]}" for k in extras if r.get(k)]
        lines.append("- recipe: " + ", ".join(shown))
    lines += ["", "## Parity", ""]
    if report.parity:
        lines.append(
            f"ONNX (opset {OPSET}, dynamic batch) against PyTorch, onnxruntime on the CPU, {report.images}:"
        )
        lines.append("")
        lines.append("| batch | images | max abs diff | relative to logit scale | top-1 agreement |")
        lines.append("|---|---|---|---|---|")
        for p in report.parity:
            lines.append(f"| {p['batch']} | {p['images']} | {p['max_abs_diff']:.2e} | {p['relative']:.1e} | "
                         f"{p['top1_agreement']:.1f}% |")  # fmt: skip
        lines.append("")
    lines += [f"- {c}" for c in report.checks] or ["- (no ONNX file in this export)"]
    lines += ["", "## Loading each file", ""]
    if "onnx" in formats:
        lines += ["```python", "import numpy as np, onnxruntime as ort",
                  'session = ort.InferenceSession("model.onnx")',
                  f"x = np.zeros((1, {c}, {s}, {s}), np.float32)  # normalised as above",
                  'logits = session.run(None, {"images": x})[0]', "```", ""]  # fmt: skip
    if "torchscript" in formats:
        lines += ["```python", "import torch  # no cnnzoo needed", 'model = torch.jit.load("model.pt").eval()',
                  f"logits = model(torch.zeros(1, {c}, {s}, {s}))", "```", ""]  # fmt: skip
    if "safetensors" in formats:
        lines += ["```python", "import cnnzoo", f"predictor = cnnzoo.load({str(out)!r})  # config.json + model.safetensors (and framing, if any)",
                  'predictor.predict(["digit.png"], top_k=3)', "", "# or the bare module:",
                  "import json; from safetensors.torch import load_file",
                  'cfg = json.load(open("config.json"))',
                  'model = cnnzoo.create_model(cfg["model"], num_classes=cfg["num_classes"], in_chans=cfg["in_chans"], '
                  '**cfg["model_kwargs"])',
                  'model.load_state_dict(load_file("model.safetensors"))', "```", ""]  # fmt: skip
    return "\n".join(lines) + "\n"
