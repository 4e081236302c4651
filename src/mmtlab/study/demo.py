"""``mmtlab demo``: the whole pipeline on the synthetic world — generate data, pretrain presets that differ only in
attention, evaluate zero-shot image retrieval on the synthetic flickr test set (and on held-out images of the
training style, evidence that a model which does not transfer still learned), and report."""

from __future__ import annotations

import time
from pathlib import Path

from .grid import load_grid
from .runner import run_study


def run_demo(
    out: str | Path = "demo-out", quick: bool = False, progress: bool = True, jobs: int = 2, threads: int | None = None
) -> Path:
    """Run the ``demo`` (or ``demo-quick``) grid into ``out``, its runs in up to ``jobs`` processes at once
    (:func:`~mmtlab.study.runner.run_study`); returns the report path."""
    out = Path(out)
    grid = load_grid("demo-quick" if quick else "demo")
    start = time.perf_counter()
    also = "".join(f", and on held-out {name} images" for name in grid.eval["also"])
    print(f"mmtlab demo: {len(grid.cells)} pretraining runs ({', '.join(c.preset for c in grid.cells)}), "
          f"zero-shot retrieval on the synthetic flickr test set{also} -> {out}/")  # fmt: skip
    run_study(grid, out, progress=progress, jobs=jobs, threads=threads)
    report = out / "results.md"
    print()
    print(report.read_text())
    print(f"demo finished in {time.perf_counter() - start:.0f} s; report {report}, plot {out / 'attention.png'}")
    return report
