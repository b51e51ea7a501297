"""`cnnzoo finetune`, `cnnzoo advise` and `cnnzoo study transfer`: parse, call the library, print."""

from __future__ import annotations

import json

from ..errors import CnnzooError

__all__ = ["add_commands"]


def add_commands(sub, add_train_options, train_overrides) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pretrained model on a dataset (transfer learning)")
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        help="a cnnzoo run or checkpoint, a .pth/.pt/.safetensors weights file, or torchvision:NAME",
    )
    p.add_argument("--data", required=True, help="dataset name or folder:PATH")
    p.add_argument("--strategy", default="head", help="head, last:N, full, gradual or scratch (default head)")
    p.add_argument("--model", help="architecture of a bare weights file (guessed from its keys if omitted)")
    p.add_argument(
        "--layer-decay", type=float, help="full/last:N: each group's rate is the next one's times this"
    )
    p.add_argument("--head-epochs", type=int, default=3, help="gradual: epochs of the head-only phase")
    p.add_argument(
        "--train-bn", action="store_true", help="let frozen BatchNorm layers adapt their statistics"
    )
    p.add_argument("--cache-flip", action="store_true", help="head: cache features of mirrored images too")
    p.add_argument("--samples-per-class", type=int, default=0, help="train on at most N images per class")
    p.add_argument("--out", help="run folder (default runs/finetune-MODEL-DATA-TIME)")
    p.add_argument("--quiet", action="store_true")
    add_train_options(p)
    # --lr also takes a range here: "1e-4:1e-2" spreads rates geometrically from stem to head
    for action in p._actions:
        if action.dest == "lr":
            action.type, action.help = str, 'rate, or a range "LO:HI" spread from stem to head'
    p.set_defaults(func=lambda args: cmd_finetune(args, train_overrides))

    p = sub.add_parser(
        "advise", help="recommend how far back to fine-tune, from measured data size and similarity"
    )
    p.add_argument("--from", dest="source", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--model")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_advise)

    p = sub.add_parser(
        "study", help="reproducible studies; `study transfer` tests the transfer-learning principles"
    )
    p.add_argument("name", choices=["transfer"])
    p.add_argument("--quick", action="store_true", help="a small grid that runs in a few minutes")
    p.add_argument(
        "--out", default="reports/transfer", help="where the report goes (default reports/transfer)"
    )
    p.add_argument("--seeds", type=int, help="seeds per cell (default 3, quick 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--report-only", action="store_true", help="re-render the report from OUT/results.json")
    p.set_defaults(func=cmd_study)


def cmd_finetune(args, train_overrides) -> int:
    from ..engine.config import TrainConfig
    from .finetune import FinetuneConfig, finetune
    from .freeze import parse_lr

    lr = parse_lr(args.lr) if args.lr is not None else None
    overrides = train_overrides(args)
    overrides["lr"] = lr if isinstance(lr, float) else (lr[1] if lr else None)
    settings = {**FINETUNE_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = TrainConfig(model=args.model or "(from the source)", data=args.data, **settings)
    ft = FinetuneConfig(
        source=args.source,
        strategy=args.strategy,
        model=args.model,
        lr_range=lr if isinstance(lr, tuple) else None,
        layer_decay=args.layer_decay,
        head_epochs=args.head_epochs,
        train_bn=args.train_bn,
        cache_flip=args.cache_flip,
        samples_per_class=args.samples_per_class,
    )
    result = finetune(ft, cfg, run_dir=args.out, quiet=args.quiet)
    print(
        f"test accuracy {result.final_acc:.2f}% (best {result.best_acc:.2f}%) with strategy {args.strategy} "
        f"in {result.seconds:.1f} s; run folder {result.run_dir}"
    )
    return 0


# Fine-tuning starts from trained weights: fewer epochs and gentler rates than training from scratch.
FINETUNE_DEFAULTS = dict(epochs=10, lr=0.01, batch_size=64, augment="none")


def cmd_advise(args) -> int:
    from ..data import load_dataset
    from .advise import advise

    splits = load_dataset(args.data, data_dir=args.data_dir)
    advice = advise(args.source, splits, model=args.model, device=args.device, seed=args.seed)
    if args.json:
        print(json.dumps(advice.to_dict(), indent=2))
    else:
        print(advice.describe())
    return 0


def cmd_study(args) -> int:
    from .study import rewrite_report, run_transfer_study

    if args.report_only:
        print(f"report written: {rewrite_report(args.out)}")
        return 0

    if args.seeds is not None and args.seeds < 1:
        raise CnnzooError("--seeds must be at least 1")
    path = run_transfer_study(args.out, quick=args.quick, seeds=args.seeds, device=args.device)
    print(f"report written: {path}")
    return 0
