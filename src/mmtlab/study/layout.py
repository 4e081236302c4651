"""The layout of a study directory, shared by the runner, its worker processes and the report::

    DIR/grid.yaml                    the grid as run (its resolved form)
    DIR/data/<dataset>/              generated synthetic-world stores
    DIR/cells/<cell>/run/            the training run (resumable; run/metrics.jsonl: its loss curves)
    DIR/cells/<cell>/results.json    its evaluation (as `mmtlab eval retrieval --out` writes it)
    DIR/cells/<cell>/results-<set>.json   its evaluation on each held-out set of the grid's ``eval.also``
    DIR/cells/<cell>/record.json     written last: the cell is finished
    DIR/results.csv, results.md, *.png   (mmtlab study report DIR)

Standard library only: :mod:`mmtlab.study.report` and :mod:`mmtlab.study.jobs` read a study through this
module without importing the runner.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..train.metrics import training_lines


def dataset_dir(root: Path, name: str) -> Path:
    """Where dataset ``name`` of the grid is generated."""
    return root / "data" / name


def record_path(root: Path, key: str) -> Path:
    """The record of cell ``key``, written last: the cell is finished when it exists."""
    return root / "cells" / key / "record.json"


def finished(root: Path, key: str, also: Iterable[str] = ()) -> bool:
    """Cell ``key`` needs no more work: its record exists and holds every held-out set in ``also`` (a set added to
    the grid after the cell finished is still to be scored), or its trained model is gone (nothing to score)."""
    path = record_path(root, key)
    if not path.exists():
        return False
    have = json.loads(path.read_text()).get("also", {})
    return all(n in have for n in also) or not (path.parent / "run" / "model.safetensors").exists()


def load_records(root: Path) -> dict[str, dict]:
    """The records of every finished cell, by cell key."""
    records = {}
    for path in sorted((root / "cells").glob("*/record.json")):
        rec = json.loads(path.read_text())
        records[rec["key"]] = rec
    return records


def training_log(root: Path, key: str) -> list[dict]:
    """The training lines (those with a ``loss``) of cell ``key``'s ``metrics.jsonl``; empty when it has none."""
    return training_lines(root / "cells" / key / "run")


__all__ = ["dataset_dir", "record_path", "finished", "load_records", "training_log"]
