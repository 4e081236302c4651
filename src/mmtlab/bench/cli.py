"""``mmtlab bench`` (torch is imported inside the command)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cpu import add_threads_option
from ..presets import SCALES
from .inputs import SCALE_ALIASES
from .ours import ABLATIONS
from .run import COMPARISONS, COMPILE_MODES, PRECISIONS


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _cmd_bench(args: argparse.Namespace) -> int:
    import sys

    from ..files import write_json
    from .run import format_table, run_bench

    out = Path(args.out) if args.out else None

    def write(results: dict) -> None:
        if out:
            write_json(results, out)

    results = run_bench(
        scale=args.scale, device=args.device, batch=args.batch, score_batch=args.score_batch,
        precision=args.precision, steps=args.steps, warmup=args.warmup,
        compile=args.compile, compare=_csv(args.compare), peers=not args.no_peers, ablate=_csv(args.ablate),
        peak_tflops=args.peak_tflops, threads=args.threads, profile=args.profile,
        log=lambda s: print(s, file=sys.stderr, flush=True), on_row=write,
    )  # fmt: skip
    print(format_table(results))
    write(results)
    if out:
        print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    """Add ``mmtlab bench`` to the ``mmtlab`` parser."""
    p = subparsers.add_parser(
        "bench",
        help="speed against the peers (HF VisualBERT, LXMERT), same machine, same run",
        description="Time our models against HF VisualBERT and LXMERT (train step and ITM scoring), in one process "
        "on one device, interleaved; see docs/performance.md.",
    )
    p.add_argument(
        "--scale",
        default="tiny",
        choices=(*SCALES, *SCALE_ALIASES),
        help="model and input shape: the presets' scale (base: paper; default: tiny)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch", type=int, default=8, help="samples per training step (default 8)")
    p.add_argument(
        "--score-batch",
        type=int,
        default=None,
        help="pairs per scoring call: 16 captions x score-batch/16 images (default: --batch)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="bf16: every contender under bf16 autocast (auto: on CUDA only; fp32 on CPU)",
    )
    p.add_argument("--steps", type=int, default=5, help="timed iterations (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument(
        "--compile",
        nargs="?",
        const="all",
        default="none",
        choices=COMPILE_MODES,
        help="torch.compile every contender (all, the default with no value) or only ours",
    )
    p.add_argument("--compare", default=",".join(COMPARISONS), help="comma-separated: " + ", ".join(COMPARISONS))
    p.add_argument("--no-peers", action="store_true", help="time only our models (e.g. for MFU at a large batch)")
    p.add_argument("--ablate", default="", help="turn off levers of ours (comma-separated): " + ", ".join(ABLATIONS))
    p.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s for MFU (default: 989 on H100/H200)")
    add_threads_option(p)
    p.add_argument("--profile", action="store_true", help="also print and save the top operators of our models' steps")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.set_defaults(func=_cmd_bench)
