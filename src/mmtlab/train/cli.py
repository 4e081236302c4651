"""``mmtlab train``: pretrain a preset with a loss set on one or more stores (also under ``torchrun``);
``mmtlab finetune retrieval``: continue a pretrained run with hard-negative ITM (:mod:`mmtlab.train.finetune`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..commands import task_parser
from ..cpu import add_threads_option
from ..presets import SCALES

EXAMPLE = """examples:
  mmtlab train --preset merged --loss itm+mlm+mrm --data data/coco --scale tiny --out runs/merged
  mmtlab train --preset merged --data data/coco data/cc data.sampling=dataset train.steps=2000 --out runs/mix
  mmtlab train --resume runs/merged train.steps=4000          # continue (or extend) a run
  torchrun --nproc_per_node 2 -m mmtlab.cli -- train ...       # DistributedDataParallel, same command"""


FINETUNE_EXAMPLE = """examples:
  mmtlab data synth --style flickr --split train --seed 1 --out data/flickr-train
  mmtlab finetune retrieval --run runs/merged --data data/flickr-train --out runs/merged-ft train.steps=300
  mmtlab eval retrieval --run runs/merged-ft --data data/flickr --out runs/merged-ft/flickr.json   # "fine-tuned"
  mmtlab finetune retrieval --resume runs/merged-ft                                                # continue"""


# mmtlab finetune retrieval: group, its help, task, its help
FINETUNE_TASK = (
    "finetune",
    "fine-tune a run for a task (the paper's -ft models)",
    "retrieval",
    "ITM fine-tuning with in-batch hard negatives",
)


def register(subparsers) -> None:
    """Add ``mmtlab train`` and ``mmtlab finetune`` to the ``mmtlab`` parser."""
    p = subparsers.add_parser(
        "train", help="pretrain a model (losses, checkpoints, resume, DDP)", epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--preset", default=None, help="architecture (see `mmtlab presets`); default merged")
    p.add_argument("--loss", default=None, help="loss set; default: the preset's (itm+mlm+mrm for most)")
    p.add_argument(
        "--data",
        action="extend",
        nargs="+",
        default=[],
        metavar="DIR",
        help="a store; several (--data A B, or --data A --data B) for a mixture",
    )
    p.add_argument("--val", default=None, metavar="DIR", help="held-out store for the ITM accuracy")
    p.add_argument("--scale", default=None, choices=SCALES, help="model scale (default paper)")
    p.add_argument("--out", default=None, metavar="RUN", help="new run directory")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue the run in RUN from its checkpoint")
    add_threads_option(p)
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=2000 loss.weights.mlm=0.5"
    )
    p.set_defaults(func=_cmd_train)

    p = task_parser(subparsers, *FINETUNE_TASK, FINETUNE_EXAMPLE)
    p.add_argument("--run", default=None, metavar="RUN", help="the pretrained run to start from")
    p.add_argument("--data", default=None, metavar="DIR", help="a store (its --split is read)")
    p.add_argument("--split", default="train", help="the split of the store to train on (default train)")
    p.add_argument("--out", default=None, metavar="RUN2", help="the new (fine-tuned) run directory")
    p.add_argument("--resume", default=None, metavar="RUN2", help="continue an interrupted fine-tuning run")
    add_threads_option(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="train settings, e.g. train.steps=300 train.lr=5e-5 train.batch_size=32",
    )
    p.set_defaults(func=_cmd_finetune_retrieval)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..typed_config import parse_overrides
    from .config import load_run_config, make_run_config

    # `--data A B key=value`: argparse hands the overrides after a list of stores to --data
    moved = [d for d in args.data if "=" in d and not Path(d).exists()]
    args.data = [d for d in args.data if d not in moved]
    overrides = parse_overrides([*moved, *args.overrides])
    if args.resume:
        run = Path(args.resume)
        if args.out and Path(args.out) != run:
            raise ConfigError(f"--resume {run} continues that run in place; drop --out {args.out}")
        saved = load_run_config(run)
        given = {"--preset": args.preset, "--loss": args.loss, "--scale": args.scale, "--val": args.val}
        given = {k: v for k, v in given.items() if v is not None}
        if args.data or given:
            raise ConfigError(
                f"--resume takes the run's own preset, loss and data; drop {', '.join([*given, *(['--data'] if args.data else [])])}"
            )
        cfg = _resumed_config(saved, overrides)
        out, resume = run, True
    else:
        if not args.out:
            raise ConfigError("give --out RUN (a new run directory) or --resume RUN")
        if not args.data:
            raise ConfigError("give at least one --data DIR (an mmtlab store; create one with `mmtlab data synth`)")
        cfg = make_run_config(
            args.preset or "merged", args.loss, args.scale or "paper", args.data, overrides, val_dir=args.val
        )
        out, resume = Path(args.out), False

    from .trainer import train

    train(cfg, out, resume=resume, report=_report)
    if os.environ.get("RANK", "0") == "0":  # once under torchrun
        print(f"finished: {out / 'model.safetensors'}")
    return 0


def _report(line: str) -> None:
    """What the trainer says before its first step (which images of which split it reads)."""
    print(line, flush=True)


def _resumed_config(saved, overrides: dict):
    """The saved run config with the (resume-safe) overrides applied; the trainer checks which may change."""
    from ..run.config import check_run_config
    from ..typed_config import apply_overrides

    cfg = apply_overrides(saved, overrides)
    check_run_config(cfg)
    return cfg


def _cmd_finetune_retrieval(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..typed_config import parse_overrides
    from .finetune import finetune_retrieval

    overrides = parse_overrides(args.overrides)
    if args.resume:
        if args.run or args.data or (args.out and Path(args.out) != Path(args.resume)):
            raise ConfigError(
                "--resume RUN2 continues that fine-tuning run with its own settings; drop --run/--data/--out"
            )
        out = finetune_retrieval(None, None, args.resume, overrides=overrides, resume=True, report=_report)
    else:
        missing = [f for f, v in (("--run", args.run), ("--data", args.data), ("--out", args.out)) if not v]
        if missing:
            raise ConfigError(f"give {', '.join(missing)} (or --resume RUN2)")
        out = finetune_retrieval(args.run, args.data, args.out, split=args.split, overrides=overrides, report=_report)
    print(f"finished: {Path(out) / 'model.safetensors'}  (evaluate with `mmtlab eval retrieval --run {out} ...`)")
    return 0
