"""The layout of a study directory, shared by the runner, its worker processes and the report::

    DIR/grid.yaml                    the grid as run (its resolved form)
    DIR/data/<dataset>/              generated synthetic-world stores
    DIR/cells/<cell>/run/            the training run (resumable; run/metrics.jsonl: its loss curves)
    DIR/cells/<cell>/results.json    its evaluation (as `mmtlab eval retrieval --out` writes it)
    DIR/cells/<cell>/results-<set>.json   its evaluation on each held-out set of the grid's ``eval.also``
    DIR/cells/<cell>/record.json     written last: the cell is trained and evaluated (finished once it also
                                     holds every ``eval.also`` set, or its run's model is gone)
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
    """The record of cell ``key``, written last, once the cell is trained and evaluated."""
    return root / "cells" / key / "record.json"


def model_path(root: Path, key: str) -> Path:
    """The trained model of cell ``key``'s run."""
    return root / "cells" / key / "run" / "model.safetensors"


def unscored(root: Path, key: str, also: Iterable[str]) -> list[str]:
    """The held-out sets of ``also`` that the record of cell ``key`` lacks (all of them when it has no record)."""
    path = record_path(root, key)
    have = json.loads(path.read_text()).get("also", {}) if path.exists() else {}
    return [n for n in also if n not in have]


def finished(root: Path, key: str, also: Iterable[str] = ()) -> bool:
    """Cell ``key`` needs no more work: its record exists and holds every held-out set in ``also`` (a set added to
    the grid after the cell finished is still to be scored), or its trained model is gone (nothing to score)."""
    return record_path(root, key).exists() and (not unscored(root, key, also) or not model_path(root, key).exists())


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


__all__ = ["dataset_dir", "record_path", "model_path", "unscored", "finished", "load_records", "training_log"]
