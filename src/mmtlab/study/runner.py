"""Run a study: build its datasets once, then train and evaluate each cell, skipping finished ones.

Layout of a study directory::

    DIR/grid.yaml                    the grid as run (its resolved form)
    DIR/data/<dataset>/              generated synthetic-world stores
    DIR/cells/<cell>/run/            the training run (resumable)
    DIR/cells/<cell>/results.json    its evaluation (as `mmtlab eval retrieval --out` writes it)
    DIR/cells/<cell>/record.json     written last: the cell is finished
    DIR/results.csv, results.md, *.png   (mmtlab study report DIR)

Several ``mmtlab study`` processes may share one directory (e.g. one per core, ``OMP_NUM_THREADS=1``): each
claims a cell (or a dataset to generate) with a lock file before working on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import write_json
from .grid import Cell, Grid


def dataset_dir(root: Path, name: str) -> Path:
    return root / "data" / name


def prepare_data(grid: Grid, root: Path, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Generate (once) or locate every store the grid uses; returns name -> store directory."""
    from ..data import open_store, synthesize

    paths: dict[str, Path] = {}
    for name, spec in grid.datasets.items():
        if "mix" in spec:
            continue
        if "dir" in spec:
            paths[name] = Path(spec["dir"])
            open_store(paths[name])  # fails early, naming the path, if it is not a store
            continue
        out = dataset_dir(root, name)
        out.parent.mkdir(parents=True, exist_ok=True)
        while not (out / "meta.json").exists():
            with _claim(out.parent / f".{name}.lock") as mine:
                if not mine:  # another study process is generating it
                    time.sleep(1)
                    continue
                log(f"generating dataset {name}: style {spec['style']}, {spec.get('n', 'default')} images, noise {spec.get('noise', 0.0)}")
                synthesize(out, style=spec["style"], n=spec.get("n"), noise=float(spec.get("noise", 0.0)),
                           seed=int(spec.get("seed", 0)), split=spec.get("split"))  # fmt: skip
        paths[name] = out
    return paths


def cell_overrides(grid: Grid, cell: Cell) -> dict[str, Any]:
    overrides = {**grid.overrides, "train.seed": cell.seed}
    spec = grid.datasets[cell.data]
    if "mix" in spec:
        overrides["data.sampling"] = spec.get("sampling", "instance")
        if spec.get("weights") is not None:
            overrides["data.weights"] = list(spec["weights"])
    return overrides


def _train_cell(grid: Grid, cell: Cell, data_dirs: list[Path], run_dir: Path, torchrun: int, progress: bool) -> None:
    """Train (or resume) the cell's run; a run that died before its first checkpoint starts over."""
    from ..train import make_run_config, train
    from ..train.checkpoint import latest_checkpoint

    overrides = cell_overrides(grid, cell)
    overrides.setdefault("train.progress", progress)
    resume = latest_checkpoint(run_dir) is not None
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    if torchrun > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}", "-m", "mmtlab.cli", "--", "train"]
        if resume:
            cmd += ["--resume", str(run_dir)]
        else:
            cmd += ["--preset", cell.preset, "--loss", cell.loss, "--scale", grid.scale, "--out", str(run_dir)]
            for d in data_dirs:
                cmd += ["--data", str(d)]
            cmd += [f"{k}={v}" for k, v in overrides.items()]
        subprocess.run(cmd, check=True)
        return
    cfg = make_run_config(cell.preset, cell.loss, grid.scale, data_dirs=[str(d) for d in data_dirs], overrides=overrides)
    train(cfg, run_dir, resume=resume)


def _evaluate_cell(grid: Grid, run_dir: Path, eval_dir: Path, out: Path, progress: bool) -> dict:
    """``mmtlab eval retrieval`` of the cell's run, its results file at ``out``; scored with the grid's scorer,
    except a cell that never trained its ITM head (the contrastive baseline): ``mmtlab eval``'s default."""
    from ..eval.retrieval import evaluate_run, itm_trained
    from ..train.config import load_run_config

    scorer = grid.eval["scorer"] if itm_trained(load_run_config(run_dir)) else None
    return evaluate_run(run_dir, eval_dir, out=out, split=grid.eval["split"], scorer=scorer,
                        k=int(grid.eval.get("k", 128)), progress=progress)  # fmt: skip


