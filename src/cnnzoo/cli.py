"""The `cnnzoo` command line: each subcommand parses, calls one library function, prints.

A `CnnzooError` (bad input) becomes one line on stderr and exit status 2, never a traceback. The training
flags are generated from `TrainConfig`'s fields (name, type, choices, help): one list, in the library.
A subcommand is one entry of `COMMANDS`; the choices it offers (precisions, export formats, explanation
methods, studies) are read from the library that owns them, never copied here.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, fields, replace

from .errors import CnnzooError, unknown_name

__all__ = ["main", "build_parser", "add_train_options", "train_overrides"]


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
    from .models._builder import model_table

    if args.pretrained:
        return _print_pretrained(args.pattern, args.json)
    rows = model_table(args.pattern)
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'name':<14} {'family':<10} {'params':>13} {'input':>6} {'min':>5}  paper")
    for r in rows:
        # Inception's count includes its training-only auxiliary classifiers; said on its own line
        aux = ""
        if "params_without_aux" in r:
            n = r["aux_classifiers"]
            heads = "its auxiliary classifier" if n == 1 else f"its {n} auxiliary classifiers"
            aux = f"  (with {heads}; {r['params_without_aux']:,} without: aux_logits=False)"
        print(
            f"{r['name']:<14} {r['family']:<10} {r['params']:>13,} {r['input_size']:>6} {r['min_size']:>5}  {r['paper']}{aux}"
        )
    return 0


def _print_pretrained(pattern: str, as_json: bool) -> int:
    from .models._pretrained import list_pretrained

    entries = list_pretrained(pattern)
    if not entries:
        raise CnnzooError(f"no bundled weights match {pattern!r} (see `cnnzoo models --pretrained`)")
    if as_json:
        _print_json([{"name": e.name, **e.record} for e in entries])
        return 0
    print(f"{'name':<24} {'test accuracy':>13} {'classes':>7} {'size':>9}  made by")
    for e in entries:
        classes = len(json.loads(e.config.read_text())["classes"])
        print(
            f"{e.name:<24} {e.accuracy:>12.2f}% {classes:>7} {e.record['bytes'] / 1024:>6.0f} KB  {e.record['command']}"
        )
    print(
        "use: cnnzoo predict NAME IMAGE, cnnzoo finetune --from NAME, create_model(MODEL, pretrained=DATASET)"
    )
    return 0


def cmd_summary(args) -> int:
    from .summary import format_summary, summarize_model, summary_to_dict

    result = summarize_model(
        args.name,
        input_size=args.input_size,
        in_chans=args.in_chans,
        num_classes=args.num_classes,
        depth=args.depth,
    )
    if args.json:
        _print_json(summary_to_dict(result))
    else:
        print(format_summary(result))
    return 0


# --- data and training ------------------------------------------------------------------------


def cmd_datasets(args) -> int:
    from .data.sources import dataset_facts, describe_dataset, list_datasets

    if not args.name:
        for name in [*list_datasets(), "folder:PATH"]:
            print(f"{name:<16} {describe_dataset(name)}")
        return 0
    facts = dataset_facts(args.name, data_dir=args.data_dir, download=args.download)
    if args.json:
        _print_json(facts)
        return 0
    for key, value in facts.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:<11} {shown}")
    return 0


def add_train_options(p: argparse.ArgumentParser, *, lr_range: bool = False) -> None:
    """One flag per `TrainConfig` field marked for the command line; None means "the recipe's default"."""
    from .engine.config import TrainConfig, recipe_fields

    g = p.add_argument_group("training (defaults as shown; the recipe of a model and dataset may set others)")
    kinds = {"int": int, "float": float, "str": str}
    varies = recipe_fields()
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            shown = "on" if f.default else "off"
        else:
            shown = "none" if f.default == "" else f.default
        varying = "; set per model and dataset by the recipe" if f.name in varies else ""
        text = f"{meta['help']} (default: {shown}{varying})".replace("%", "%%")
        if f.type == "bool":
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif f.name == "lr" and lr_range:  # fine-tuning: a range spreads rates from stem to head
            g.add_argument(flag, type=str, help='rate, or a range "LO:HI" spread from stem to head')
        else:
            kind = positive_int if meta.get("positive") else kinds[f.type]
            g.add_argument(flag, type=kind, choices=meta.get("choices"), help=text)


def train_overrides(args) -> dict:
    """The training flags given on the command line, as `TrainConfig` keywords."""
    from .engine.config import TrainConfig

    return {f.name: getattr(args, f.name, None) for f in fields(TrainConfig) if f.metadata.get("cli")}


def _check_auto_resume(args) -> None:
    """--auto-resume decides by itself whether to continue or start --out: --resume and --overwrite say
    otherwise, so neither goes with it (train and finetune alike)."""
    if args.auto_resume and (args.resume or args.overwrite):
        other = "--resume" if args.resume else "--overwrite"
        raise CnnzooError(
            f"--auto-resume continues or starts --out RUN by itself; {other} does not go with it"
        )


def cmd_train(args) -> int:
    from .engine import train
    from .engine.config import default_config, load_config
    from .engine.runfolder import count

    _check_auto_resume(args)
    if args.resume:
        if args.config or args.overwrite:
            raise CnnzooError(
                f"--resume continues a run as recorded; {'--config' if args.config else '--overwrite'} does not go with it"
            )
        changes = {**train_overrides(args), "model": args.model, "data": args.data}
        result = train(None, resume=args.resume, run_dir=args.out, quiet=args.quiet, changes=changes)
    else:
        overrides = train_overrides(args)
        if args.config:  # a recorded run's configuration, with the flags given on top
            cfg = load_config(args.config)
            changes = {k: v for k, v in overrides.items() if v is not None}
            if args.model:
                changes["model"] = args.model
            if args.data:
                changes["data"] = args.data
            cfg = replace(cfg, **changes)
        elif not args.model:
            raise CnnzooError(
                "name a model to train (e.g. `cnnzoo train lenet5`), --config FILE or --resume RUN"
            )
        else:
            cfg = default_config(args.model, args.data or "mnist", **overrides)
        # the recipe's epochs, batch, rate and augmentation not given here are scaled to the data
        given = None if args.config else {k for k, v in overrides.items() if v is not None}
        result = train(
            cfg,
            run_dir=args.out,
            quiet=args.quiet,
            overwrite=args.overwrite,
            given=given,
            auto_resume=args.auto_resume,
        )
    ended = _ended_early(result, "train")
    if ended is not None:
        return ended
    if result.is_main:  # under torchrun, rank 0 speaks for all
        print(
            f"test accuracy {result.final_acc:.2f}% (best {result.best_acc:.2f}%) after {count(result.epochs_run, 'epoch')} "
            f"in {result.seconds:.1f} s; run folder {result.run_dir}"
        )
    return 0


def _ended_early(result, command: str) -> int | None:
    """The exit status of a run that trained nothing to report (interrupted: the hint to continue is
    printed, no accuracy of an unfinished run; already finished: how to train it further), else None."""
    from .engine.runfolder import count

    if result.interrupted:
        return 130
    if result.already_finished:
        print(
            f"{result.run_dir} is already finished: {count(result.epochs_run, 'epoch')}, test accuracy "
            f"{result.final_acc:.2f}% (best {result.best_acc:.2f}%); nothing to resume. To train it further: "
            f"cnnzoo {command} --resume {result.run_dir} --epochs N (N > {result.epochs_run})"
        )
        return 0
    return None


def cmd_evaluate(args) -> int:
    from ._io import note, output_file, output_folder
    from .engine.evaluate import default_confusion_png, evaluate_source, format_confusion, plot_confusion
    from .engine.mistakes import default_errors_dir, error_report, write_error_pictures

    explicit = output_file(args.confusion_png, "--confusion-png") if args.confusion_png else None
    errors_dir = output_folder(args.errors_dir, "--errors-dir") if args.errors_dir else None
    ev = evaluate_source(
        args.checkpoint,
        args.data,
        data_dir=args.data_dir,
        device=args.device,
        precision=args.precision,
        tta=args.tta,
        per_image=True,
    )
    metrics, ckpt = ev.metrics, ev.opened
    data = metrics["dataset"]  # --data, or the checkpoint's own
    name = f"{ckpt.meta['model']} on {data}"
    png = explicit or default_confusion_png(ckpt, data)  # never into the installed package's folder
    try:
        if png is not None:
            title = f"{name}: accuracy {metrics['accuracy']:.2f}% of {metrics['images']:,} test images"
            plot_confusion(metrics["confusion"], ckpt.classes, png, title=title)
    except CnnzooError as e:
        if explicit:
            raise
        note(f"{e}; the confusion matrix plot is not written (choose where with --confusion-png)")
        png = None
    report = error_report(metrics, ckpt.classes)
    folder = errors_dir or default_errors_dir(ckpt, data)
    pictures = []
    try:
        if folder is not None:
            pictures = write_error_pictures(metrics, report, ev.test, ckpt.classes, folder, name=name)
    except CnnzooError as e:
        if errors_dir:
            raise
        note(f"{e}; the pictures of the errors are not written (choose where with --errors-dir)")
    metrics.pop("per_image")
    if args.json:
        _print_json(
            {
                **metrics,
                **report,
                "classes": ckpt.classes,
                "confusion_png": str(png) if png else None,
                "pictures": {p.stem: str(p) for p in pictures},
            }
        )
        return 0
    top5 = f", top-5 {metrics['top5']:.2f}%" if metrics["top5"] is not None else ""
    print(
        f"{name} ({metrics['images']:,} test images): accuracy {metrics['accuracy']:.2f}%{top5}, loss {metrics['loss']:.4f}"
    )
    print(
        "per-class accuracy: "
        + ", ".join(f"{c} {a:.1f}%" for c, a in zip(ckpt.classes, metrics["per_class"], strict=True))
    )
    print("confusion matrix (rows: true, columns: predicted):")
    print(format_confusion(metrics["confusion"], ckpt.classes))
    _print_error_report(report, ckpt.classes, metrics["confusion"])
    if png is not None:
        print(f"confusion matrix plot: {png}")
    if pictures:
        print(f"pictures of the errors: {', '.join(str(p) for p in pictures)}")
    elif folder is None:
        print("pictures of the errors: not written for bundled weights (choose where with --errors-dir)")
    return 0


def _print_error_report(report: dict, classes: list, confusion: list) -> None:
    """Per-class precision and recall as a table, the most-confused pairs, the most-wrong images."""

    def pct(v):
        return "-" if v is None else f"{v:.1f}"

    width = max(5, *(len(str(c)) for c in classes))
    print(f"{'class':<{width}}  precision  recall  images")
    for c, p, r, row in zip(classes, report["precision"], report["recall"], confusion, strict=True):
        print(f"{str(c):<{width}}  {pct(p):>9}  {pct(r):>6}  {sum(row):>6,}")
    pairs = report["confused_pairs"]
    if pairs:
        print(
            "most-confused pairs (true -> predicted: images): "
            + ", ".join(f"{q['true']} -> {q['predicted']}: {q['count']:,}" for q in pairs)
        )
    worst = report.get("most_wrong") or []
    if worst:
        print(
            f"most-wrong test images ({report['misclassified']:,} misclassified): "
            + ", ".join(
                f"#{w['index']} {w['true']} as {w['predicted']} (p {w['probability']:.2f}, loss {w['loss']:.2f})"
                for w in worst[:5]
            )
        )


def cmd_predict(args) -> int:
    from .inference import load

    predictor = load(args.checkpoint, device=args.device, precision=args.precision, fit=not args.no_fit)
    results = predictor.predict(args.images, top_k=args.top_k)
    if args.json:
        _print_json(results)
        return 0
    if predictor.framing is not None:
        print(
            f"framing each image as {predictor.meta.get('dataset')}'s were made (--no-fit turns it off): "
            f"a light background inverted, {predictor.framing.describe()}"
        )
    for r in results:
        line = r["image"] + ": " + ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        if "framing" in r:  # the steps are said once above; here only what differed for this image
            steps = predictor.framing.describe()
            line += f"  [{r['framing'].replace(', ' + steps, '').replace(steps, 'framed')}]"
        print(line)
    return 0


def cmd_export(args) -> int:
    from .inference.export import export_model

    report = export_model(args.source, args.out, args.format, overwrite=args.overwrite)
    for line in report.lines():
        print(line)
    return 0


# --- transfer learning ------------------------------------------------------------------------


def _finetune_overrides(args) -> tuple[float | tuple | None, dict]:
    """--lr (one rate, or LO:HI) and the training options given to `finetune` or `lr-find --from`."""
    from .transfer.freeze import parse_lr

    lr = parse_lr(args.lr) if args.lr is not None else None
    overrides = train_overrides(args)
    overrides["lr"] = lr if isinstance(lr, float) else (lr[1] if lr else None)
    return lr, overrides


def _finetune_plan(args, model: str | None):
    """(ft, cfg, splits) of `cnnzoo finetune`'s flags (and `lr-find --from`'s): the recipe the transfer
    study measured for this strategy and this many images, flags overriding it."""
    from .transfer.finetune import FinetuneConfig
    from .transfer.recipe import finetune_plan

    lr, overrides = _finetune_overrides(args)
    ft = FinetuneConfig(
        source=args.source,
        strategy=args.strategy or "head",
        model=model,
        lr_range=lr if isinstance(lr, tuple) else None,
        layer_decay=args.layer_decay,
        head_epochs=args.head_epochs,
        train_bn=args.train_bn,
        cache_flip=args.cache_flip,
        samples_per_class=args.samples_per_class or 0,
        prefix_cache=not args.no_prefix_cache,
    )
    return finetune_plan(ft, args.data, **overrides)


def cmd_finetune(args) -> int:
    from .engine.resume import resume_run_dir
    from .engine.runfolder import read_json
    from .transfer.finetune import finetune, resume_finetune

    _check_auto_resume(args)
    if args.resume:
        given = [f for f in ("source", "data", "strategy", "model", "overwrite") if getattr(args, f)]
        if given or (args.out and args.out != args.resume):
            flag = {"source": "--from"}.get(given[0], "--" + given[0]) if given else "--out"
            raise CnnzooError(
                f"--resume continues {args.resume} as recorded; {flag} does not go with it (a new fine-tuning "
                "run: give --from and --data without --resume)"
            )
        result = resume_finetune(args.resume, changes=_finetune_overrides(args)[1], quiet=args.quiet)
        strategy = read_json(resume_run_dir(args.resume) / "config.json")["finetune"]["strategy"]
    else:
        if not args.source or not args.data:
            raise CnnzooError("name the source and the target: --from SOURCE --data DATA (or --resume RUN)")
        strategy = args.strategy or "head"
        ft, cfg, splits = _finetune_plan(args, args.model)
        result = finetune(
            ft,
            cfg,
            run_dir=args.out,
            quiet=args.quiet,
            overwrite=args.overwrite,
            splits=splits,
            auto_resume=args.auto_resume,
        )
    ended = _ended_early(result, "finetune")
    if ended is not None:
        return ended
    print(
        f"test accuracy {result.final_acc:.2f}% (best {result.best_acc:.2f}%) with strategy {strategy} "
        f"in {result.seconds:.1f} s; run folder {result.run_dir}"
    )
    return 0


def cmd_lr_find(args) -> int:
    from ._io import output_file

    png = output_file(args.out, "--out")
    sweep = dict(png=png, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    if args.source:
        from .transfer.lr_find import finetune_lr_find

        ft, cfg, splits = _finetune_plan(args, args.model)
        result = finetune_lr_find(ft, cfg, splits=splits, **sweep)
        use = f"cnnzoo finetune --from {args.source} --data {args.data} --strategy {args.strategy}"
        if ft.lr_range:
            ratio = ft.lr_range[0] / ft.lr_range[1]
            use += f" --lr {result.suggestion * ratio:.3g}:{result.suggestion:.3g}"
        else:
            use += f" --lr {result.suggestion:.3g}"
    else:
        from .engine.config import default_config
        from .engine.lr_find import lr_find_model

        if not args.model:
            raise CnnzooError(
                "name a model (cnnzoo lr-find lenet5 --data D) or a source to fine-tune (--from SRC)"
            )
        if args.lr is not None:
            raise CnnzooError(
                "--lr sets a fine-tuning plan's rates (with --from); the sweep chooses the rate here"
            )
        overrides = train_overrides(args)
        given = {k for k, v in overrides.items() if v is not None}
        cfg = default_config(args.model, args.data, **overrides)
        result, cfg = lr_find_model(cfg, given=given, quiet=args.quiet, **sweep)
        use = f"cnnzoo train {args.model} --data {args.data} --lr {result.suggestion:.3g}"
        # the recipe the sweep ran with: the same flags give train the same batch and augmentation
        for name in ("epochs", "batch_size", "augment", "optimizer", "train_subset"):
            if name in given:
                use += f" --{name.replace('_', '-')} {getattr(cfg, name)}"
    print(result.describe())
    print(f"plot: {png}")
    print(f"to train with it: {use}")
    return 0


def cmd_advise(args) -> int:
    from .data import load_dataset
    from .transfer.advise import advise

    splits = load_dataset(args.data, data_dir=args.data_dir)
    advice = advise(
        args.source,
        splits,
        model=args.model,
        device=args.device,
        seed=args.seed,
        samples_per_class=args.samples_per_class or 0,
        trial=args.trial or args.budget is not None,
        budget=args.budget,
    )
    if args.json:
        _print_json(advice.to_dict())
    else:
        print(advice.describe())
    return 0


def cmd_study(args) -> int:
    from ._io import output_folder
    from .studies import get_study

    study = get_study(args.name)
    preset = args.preset or ("quick" if args.quick else "full")
    if preset not in study.presets:
        raise unknown_name("preset", preset, study.presets, f"{study.name}'s: {', '.join(study.presets)}")
    # only the default run writes the committed report (reports/NAME); --quick, --preset, --seeds: runs/studies/
    out = args.out or study.out_for(preset, args.seeds)
    if not args.report_only:  # refused before any work: a file in the way, a folder that cannot be written
        output_folder(out, "--out")
    if args.report_only:
        print(f"report written: {study.report(out)}")
        return 0
    chosen = {"preset": args.preset} if args.preset else {}  # a study whose run takes no preset has two
    path = study.run(out, quick=args.quick, seeds=args.seeds, device=args.device, **chosen)
    print(f"report written: {path}")
    return 0


# --- seeing inside, serving -------------------------------------------------------------------


def cmd_explain(args) -> int:
    from ._io import output_folder
    from .explain import explain_images
    from .inference import load

    predictor = load(args.source, device=args.device)
    output_folder(args.out, "--out")  # a file in the way or a read-only folder: one line, before the maps
    written = explain_images(
        predictor, args.images, args.method, args.out, layer=args.layer, target=args.target
    )
    for path in written:
        print(path)
    return 0


def cmd_serve(args) -> int:
    import signal

    try:
        from .serve import ServeSettings, load_models, serve
    except ImportError as e:
        raise CnnzooError(
            f"cnnzoo serve needs the serve extra ({e.name} is missing): pip install 'cnnzoo[serve]'"
        ) from None
    settings = ServeSettings(
        max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms, timeout_ms=args.timeout_ms
    )
    models = load_models([args.source] if args.source else [], args.model or [], device=args.device)
    stopped_by = serve(
        models,
        host=args.host,
        port=args.port,
        settings=settings,
        access_log=not args.no_access_log,
        threads=args.threads,
    )
    return 130 if stopped_by == signal.SIGINT else 0  # SIGTERM: a graceful stop, as asked


# --- the parser: one entry of COMMANDS per subcommand -------------------------------------------
# Choices are read from the library that owns them, inside the functions: importing cnnzoo.cli stays cheap,
# and `main` declares only the arguments of the command it runs (see `_CommandParser`).

DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
SOURCE_HELP = "a run folder, a .safetensors checkpoint, an export folder, or bundled weights (lenet5:mnist)"


def _add_precision_option(p: argparse.ArgumentParser) -> None:
    from .engine.config import PRECISIONS

    named = ", ".join(name for name in PRECISIONS if name != "auto")
    text = f"arithmetic of inference: {named} or auto (default: what the run evaluated with)"
    p.add_argument("--precision", choices=PRECISIONS, help=text)


def _add_models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help='shell pattern, e.g. "resnet*" (default: all)')
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--pretrained", action="store_true", help="list the bundled pretrained weights with their accuracy"
    )


def _add_summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a model name (see `cnnzoo models`)")
    p.add_argument("--input-size", type=positive_int, help="side of the square input (default: the paper's)")
    p.add_argument("--in-chans", type=positive_int, help="input channels (default: the model's)")
    p.add_argument("--num-classes", type=positive_int, help="classifier outputs (default: the model's)")
    p.add_argument("--depth", type=positive_int, help="collapse modules nested deeper than this")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_datasets_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a dataset to describe (loads it)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: the cache)")
    p.add_argument("--download", action="store_true", help="fetch kmnist/cifar10/cifar100 if missing")
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="a model name (see `cnnzoo models`)")
    p.add_argument("--data", help="dataset name or folder:PATH (default mnist)")
    p.add_argument(
        "--config", help="re-run a recorded configuration (a run's config.json); flags override it"
    )
    p.add_argument("--out", help="run folder (default runs/MODEL-DATA-TIME)")
    p.add_argument(
        "--resume",
        help="continue the run in this folder where it stopped (with --epochs N: train it to N epochs)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run that --out already holds")
    p.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue --out RUN when it holds an unfinished run of this configuration, else start it (for "
        "schedulers that requeue the same command)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_train_options(p)


def _add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", help="a run folder, a .safetensors checkpoint or bundled weights (lenet5:mnist)"
    )
    p.add_argument(
        "--data", help="dataset whose test split to use (default: the one the checkpoint was trained on)"
    )
    p.add_argument("--data-dir", help="where the dataset's files are (default: the cache)")
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped images")
    _add_precision_option(p)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--confusion-png", help="where to write the confusion matrix plot")
    p.add_argument(
        "--errors-dir",
        help="folder for the pictures of the errors: errors.png (the most-wrong test images), "
        "confused_pairs.png, per_class.png (default: evaluation/ beside the checkpoint; "
        "evaluation-DATA/ for other --data)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=SOURCE_HELP)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes shown per image (default 5)")
    _add_precision_option(p)
    p.add_argument("--device", default="cpu", help=DEVICE_HELP + " (default cpu)")
    p.add_argument(
        "--no-fit",
        action="store_true",
        help="do not frame the images as MNIST-like training data was (invert, crop, fit, centre)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    from .inference.export import FORMATS

    every = {2: "both", 3: "all three", 4: "all four"}.get(len(FORMATS), "all")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument(
        "--format",
        default=",".join(FORMATS),
        help=f"comma-separated subset of {', '.join(FORMATS)} (default: {every})",
    )
    p.add_argument("--out", required=True, help="the folder to create (written whole, or not at all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")


def _add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from",
        dest="source",
        help="a cnnzoo run or checkpoint, a .pth/.pt/.safetensors weights file, torchvision:NAME, or bundled "
        "weights (lenet5:glyphs-latin; cnnzoo models --pretrained)",
    )
    p.add_argument("--data", help="dataset name or folder:PATH")
    p.add_argument("--strategy", help="head, last:N, full, gradual or scratch (default head)")
    p.add_argument("--model", help="architecture of a bare weights file (guessed from its keys if omitted)")
    p.add_argument(
        "--layer-decay", type=float, help="full/last:N: each group's rate is the next one's times this"
    )
    p.add_argument(
        "--head-epochs", type=positive_int, help="gradual: epochs of the head-only phase (default: a third)"
    )
    p.add_argument(
        "--train-bn", action="store_true", help="let frozen BatchNorm layers adapt their statistics"
    )
    p.add_argument("--cache-flip", action="store_true", help="head: cache features of mirrored images too")
    p.add_argument(
        "--no-prefix-cache",
        action="store_true",
        help="last:N: run the frozen groups every epoch instead of caching their outputs once",
    )
    p.add_argument(
        "--samples-per-class", type=positive_int, help="train on at most N images per class (default: all)"
    )
    p.add_argument("--out", help="run folder (default runs/finetune-MODEL-DATA-TIME)")
    p.add_argument(
        "--resume",
        help="continue the fine-tuning run in this folder where it stopped (with --epochs N: train it to N epochs)",
    )
    p.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue --out RUN when it holds an unfinished run of this configuration, else start it",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run that --out already holds")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_train_options(p, lr_range=True)


def _add_lr_find_arguments(p: argparse.ArgumentParser) -> None:
    from .engine.lr_find import END_LR, START_LR, STEPS

    p.add_argument(
        "model",
        nargs="?",
        help="a model to train from scratch (with --from: the architecture of bare weights)",
    )
    p.add_argument("--data", required=True, help="dataset name or folder:PATH")
    p.add_argument(
        "--from", dest="source", help="sweep a fine-tuning plan of this source instead (as finetune)"
    )
    p.add_argument("--strategy", default="head", help="with --from: head, last:N, full, gradual or scratch")
    p.add_argument("--layer-decay", type=float, help="with --from: full/last:N's per-group rate ratio")
    p.add_argument("--train-bn", action="store_true", help="with --from: frozen BatchNorm layers adapt")
    p.add_argument("--samples-per-class", type=positive_int, help="train on at most N images per class")
    p.add_argument("--out", default="lr_find.png", help="the plot (default ./lr_find.png)")
    p.add_argument(
        "--start-lr", type=float, default=START_LR, help=f"the sweep's first rate (default {START_LR:g})"
    )
    p.add_argument("--end-lr", type=float, default=END_LR, help=f"its last rate (default {END_LR:g})")
    p.add_argument(
        "--steps",
        type=positive_int,
        default=STEPS,
        help=f"its steps (default {STEPS}; fewer if the loss diverges)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the result")
    # finetune's plan options that a sweep has no use for (it trains a few hundred steps, nothing cached)
    p.set_defaults(head_epochs=None, cache_flip=False, no_prefix_cache=False)
    add_train_options(p, lr_range=True)


def _add_advise_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", required=True, help="the pretrained source (as for finetune)")
    p.add_argument("--data", required=True, help="the target dataset name or folder:PATH")
    p.add_argument("--data-dir", help="where the dataset's files are (default: the cache)")
    p.add_argument("--model", help="architecture of a bare weights file (guessed from its keys if omitted)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the probes, the subset and the trial (default 0)"
    )
    p.add_argument(
        "--samples-per-class",
        type=positive_int,
        help="advise for at most N training images per class (as finetune)",
    )
    p.add_argument(
        "--trial",
        action="store_true",
        help="race the strategies on a validation split carved from the training images; recommend the winner",
    )
    p.add_argument(
        "--budget",
        type=float,
        help="seconds for the trial (implies --trial; default: 3 fine-tuning runs' steps)",
    )
    p.add_argument("--json", action="store_true", help="print JSON, with the measured figures")


def _add_study_arguments(p: argparse.ArgumentParser) -> None:
    from .studies import get_study, list_studies

    names = list_studies()
    p.description = "\n".join(f"{n}: {get_study(n).summary}" for n in names)
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # one study per line, as written
    p.add_argument("name", choices=names, help="the study to run")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small preset that runs in a few minutes")
    size.add_argument(
        "--preset", help="a preset by name, e.g. cuda (sized for one H100-class GPU: with --device cuda)"
    )
    p.add_argument(
        "--out",
        help="where the report goes (default reports/NAME for the full preset with its own seeds; any other "
        "run: runs/studies/NAME/PRESET, never over a committed report)",
    )
    p.add_argument("--seeds", type=positive_int, help="seeds per cell (default: the preset's)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--report-only", action="store_true", help="re-render the report from OUT/results.json")


def _add_explain_arguments(p: argparse.ArgumentParser) -> None:
    from .explain import METHODS

    p.add_argument("source", help="a run folder, a .safetensors checkpoint or a bundled name (lenet5:mnist)")
    p.add_argument("images", nargs="*", help="image files (none needed for --method filters)")
    p.add_argument(
        "--method",
        required=True,
        choices=METHODS,
        help="featuremaps (every conv/pool layer), filters (the first layer's), gradcam or saliency",
    )
    p.add_argument("--out", default="explain", help="folder for the PNGs (default ./explain)")
    p.add_argument("--layer", help="gradcam: the module to explain at (default: the last conv stage)")
    p.add_argument("--target", help="gradcam/saliency: the class to explain (default: the predicted one)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP + " (default cpu)")


def _add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        nargs="?",
        help="a run folder, checkpoint or bundled name (default: the bundled LeNet-5, MNIST)",
    )
    p.add_argument(
        "--model", action="append", metavar="NAME=SOURCE", help="also serve SOURCE under NAME (repeatable)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free one)")
    p.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=32,
        help="images per forward pass (default 32; 1: no batching)",
    )
    p.add_argument(
        "--max-delay-ms", type=float, default=2.0, help="how long a batch waits to fill up (default 2)"
    )
    p.add_argument(
        "--timeout-ms", type=float, default=5000.0, help="a request waiting longer gets 503 (default 5000)"
    )
    p.add_argument("--device", default="cpu", help=DEVICE_HELP + " (default cpu)")
    p.add_argument(
        "--threads", type=positive_int, help="threads of the forward pass (default: all cores but one)"
    )
    p.add_argument("--no-access-log", action="store_true", help="do not log one JSON line per request")


@dataclass(frozen=True)
class Command:
    """A subcommand: its name and its line in `cnnzoo --help`. Its two functions live in this module and are
    found by name when its parser declares its arguments (as `cmd.Cmd` finds `do_NAME`), so a test can stand in for either:
    `_add_NAME_arguments(p)` declares its flags, `cmd_NAME(args)` runs it and returns the exit status.
    A new command is those two functions and one entry in `COMMANDS`."""

    name: str
    help: str

    def declare(self, p: argparse.ArgumentParser) -> None:
        module, name = globals(), self.name.replace("-", "_")  # lr-find: _add_lr_find_arguments
        module[f"_add_{name}_arguments"](p)
        p.set_defaults(func=module[f"cmd_{name}"])


# in the order `cnnzoo --help` lists them
COMMANDS: tuple[Command, ...] = (
    Command("models", "list the models: family, parameters, input sizes, paper"),
    Command("summary", "layer-by-layer table: shapes, parameters, MACs, receptive fields"),
    Command("datasets", "list the datasets, or show one's classes, size, channels and statistics"),
    Command("train", "train a model from scratch on a dataset"),
    Command("evaluate", "accuracy, top-5, per-class accuracy and confusion matrix of a checkpoint"),
    Command("predict", "top-k classes of image files"),
    Command("export", "write ONNX, TorchScript and safetensors files with a model card, parity checked"),
    Command("finetune", "fine-tune a pretrained model on a dataset (transfer learning)"),
    Command("lr-find", "learning-rate range test: loss against an exponentially growing rate, a suggestion"),
    Command("advise", "recommend how far back to fine-tune, from measured data size and similarity"),
    Command("study", "reproducible studies of the classic claims; each writes reports/NAME/"),
    Command("explain", "see inside a model: feature maps, first-layer filters, Grad-CAM, saliency (PNGs)"),
    Command("serve", "HTTP inference server: micro-batching, metrics, a draw-a-digit page"),
)


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that can declare its arguments late: at the latest when it parses or shows its
    help. `main` relies on that, so `cnnzoo models` never imports what other commands' choices come from
    (the explanation methods, the export formats, the studies)."""

    def __init__(self, *args, command: Command, **kwargs):
        super().__init__(*args, **kwargs)
        self._undeclared: Command | None = command

    def declare(self) -> None:
        command, self._undeclared = self._undeclared, None
        if command is not None:
            command.declare(self)

    def parse_known_args(self, args=None, namespace=None):
        self.declare()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.declare()
        return super().format_usage()

    def format_help(self) -> str:
        self.declare()
        return super().format_help()


