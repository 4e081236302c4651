"""Run a study: train and evaluate each unfinished cell, generating the datasets it needs first (once per study).

The directory's layout is :mod:`mmtlab.study.layout`. Several processes may share one directory (``mmtlab study
--jobs N`` starts N through :mod:`mmtlab.study.jobs`, each running :func:`work`; separate ``mmtlab study``
commands may join): each claims a cell (or a dataset to generate) with a lock file before working on it.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..files import write_json
from ..train.metrics import mean_throughput
from .grid import Cell, Grid
from .jobs import run_jobs
from .layout import dataset_dir, finished, load_records, record_path, unscored
from .report import write_report


def check_given_stores(grid: Grid) -> None:
    """Fail early, naming the path, when a dataset given as a directory is not a store."""
    from ..data import open_store

    for spec in grid.datasets.values():
        if "dir" in spec:
            open_store(Path(spec["dir"]))


def store_path(grid: Grid, root: Path, name: str, log: Callable[[str], None] = print) -> Path | None:
    """The store of dataset ``name``: its given directory, or the one generated under ``root``, which this
    process generates now unless another process is (then None: ask again later)."""
    spec = grid.datasets[name]
    if "dir" in spec:
        return Path(spec["dir"])
    out = dataset_dir(root, name)
    if (out / "meta.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _claim(out.parent / f".{name}.lock") as mine:
        if not mine:
            return None
        if not (out / "meta.json").exists():  # not finished by another process since we looked
            from ..data import synthesize
            from ..data.synth import REGIONS

            log(
                f"generating dataset {name}: style {spec['style']}, {spec.get('n', 'default')} images, noise {spec.get('noise', 0.0)}"
            )
            synthesize(out, style=spec["style"], n=spec.get("n"), noise=float(spec.get("noise", 0.0)),
                       seed=int(spec.get("seed", 0)), split=spec.get("split"), regions=int(spec.get("regions", REGIONS)))  # fmt: skip
    return out


def cell_stores(grid: Grid, root: Path, cell: Cell, log: Callable[[str], None] = print) -> dict[str, Path] | None:
    """name -> store of every dataset the cell trains and is evaluated on, or None while another process still
    generates one of them (each missing one that nobody generates is generated here first)."""
    if record_path(root, cell.key).exists():  # trained and evaluated: only held-out sets added since are scored
        names = dict.fromkeys(unscored(root, cell.key, grid.eval["also"]))
    else:
        names = dict.fromkeys([*grid.train_datasets(cell.data), grid.eval["data"], *grid.eval["also"]])
    paths = {name: store_path(grid, root, name, log) for name in names}
    return None if None in paths.values() else paths  # type: ignore[return-value]


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
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # a free port per cell: studies side by side do not fight over 29500
            f"--nproc_per_node={torchrun}",
            "-m",
            "mmtlab.cli",
            "--",
            "train",
        ]
        if resume:
            cmd += ["--resume", str(run_dir)]
        else:
            cmd += ["--preset", cell.preset, "--loss", cell.loss, "--scale", grid.scale, "--out", str(run_dir)]
            for d in data_dirs:
                cmd += ["--data", str(d)]
            cmd += [f"{k}={v}" for k, v in overrides.items()]
        subprocess.run(cmd, check=True)
        return
    cfg = make_run_config(
        cell.preset, cell.loss, grid.scale, data_dirs=[str(d) for d in data_dirs], overrides=overrides
    )
    train(cfg, run_dir, resume=resume)


def _evaluate_cell(grid: Grid, run_dir: Path, eval_dir: Path, out: Path, progress: bool) -> dict:
    """``mmtlab eval retrieval`` of the cell's run, its results file at ``out``; scored with the grid's scorer,
    except a cell that never trained its ITM head (the contrastive baseline): ``mmtlab eval``'s default."""
    from ..eval.retrieval import evaluate_run, itm_trained
    from ..run.config import load_run_config

    scorer = grid.eval["scorer"] if itm_trained(load_run_config(run_dir)) else None
    return evaluate_run(run_dir, eval_dir, out=out, split=grid.eval["split"], scorer=scorer,
                        k=int(grid.eval.get("k", 128)), progress=progress)  # fmt: skip


