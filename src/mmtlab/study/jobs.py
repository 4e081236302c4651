"""``mmtlab study --jobs N``: the cells of a study in N worker processes on one machine, with one display.

Each job is a fresh Python process (multiprocessing's ``spawn`` start method), so that it sets its CPU policy
(:func:`mmtlab.cpu.apply_cpu_policy`) before it imports torch: by default the available cores shared out, one
torch thread per job when there are as many cells as cores. A job runs :func:`mmtlab.study.runner.work`, the
claim loop several ``mmtlab study`` commands use on one directory, so it generates the datasets its cells need,
trains, evaluates and writes each record itself; what it does reaches the parent over a queue. On Linux a job
dies with the parent (``PR_SET_PDEATHSIG``): a killed study leaves no job holding a cell, and the same command
resumes it (finished cells are skipped, runs resume from their checkpoints, evaluations from their score chunks).
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from ..cpu import apply_cpu_policy, available_cores
from ..errors import MmtlabError, one_line, user_fixable
from .grid import Grid
from .layout import finished, model_path

STATUS_EVERY = 30.0  # seconds between status lines when the display is not a terminal (as progress bars)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class JobError(MmtlabError):
    """A job stopped on an error the user can fix; the message names the cell."""


def run_jobs(
    work: Callable[..., None],
    grid: Grid,
    root: Path,
    jobs: int,
    threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> None:
    """Run the unfinished cells of ``grid`` under ``root`` in up to ``jobs`` worker processes with ``threads``
    torch threads each (default: the available cores shared out, at least 1); returns when all have exited.
    ``work`` is the claim loop each process runs (:func:`mmtlab.study.runner.work`, passed in by the runner,
    which imports this module; a module-level function, so a spawned process can unpickle it)."""
    cells = grid.cells
    pending = [c for c in cells if not finished(root, c.key, grid.eval["also"])]
    for i, cell in enumerate(cells, 1):
        if cell not in pending:
            log(f"[{i}/{len(cells)}] {cell.key}: done, skipped")
    if not pending:
        return
    n = min(jobs, len(pending))
    threads = threads or max(1, available_cores() // n)
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    procs = {j: ctx.Process(target=_job, args=(work, grid, root, j, threads, events, os.getpid()), name=f"study job {j}")
             for j in range(1, n + 1)}  # fmt: skip
    log(f"{len(pending)} cells in {n} jobs, {threads} torch thread{'s' * (threads > 1)} each")
    for p in procs.values():
        p.start()
    try:
        with Display(grid, root, n, live=progress and sys.stderr.isatty(), status=progress, log=log) as display:
            _follow(procs, events, display)
        for p in procs.values():  # each job said it is done: let it exit by itself, its clean-up included (a job
            p.join(timeout=60)  # terminated here would leave its semaphores to the resource tracker's warnings)
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
        for p in procs.values():
            p.join()
    for i, cell in enumerate(cells, 1):
        if not finished(root, cell.key, grid.eval["also"]):
            log(f"[{i}/{len(cells)}] {cell.key}: running in another process, skipped")


def _follow(procs: dict[int, multiprocessing.Process], events, display: Display) -> None:
    """Show the jobs' events until each job has said it is done; raise on the first job that failed."""
    running = set(procs)
    while running:
        try:
            kind, job, payload = events.get(timeout=0.5)
        except queue.Empty:
            dead = [j for j in running if procs[j].exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(
                    f"study job {dead[0]} exited with code {procs[dead[0]].exitcode} (see above)"
                ) from None
            display.refresh()
            continue
        if kind == "exit":
            running.discard(job)
        elif kind == "error":
            message, fixable = payload
            raise (JobError if fixable else RuntimeError)(f"study job {job}: {message}")
        else:
            display.event(kind, job, payload)


def _job(work: Callable[..., None], grid: Grid, root: Path, job: int, threads: int, events, parent: int) -> None:
    """One job: the CPU policy before torch is imported, then the claim loop, each step reported to the parent."""
    _die_with_parent(parent)
    apply_cpu_policy(threads)
    current = {"cell": "data"}

    def started(cell) -> None:
        current["cell"] = cell.key
        events.put(("start", job, cell.key))

    try:
        work(grid, root, progress=False, log=lambda line: events.put(("log", job, line)), log_skips=False,
             started=started)  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        return
    except Exception as e:
        events.put(("error", job, (f"{current['cell']}: {one_line(e)}", user_fixable(e))))
        if not user_fixable(e):
            raise  # a bug: its traceback goes to stderr
        return
    events.put(("exit", job, None))


def _die_with_parent(parent: int) -> None:
    """Ask Linux to end this process when its parent dies (nothing elsewhere); exit if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # no prctl: not Linux
        return
    if os.getppid() != parent:
        os._exit(1)


class Display:
    """One display for all jobs: a line per event (cell taken, dataset generated, R@1), and either live bars on
    a terminal (rich: the study's cells, and per job its cell's training steps, read from the run's
    ``metrics.jsonl``, then its evaluation) or, in a log file, a status line every ``STATUS_EVERY`` seconds."""

    def __init__(self, grid: Grid, root: Path, jobs: int, live: bool, status: bool, log: Callable[[str], None]):
        self.root, self.log, self.status = root, log, status
        self.also = grid.eval["also"]
        self.keys = [c.key for c in grid.cells]
        self.total = len(self.keys)
        self.finished: set[str] = set()  # cells seen finished (they stay so): their records are not read again
        self.cells: dict[int, str] = {}  # job -> the cell it runs
        self.steps: dict[str, int] = {}  # cell -> its run's train.steps
        self.last_status = time.monotonic()
        self.bars = self.rows = None
        if live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
            self.bars = Progress(*columns)
            self.overall = self.bars.add_task("cells", total=self.total, completed=self._done())
            self.rows = {j: self.bars.add_task(f"job {j}", total=None) for j in range(1, jobs + 1)}

    def __enter__(self) -> Display:
        if self.bars:
            self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bars:
            self.refresh()
            self.bars.stop()

    def event(self, kind: str, job: int, payload: str) -> None:
        """A job's event: ``start`` (payload: the cell's key) or ``log`` (a line to show)."""
        if kind == "start":
            self.cells[job] = payload
        else:
            self.log(f"{payload}  (job {job})")
        self.refresh()

    def refresh(self) -> None:
        """Redraw the bars from the runs' files, or write the status line when it is due."""
        if self.bars:
            self.bars.update(self.overall, completed=self._done())
            for job, key in self.cells.items():
                phase, step, total = self._cell_state(key)
                self.bars.update(self.rows[job], description=f"job {job}: {key} {phase}", completed=step, total=total)
        elif self.status and self.cells and time.monotonic() - self.last_status >= STATUS_EVERY:
            self.last_status = time.monotonic()
            parts = []
            for job, key in sorted(self.cells.items()):
                phase, step, total = self._cell_state(key)
                parts.append(f"job {job}: {key} {phase}" + (f" {step}/{total}" if total else ""))
            self.log(f"{self._done()}/{self.total} cells done; " + "; ".join(parts))

    def _done(self) -> int:
        return sum(self._finished(key) for key in self.keys)

    def _finished(self, key: str) -> bool:
        if key not in self.finished and finished(self.root, key, self.also):
            self.finished.add(key)
        return key in self.finished

    def _cell_state(self, key: str) -> tuple[str, int, int | None]:
        """(phase, steps trained, steps in all) of a cell, from its run directory."""
        run = self.root / "cells" / key / "run"
        if key not in self.steps and (run / "config.yaml").exists():
            try:
                self.steps[key] = int(yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"])
            except (yaml.YAMLError, KeyError, TypeError):  # being written
                pass
        total = self.steps.get(key)
        if self._finished(key):
            return "done", total or 0, total
        if model_path(self.root, key).exists():  # trained
            return "evaluation", total or 0, total
        return "training", _last_step(run / "metrics.jsonl"), total


def _last_step(metrics: Path) -> int:
    """The step of the last complete line of a run's ``metrics.jsonl`` (0 before the first)."""
    try:
        lines = metrics.read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):  # a line being written
            continue
    return 0