DESCRIPTION = (
    "The classic convolutional networks (LeNet-5, AlexNet, VGG, Inception, ResNet): train them, measure\n"
    "them, predict and explain with them, export, serve and fine-tune them. `cnnzoo COMMAND --help` for one."
)
EXAMPLES = """examples:
  cnnzoo models                                    the networks, their parameters and input sizes
  cnnzoo train lenet5 --data mnist                 train LeNet-5 on the bundled MNIST, printing its test accuracy
  cnnzoo predict lenet5:mnist digit.png            a photo of a digit, with the bundled weights
  cnnzoo export lenet5:mnist --out exported/lenet5 ONNX, TorchScript and safetensors, with a model card
  cnnzoo finetune --from lenet5:glyphs-latin --data glyphs-cyrillic --strategy last:1"""


def build_parser(*, deferred: bool = False) -> argparse.ArgumentParser:
    """The `cnnzoo` parser: one subcommand per `COMMANDS` entry, in its order. With `deferred=True` (what
    `main` uses) each subcommand declares its arguments only when it is used; the parser is the same."""
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="cnnzoo",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the examples, one per line as written
    )
    parser.add_argument("--version", action="version", version=f"cnnzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    sub.required = True
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, command=command)
        if not deferred:
            p.declare()
    return parser


