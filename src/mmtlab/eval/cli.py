"""``mmtlab eval retrieval`` (torch is imported inside the command; ``mmtlab finetune`` is training: :mod:`mmtlab.train.cli`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..commands import task_parser
from ..cpu import add_threads_option
from .names import SCORERS

EVAL_EXAMPLE = """examples:
  mmtlab eval retrieval --run runs/merged --data data/flickr --out runs/merged/flickr.json
  mmtlab eval retrieval --run runs/merged --data data/flickr --scorer rerank --k 128 --shortlist runs/baseline --out r.json
  mmtlab eval retrieval --run runs/baseline --data data/flickr --scorer dual --out b.json
  mmtlab eval retrieval --run runs/merged --data data/photos --max-images 200 --out quick.json   # a quick number
  torchrun --nproc_per_node 8 -m mmtlab.cli -- eval retrieval --run ...   # captions split over the GPUs
  (the `--` keeps torchrun from reading --run as its own --run-path)

The protocol of the paper is the default: the pretrained checkpoint, no fine-tuning, every pair ranked by the
ITM match probability (scorer exhaustive; a dual-encoder run such as preset baseline is scored by cosine
similarity, scorer dual). Score chunks are kept in OUT.scores/; rerunning an interrupted
evaluation resumes there (--fresh starts over)."""


# mmtlab eval retrieval: group, its help, task, its help
EVAL_TASK = (
    "eval",
    "evaluate a run (zero-shot retrieval)",
    "retrieval",
    "image-text retrieval: R@1/5/10, median and mean rank",
)


def register(subparsers) -> None:
    """Add ``mmtlab eval`` to the ``mmtlab`` parser."""
    p = task_parser(subparsers, *EVAL_TASK, EVAL_EXAMPLE)
    p.add_argument("--run", required=True, metavar="RUN", help="a finished run directory (mmtlab train / finetune)")
    p.add_argument("--data", required=True, metavar="DIR", help="an mmtlab store (e.g. a synthetic flickr test set)")
    p.add_argument(
        "--split", default=None, help="split of the store to evaluate (default: the store's only split, else test)"
    )
    p.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="a quick number: N images of the split drawn with --seed, with all their captions (recorded "
                   "in the results as subsample)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-images draw (default 0)")
    p.add_argument(
        "--scorer",
        default=None,
        choices=SCORERS,
        help="exhaustive: every pair through the ITM head (the paper's protocol); rerank: shortlist by "
        "embeddings, ITM on the top k; dual: embedding cosine only (default: exhaustive, or dual for "
        "a run that trained no ITM head, e.g. preset baseline)",
    )
    p.add_argument("--k", type=int, default=128, help="rerank: shortlist size per query (default 128)")
    p.add_argument(
        "--shortlist",
        default=None,
        metavar="RUN2",
        help="rerank: a dual-encoder run (e.g. preset baseline) whose embeddings make the shortlist",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="pairs per forward pass (default 4096 on GPU, 512 on CPU)"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the per-pair layers with weights frozen (~1.2x faster per pair after ~25 s of "
        "compiling: for long evaluations)",
    )
    p.add_argument("--fresh", action="store_true", help="delete OUT.scores/ from an earlier evaluation first")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--out", required=True, metavar="FILE", help="results JSON (fields: docs/design.md, 'Results files')"
    )
    add_threads_option(p)
    p.set_defaults(func=_cmd_eval_retrieval)


def _cmd_eval_retrieval(args: argparse.Namespace) -> int:
    import shutil

    from .metrics import EvalError
    from .retrieval import check_results_path, evaluate_run, results_table

    if args.k < 1:
        raise EvalError(f"--k {args.k}: the shortlist needs at least 1 item")
    if args.batch_size is not None and args.batch_size < 1:
        raise EvalError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.shortlist and args.scorer != "rerank":
        raise EvalError("--shortlist only applies to --scorer rerank")
    check_results_path(args.out)  # before --fresh deletes anything, and before any work
    work = Path(args.out + ".scores")
    if args.fresh and work.exists():
        shutil.rmtree(work)
    result = evaluate_run(
        args.run, args.data, args.out, split=args.split, scorer=args.scorer, k=args.k, shortlist=args.shortlist,
        batch_size=args.batch_size, device=args.device, progress=not args.no_progress, compile=args.compile,
        max_images=args.max_images, seed=args.seed,
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(results_table(result))
        print(f"wrote {args.out}")
    return 0
