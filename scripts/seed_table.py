"""One table per comparison over seeds run in separate study directories (issue 20): text->image R@1 of every seed,
their mean ± std and R@10, then each claim's verdict with the margin rule of ``mmtlab study report``
(:func:`mmtlab.study.report.claim_lines`: max of 1 point and twice the larger seed std).

Reads the ``results.csv`` that ``mmtlab study report`` writes (one row per finished cell), from any number of study
directories or files, e.g. a seed run this session beside one whose cell directories are gone but whose report was
kept in docs/. Not a test:

    python scripts/seed_table.py --grid paper-small --seeds 0,1 \\
        docs/paper-small/results.csv docs/paper-small/session10/results.csv docs/paper-small/seed1-results.csv
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from mmtlab.study.grid import load_grid
from mmtlab.study.report import METRICS, claim_lines


def read_records(paths: list[Path]) -> dict[str, dict]:
    """Cell records (the fields the report's verdicts read) from results.csv files; a later file wins on a key."""
    records = {}
    for path in paths:
        for row in csv.DictReader(open(path)):
            results: dict = {"n_images": int(row["n_images"]), "scorer": row["scorer"]}
            for direction, metric in METRICS:
                results.setdefault(direction, {})[metric] = float(row[f"{direction}/{metric}"])
            records[row["key"]] = {k: row[k] for k in ("key", "data", "preset", "loss")} | {
                "seed": int(row["seed"]),
                "results": results,
            }
    return records


def tables(grid, records: dict[str, dict]) -> str:
    seeds = grid.seeds
    lines = []
    for comp in grid.comparisons:
        head = ["data", "preset", "loss", *(f"R@1 s{s}" for s in seeds), "R@1 mean ± std", "R@10 mean"]
        lines += ["", f"### {comp.name} (varying {comp.axis})", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows: dict[tuple, dict[int, dict]] = {}
        for cell in comp.cells:
            if cell.key in records:
                rows.setdefault((cell.data, cell.preset, cell.loss), {})[cell.seed] = records[cell.key]["results"]
        for (d, p, lo), by_seed in rows.items():
            r1 = [by_seed[s]["text_to_image"]["R@1"] for s in seeds if s in by_seed]
            r10 = [by_seed[s]["text_to_image"]["R@10"] for s in seeds if s in by_seed]
            per_seed = [f"{by_seed[s]['text_to_image']['R@1']:.1f}" if s in by_seed else "—" for s in seeds]
            std = statistics.stdev(r1) if len(r1) > 1 else 0.0
            mean = f"**{statistics.fmean(r1):.1f}** ± {std:.1f}"
            lines.append(
                f"| `{d}` | `{p}` | `{lo}` | " + " | ".join([*per_seed, mean, f"{statistics.fmean(r10):.1f}"]) + " |"
            )
    lines += ["", "### The paper's claims", "", *claim_lines(grid, records)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", required=True, help="a shipped study name or a grid YAML")
    ap.add_argument("--seeds", required=True, help="comma-separated seeds, e.g. 0,1")
    ap.add_argument("csv", nargs="+", type=Path, help="results.csv files or study directories holding one")
    args = ap.parse_args()
    paths = [p / "results.csv" if p.is_dir() else p for p in args.csv]
    grid = load_grid(args.grid, [int(s) for s in args.seeds.split(",")])
    print(tables(grid, read_records(paths)), end="")


if __name__ == "__main__":
    main()