def run_cell(
    grid: Grid, cell: Cell, root: Path, paths: dict[str, Path], torchrun: int = 0, progress: bool = True
) -> dict:
    """Train + evaluate one cell (resuming an interrupted run) and write its record. A cell finished before a
    held-out set was added to the grid's ``eval.also`` is scored on the sets its record lacks, nothing else."""
    cdir = root / "cells" / cell.key
    cdir.mkdir(parents=True, exist_ok=True)
    run_dir = cdir / "run"
    path = record_path(root, cell.key)
    if path.exists():
        record = json.loads(path.read_text())
        record.setdefault("also", {})
        start = time.perf_counter()
    else:
        t0 = time.perf_counter()
        if not (run_dir / "model.safetensors").exists():  # the trainer writes it when the run is complete
            data_dirs = [paths[n] for n in grid.train_datasets(cell.data)]
            _train_cell(grid, cell, data_dirs, run_dir, torchrun, progress)
        start = time.perf_counter()
        record = {
            **dataclasses.asdict(cell),
            "key": cell.key,
            "results": _evaluate_cell(grid, run_dir, paths[grid.eval["data"]], cdir / "results.json", progress),
            "also": {},
            "train_seconds": round(start - t0, 1),
            "eval_seconds": 0.0,
            "train_samples_per_s": _round(mean_throughput(run_dir)),
            "run": str(run_dir),
        }
    outs = {name: cdir / f"results-{name}.json" for name in grid.eval["also"] if name not in record["also"]}
    record["also"].update(
        {name: _evaluate_cell(grid, run_dir, paths[name], out, progress) for name, out in outs.items()}
    )
    record["eval_seconds"] = round(record["eval_seconds"] + time.perf_counter() - start, 1)
    write_json(record, path)
    for out in (cdir / "results.json", *outs.values()):
        shutil.rmtree(out.with_name(out.name + ".scores"), ignore_errors=True)  # the resumable score chunks
    return record


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def run_study(
    grid: Grid,
    root: str | Path,
    torchrun: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    threads: int | None = None,
) -> dict[str, dict]:
    """Run every unfinished cell of ``grid`` under ``root`` and write the report; returns the records.

    ``jobs`` > 1 runs up to that many worker processes (:mod:`mmtlab.study.jobs`) with ``threads`` torch threads
    each (default: the available cores shared out); ``jobs=1`` works in this process."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.yaml").write_text(yaml.safe_dump(grid_to_dict(grid), sort_keys=False))
    check_given_stores(grid)
    if jobs > 1:
        run_jobs(work, grid, root, jobs, threads=threads, progress=progress, log=log)
    else:
        work(grid, root, torchrun, progress, log)
    records = load_records(root)  # with the cells other processes finished meanwhile
    write_report(grid, root, records)
    return records


def work(
    grid: Grid,
    root: Path,
    torchrun: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    log_skips: bool = True,
    started: Callable[[Cell], None] = lambda cell: None,
) -> None:
    """Train and evaluate every unfinished cell that no other process holds, generating the datasets it needs
    first. A cell whose data another process is still generating waits while the others go ahead. Any number
    of processes may work on one study directory: cells and generated datasets are claimed with lock files.
    ``started(cell)`` is called when this process takes a cell; ``log_skips`` logs the cells it leaves."""
    cells = grid.cells
    waiting = list(enumerate(cells, 1))
    while waiting:
        later = []
        for i, cell in waiting:
            tag = f"[{i}/{len(cells)}] {cell.key}"
            if finished(root, cell.key, grid.eval["also"]):
                if log_skips:
                    gone = unscored(root, cell.key, grid.eval["also"])  # left only when the model was deleted
                    note = f" (model.safetensors deleted: not scored on {', '.join(gone)})" if gone else ""
                    log(f"{tag}: done, skipped{note}")
                continue
            paths = cell_stores(grid, root, cell, log)
            if paths is None:  # another process is generating its data
                later.append((i, cell))
                continue
            with _claim(root / "cells" / cell.key / "lock") as mine:
                done = finished(root, cell.key, grid.eval["also"])
                if not mine or done:  # another process runs it, or finished it since we looked
                    if log_skips:
                        log(f"{tag}: {'done' if done else 'running in another process'}, skipped")
                    continue
                started(cell)
                held_out = record_path(root, cell.key).exists()  # only a held-out set added since it finished
                log(f"{tag}: {'evaluation on the new eval.also sets' if held_out else 'training + evaluation'}")
                record = run_cell(grid, cell, root, paths, torchrun, progress)
            checks = "".join(f", on {n} {record['also'][n]['text_to_image']['R@1']:.1f}%" for n in grid.eval["also"])
            log(f"{tag}: text->image R@1 {record['results']['text_to_image']['R@1']:.1f}%{checks}")
        if later:
            time.sleep(1)
        waiting = later


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
