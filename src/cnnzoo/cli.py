"""The `cnnzoo` command line: each subcommand parses, calls one library function, prints.

A `CnnzooError` (bad input) becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import CnnzooError

__all__ = ["main", "build_parser"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


# --- models and summary -----------------------------------------------------------------------


def cmd_models(args) -> int:
    from .models import list_models, model_info
    from .models._registry import param_count_on_meta

    rows = []
    for name in list_models(args.pattern):
        info = model_info(name)
        row = {"name": name, "family": info.family, "params": param_count_on_meta(name),
               "input_size": info.input_size, "min_size": info.min_size, "paper": info.paper}  # fmt: skip
        if (
            info.family == "inception"
        ):  # the papers' and torchvision's counts differ in whether aux heads count
            row["params_without_aux"] = param_count_on_meta(name, aux_logits=False)
        rows.append(row)
    if not rows:
        raise CnnzooError(f"no model matches {args.pattern!r} (see `cnnzoo models`)")
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'name':<14} {'family':<10} {'params':>13} {'input':>6} {'min':>5}  paper")
    for r in rows:
        print(
            f"{r['name']:<14} {r['family']:<10} {r['params']:>13,} {r['input_size']:>6} {r['min_size']:>5}  {r['paper']}"
        )
    for r in rows:
        if "params_without_aux" in r:
            print(
                f"{r['name']}: {r['params_without_aux']:,} parameters without its auxiliary classifiers (aux_logits=False)"
            )
    return 0


def cmd_summary(args) -> int:
    from .models import create_model, model_info
    from .models._registry import check_input_size
    from .summary import format_summary, summarize, summary_to_dict

    info = model_info(args.name)
    size = args.input_size or info.input_size
    check_input_size(args.name, size)
    in_chans = args.in_chans or info.in_chans
    model = create_model(args.name, num_classes=args.num_classes, in_chans=in_chans)
    result = summarize(model, (in_chans, size, size), depth=args.depth)
    if args.json:
        _print_json(summary_to_dict(result))
    else:
        print(format_summary(result))
    return 0


# --- data and training ------------------------------------------------------------------------


def cmd_datasets(args) -> int:
    from .data import load_dataset
    from .data.sources import describe_dataset, list_datasets

    if not args.name:
        for name in [*list_datasets(), "folder:PATH"]:
            print(f"{name:<16} {describe_dataset(name)}")
        return 0
    splits = load_dataset(args.name, data_dir=args.data_dir, download=args.download)
    info = splits.info
    facts = {"name": info.name, "classes": list(info.classes), "image_size": info.image_size,
             "channels": info.channels, "mean": list(info.mean), "std": list(info.std), "flip": info.flip,
             "train": len(splits.train), "test": len(splits.test), "source": info.source}  # fmt: skip
    if args.json:
        _print_json(facts)
        return 0
    for key, value in facts.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:<11} {shown}")
    return 0


def add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (defaults depend on the model and dataset: see README)")
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--optimizer", choices=["sgd", "adamw"])
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=["onecycle", "cosine", "step", "constant"])
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--step-size", type=positive_int, help="epochs between x0.1 decays (--schedule step)")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--grad-clip", type=float, help="max gradient norm (0 = off)")
    g.add_argument("--ema", type=float, help="EMA decay of the weights, e.g. 0.999 (0 = off)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    g.add_argument("--channels-last", action="store_true", default=None)
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument("--seed", type=int)
    g.add_argument("--augment", help='e.g. "crop=2,flip,affine,cutout=8" or "none"')
    g.add_argument("--image-size", type=positive_int, help="resize the data once to this side")
    g.add_argument("--tta", action="store_true", default=None, help="evaluate with flipped copies too")
    g.add_argument(
        "--eval-every", type=positive_int, help="evaluate the test split every N epochs (default 1)"
    )
    g.add_argument("--data-dir", help="where the dataset's files are")
    g.add_argument("--strict", action="store_true", default=None, help="folders: stop on a corrupt image")
    g.add_argument(
        "--download", action="store_true", default=None, help="fetch kmnist/cifar10/cifar100 if missing"
    )
    g.add_argument("--train-subset", type=positive_int, help="train on the first N shuffled images only")


_TRAIN_FIELDS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "step_size",
    "label_smoothing",
    "grad_clip",
    "ema",
    "precision",
    "channels_last",
    "compile",
    "device",
    "seed",
    "augment",
    "image_size",
    "tta",
    "eval_every",
    "data_dir",
    "download",
    "strict",
    "train_subset",
)


def train_overrides(args) -> dict:
    return {k: getattr(args, k, None) for k in _TRAIN_FIELDS}


def cmd_train(args) -> int:
    from .engine import default_config, train

    if args.resume:
        result = train(None, resume=args.resume, quiet=args.quiet)
    else:
        if not args.model:
            raise CnnzooError("name a model to train (e.g. `cnnzoo train lenet5`), or --resume RUN")
        cfg = default_config(args.model, args.data, **train_overrides(args))
        result = train(cfg, run_dir=args.out, quiet=args.quiet)
    if result.interrupted:
        return 130
    print(
        f"test accuracy {result.final_acc:.2f}% (best {result.best_acc:.2f}%) after {result.epochs_run} epochs "
        f"in {result.seconds:.1f} s; run folder {result.run_dir}"
    )
    return 0


def cmd_evaluate(args) -> int:
    from .data import load_dataset
    from .engine import evaluate_model, load_checkpoint
    from .engine.evaluate import format_confusion, plot_confusion
    from .engine.train import make_loaders, resolve_device

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device)
    splits = load_dataset(args.data, data_dir=args.data_dir)
    check_classes_match(ckpt.meta, splits.info)
    meta = ckpt.meta
    _, test = make_loaders(
        splits,
        batch_size=256,
        image_size=meta["image_size"],
        channels=meta["in_chans"],
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        augment="none",
        device=device,
        seed=0,
    )
    metrics = evaluate_model(ckpt.model, test, tta=args.tta, num_classes=len(ckpt.classes))
    png = (
        Path(args.confusion_png)
        if args.confusion_png
        else ckpt.path.parent / f"confusion-{splits.info.name}.png"
    )
    plot_confusion(metrics["confusion"], ckpt.classes, png)
    if args.json:
        _print_json({**metrics, "classes": ckpt.classes, "confusion_png": str(png)})
        return 0
    top5 = f", top-5 {metrics['top5']:.2f}%" if metrics["top5"] is not None else ""
    print(
        f"{ckpt.meta['model']} on {args.data} ({metrics['images']:,} test images): "
        f"accuracy {metrics['accuracy']:.2f}%{top5}, loss {metrics['loss']:.4f}"
    )
    print(
        "per-class accuracy: "
        + ", ".join(f"{c} {a:.1f}%" for c, a in zip(ckpt.classes, metrics["per_class"], strict=True))
    )
    print("confusion matrix (rows: true, columns: predicted):")
    print(format_confusion(metrics["confusion"], ckpt.classes))
    print(f"confusion matrix plot: {png}")
    return 0


def check_classes_match(meta: dict, info) -> None:
    """A checkpoint evaluates only on data with its class count (channels are adapted by the loader)."""
    if len(meta["classes"]) != info.num_classes:
        raise CnnzooError(
            f"the checkpoint has {len(meta['classes'])} classes but {info.name} has {info.num_classes}: "
            "evaluate it on the dataset it was trained for"
        )


def cmd_predict(args) -> int:
    from .engine import load_checkpoint, predict_images

    ckpt = load_checkpoint(args.checkpoint)
    results = predict_images(ckpt.model, ckpt.meta, args.images, top_k=args.top_k)
    if args.json:
        _print_json(results)
        return 0
    for r in results:
        print(r["image"] + ": " + ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"]))
    return 0


# --- the parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnzoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("models", help="list the models: family, parameters, input sizes, paper")
    p.add_argument("pattern", nargs="?", default="*", help='shell pattern, e.g. "resnet*"')
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="layer-by-layer table: shapes, parameters, MACs, receptive fields")
    p.add_argument("name")
    p.add_argument("--input-size", type=positive_int, help="side of the square input (default: the paper's)")
    p.add_argument("--in-chans", type=positive_int)
    p.add_argument("--num-classes", type=positive_int)
    p.add_argument("--depth", type=positive_int, help="collapse modules nested deeper than this")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "datasets", help="list the datasets, or show one's classes, size, channels and statistics"
    )
    p.add_argument("name", nargs="?", help="a dataset to describe (loads it)")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true", help="fetch kmnist/cifar10/cifar100 if missing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("train", help="train a model from scratch on a dataset")
    p.add_argument("model", nargs="?")
    p.add_argument("--data", default="mnist", help="dataset name or folder:PATH (default mnist)")
    p.add_argument("--out", help="run folder (default runs/MODEL-DATA-TIME)")
    p.add_argument("--resume", help="continue the run in this folder where it stopped")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="accuracy, top-5, per-class accuracy and confusion matrix of a checkpoint"
    )
    p.add_argument("checkpoint", help="a run folder or a .safetensors checkpoint")
    p.add_argument("--data", default="mnist")
    p.add_argument("--data-dir")
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped images")
    p.add_argument("--device", default="auto")
    p.add_argument("--confusion-png", help="where to write the confusion matrix plot")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes of image files")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    _add_transfer_commands(sub)
    return parser


def _add_transfer_commands(sub) -> None:
    try:
        from .transfer.cli import add_commands
    except ImportError:  # transfer learning not installed in this build
        return
    add_commands(sub, add_train_options, train_overrides)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except CnnzooError as e:
        print(f"cnnzoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnzoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