def _import_torch_deferring_ctrl_c() -> None:
    """Import PyTorch (every command needs it) with Ctrl-C held back until the import is over: an interrupt
    inside a C extension's initialisation leaves it half-loaded, and numpy then fails with an ImportError
    traceback instead of a KeyboardInterrupt. A Ctrl-C pressed meanwhile is raised right after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or "torch" in sys.modules:
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started ignoring Ctrl-C (`cnnzoo ... &`): keep it
        import torch  # noqa: F401

        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        import torch  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def _one_line_warnings():
    """A warning cnnzoo itself gives (corrupt images skipped, ...) as one `cnnzoo: warning:` line, without
    Python's file name and source line; other libraries' warnings keep their usual form."""
    import warnings
    from pathlib import Path

    package = str(Path(__file__).parent)
    default = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        if str(filename).startswith(package):
            return f"cnnzoo: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    return formatwarning


def main(argv: list[str] | None = None) -> int:
    import warnings

    previous_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warnings()
    try:
        _import_torch_deferring_ctrl_c()
        parser = build_parser(deferred=True)  # only the command run declares its arguments
        args = parser.parse_args(argv)
        return args.func(args) or 0
    except CnnzooError as e:
        print(f"cnnzoo: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("cnnzoo: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the environment, not the user's input: a full disk, a vanished folder...
        where = f"{e.filename}: " if e.filename else ""
        print(f"cnnzoo: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    raise SystemExit(main())
