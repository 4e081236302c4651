"""``mmtlab study`` and ``mmtlab demo``."""

from __future__ import annotations

import argparse

from ..cpu import add_threads_option


def _cmd_study(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import ConfigError
    from ..files import load_yaml
    from .grid import load_grid, parse_grid
    from .report import write_report
    from .runner import run_study

    target = list(args.target)
    if target and target[0] == "report":
        if len(target) != 2:
            raise ConfigError("usage: mmtlab study report DIR")
        root = Path(target[1])
        if not (root / "grid.yaml").is_file():
            raise ConfigError(f"{root} is not a study directory (no grid.yaml)")
        print(write_report(parse_grid(load_yaml(root / "grid.yaml")), root).read_text())
        return 0
    if len(target) + bool(args.grid) != 1:
        raise ConfigError("give one study name (e.g. paper-small) or --grid GRID.yaml")
    if not args.out:
        raise ConfigError("--out DIR is required")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    grid = load_grid(args.grid or target[0], seeds=seeds)
    if args.torchrun and (args.jobs or 1) > 1:
        raise ConfigError("--torchrun N trains one cell at a time on N processes; drop --jobs")
    jobs = default_jobs(args.jobs, args.torchrun)
    run_study(grid, args.out, torchrun=args.torchrun, progress=not args.no_progress, jobs=jobs, threads=args.threads)
    print((Path(args.out) / "results.md").read_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    jobs = default_jobs(args.jobs)
    run_demo(args.out, quick=args.quick, progress=not args.no_progress, jobs=jobs, threads=args.threads)
    return 0


def default_jobs(jobs: int | None, torchrun: int = 0) -> int:
    """``--jobs``, checked; by default one job per available core (one, under ``--torchrun``)."""
    from ..config import ConfigError
    from ..cpu import available_cores

    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give a positive number of jobs")
    return jobs or (1 if torchrun else available_cores())


def _add_jobs_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="cells trained and evaluated at once, each in its own process (default: one per available "
        "core; 1 = in this process)",
    )
    add_threads_option(p, "each job (default with --jobs: the available cores shared out between the jobs)")


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="run a grid over data x attention x loss, or regenerate its report")
    p.add_argument(
        "target", nargs="*", metavar="NAME | report DIR", help="a shipped study (paper-small, paper) or `report DIR`"
    )
    p.add_argument(
        "--grid",
        help="a grid YAML file instead of a shipped study: the flat form `data: [coco, cc]`, "
        "`attention: [merged, single-modality]`, `loss: [itm+mlm]` (cross product), or "
        "comparisons as in the shipped grids (format: mmtlab/study/grid.py)",
    )
    p.add_argument("--out", help="study directory (finished cells are skipped on re-run)")
    p.add_argument("--seeds", help="comma-separated seeds, overriding the grid's (e.g. 0,1,2)")
    p.add_argument(
        "--torchrun", type=int, default=0, metavar="N", help="train each cell as a torchrun job on N processes"
    )
    _add_jobs_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_study)

    p = subparsers.add_parser("demo", help="the whole pipeline on the synthetic world (minutes on a laptop CPU)")
    p.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a four-minute version on a smaller world (6 regions per image, 500 steps x 48 pairs)",
    )
    _add_jobs_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)
