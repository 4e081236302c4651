"""Reading a run's ``metrics.jsonl`` (written by the trainer's ``Logger``: one JSON line per logged step, with
``step``, ``loss``, each term, ``lr``, ``grad_norm`` and ``samples_per_s``). No torch import."""

from __future__ import annotations

import json
from pathlib import Path


def training_lines(run: str | Path) -> list[dict]:
    """The training lines (those with a ``loss``) of ``run/metrics.jsonl``, in order; empty when it has none."""
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [line for line in lines if "loss" in line]


def mean_throughput(run: str | Path, skip: int = 0) -> float | None:
    """The mean ``samples_per_s`` of a run's logged windows after the first ``skip`` (warm-up); None if none."""
    rates = [line["samples_per_s"] for line in training_lines(run) if "samples_per_s" in line][skip:]
    return sum(rates) / len(rates) if rates else None
