"""Reliability of `mmtlab study` claims (issue 16): a stale lock (its process died) is taken over by exactly one
of many processes released together."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

from mmtlab.study.runner import _claim

PROCESSES, ROUNDS = 6, 15


def _contend(lock, start, held, results) -> None:
    """Wait for the start, try to claim ``lock``; a winner keeps the claim until every process has tried."""
    start.wait()
    with _claim(lock) as mine:
        results.put(mine)
        held.wait()


def test_a_stale_lock_is_taken_over_by_exactly_one_process(tmp_path):
    ctx = mp.get_context("fork")
    lock = tmp_path / "cell" / "lock"
    lock.parent.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    winners = []
    for _ in range(ROUNDS):
        lock.write_text(dead)  # left by a process that died
        start, held, results = ctx.Event(), ctx.Barrier(PROCESSES), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(lock, start, held, results)) for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        start.set()
        claims = [results.get(timeout=20) for _ in procs]
        for p in procs:
            p.join(timeout=20)
        winners.append(sum(claims))
    assert winners == [1] * ROUNDS
    assert not lock.exists()