def run_cell(grid: Grid, cell: Cell, root: Path, paths: dict[str, Path], torchrun: int = 0, progress: bool = True) -> dict:
    """Train + evaluate one cell (resuming an interrupted run) and write its record."""
    cdir = root / "cells" / cell.key
    cdir.mkdir(parents=True, exist_ok=True)
    run_dir = cdir / "run"
    data_dirs = [paths[n] for n in grid.train_datasets(cell.data)]
    t0 = time.perf_counter()
    if not (run_dir / "model.safetensors").exists():  # the trainer writes it when the run is complete
        _train_cell(grid, cell, data_dirs, run_dir, torchrun, progress)
    t1 = time.perf_counter()
    results = _evaluate_cell(grid, run_dir, paths[grid.eval["data"]], cdir / "results.json", progress)
    record = {
        **dataclasses.asdict(cell),
        "key": cell.key,
        "results": results,
        "train_seconds": round(t1 - t0, 1),
        "eval_seconds": round(time.perf_counter() - t1, 1),
        "train_samples_per_s": _throughput(run_dir),
        "run": str(run_dir),
    }
    write_json(record, cdir / "record.json")
    shutil.rmtree(cdir / "results.json.scores", ignore_errors=True)  # the resumable score chunks
    return record


def _throughput(run_dir: Path) -> float | None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()] if (run_dir / "metrics.jsonl").exists() else []
    rates = [r["samples_per_s"] for r in rows if isinstance(r.get("samples_per_s"), (int, float))]
    return round(sum(rates) / len(rates), 1) if rates else None


def load_records(root: Path) -> dict[str, dict]:
    records = {}
    for path in sorted((root / "cells").glob("*/record.json")):
        rec = json.loads(path.read_text())
        records[rec["key"]] = rec
    return records


def run_study(grid: Grid, root: str | Path, torchrun: int = 0, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Run every unfinished cell of ``grid`` under ``root`` and write the report; returns the records."""
    from .report import write_report

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.yaml").write_text(yaml.safe_dump(grid_to_dict(grid), sort_keys=False))
    paths = prepare_data(grid, root, log)
    records = load_records(root)
    cells = grid.cells
    for i, cell in enumerate(cells, 1):
        if cell.key in records:
            log(f"[{i}/{len(cells)}] {cell.key}: done, skipped")
            continue
        with _claim(root / "cells" / cell.key / "lock") as mine:
            if not mine:
                log(f"[{i}/{len(cells)}] {cell.key}: running in another process, skipped")
                continue
            record = root / "cells" / cell.key / "record.json"
            if record.exists():  # another process finished it since we listed the records
                log(f"[{i}/{len(cells)}] {cell.key}: done, skipped")
                continue
            log(f"[{i}/{len(cells)}] {cell.key}: training + evaluation")
            records[cell.key] = run_cell(grid, cell, root, paths, torchrun, progress)
        r1 = records[cell.key]["results"]["text_to_image"]["R@1"]
        log(f"[{i}/{len(cells)}] {cell.key}: text->image R@1 {r1:.1f}%")
    records = load_records(root)  # cells other processes finished meanwhile
    write_report(grid, root, records)
    return records


@contextlib.contextmanager
def _claim(lock: Path):
    """Claim a cell or a dataset, so several `mmtlab study` processes can share a study directory (each runs
    different cells). The claim is an exclusive ``flock`` on the lock file, which the kernel drops when its
    process dies: a claim left by a killed process is free at once, and no two processes can take it over
    together. The file holds the owner's pid (for people) and is removed on release."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock_file(lock)
    if fd is None:
        yield False
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield True
    finally:
        lock.unlink(missing_ok=True)  # before unlocking: a process that opens the path next gets a new file
        os.close(fd)


def _lock_file(lock: Path) -> int | None:
    """An open descriptor holding the exclusive lock of the file now at ``lock``, or None when another process
    holds it. A file unlinked by its releasing owner between our open and our lock is not ours: retried."""
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def grid_to_dict(grid: Grid) -> dict:
    """The grid in its YAML form (as :func:`mmtlab.study.grid.parse_grid` reads it)."""
    comparisons = {}
    for comp in grid.comparisons:
        seen = []
        for c in comp.cells:
            item = {"data": c.data, "preset": c.preset, "loss": c.loss}
            if item not in seen:
                seen.append(item)
        comparisons[comp.name] = {"axis": comp.axis, "extra": seen}
    return {
        "name": grid.name, "scale": grid.scale, "seeds": grid.seeds, "overrides": grid.overrides, "eval": grid.eval,
        "datasets": grid.datasets, "comparisons": comparisons,
        "claims": [dataclasses.asdict(c) for c in grid.claims],
    }  # fmt: skip
