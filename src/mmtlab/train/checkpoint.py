"""Checkpoints: written atomically, read without executing pickled code.

``RUN/checkpoint/`` holds one complete checkpoint:

- ``model.safetensors``: the weights
- ``state.pt``: optimizer, scheduler, RNG states, step and data position (plain tensors and containers:
  read with ``torch.load(..., weights_only=True)``)
- ``meta.json``: step, samples seen, code version, time

It is written to ``checkpoint.tmp/`` and swapped in by renames (the previous one is moved to
``checkpoint.old/`` for the instant between the two renames); a crash at any point leaves one complete
checkpoint that :func:`latest_checkpoint` finds. The previous checkpoint then waits in ``checkpoint.prev/``
until the trainer has taken one finite step from the new one (:func:`drop_previous`): when the new weights
already give a non-finite loss, :func:`set_aside_diverged` moves them to ``checkpoint.diverged/`` and puts the
previous checkpoint back, so that the run resumes from weights that trained.

A damaged file (truncated, not written by mmtlab) is a one-line :class:`CheckpointError` naming it; a full disk
while checkpointing is a :class:`~mmtlab.errors.StorageError` that keeps the previous checkpoint.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import shutil
import subprocess
import time
from pathlib import Path

import torch

from ..errors import writing
from ..run.layout import CKPT, DIVERGED, OLD, PREV, TMP
from ..run.weights import CheckpointError, load_weights, save_weights, way_out


@functools.cache
def code_version() -> dict:
    """mmtlab's version and, when running from a git checkout, the commit (``+dirty`` with local changes)."""
    from .. import __version__

    version = {"mmtlab": __version__, "torch": torch.__version__}
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return version
    if commit.returncode == 0:
        version["git"] = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    return version


def save_checkpoint(run_dir: Path, model: torch.nn.Module, state: dict, meta: dict) -> None:
    """Write a complete checkpoint atomically (see the module docstring); the one it replaces becomes
    ``checkpoint.prev/``. A full disk leaves the previous checkpoint in place and raises a StorageError."""
    tmp, final, old, prev = run_dir / TMP, run_dir / CKPT, run_dir / OLD, run_dir / PREV
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(tmp, f"the previous checkpoint is kept; free space, then `mmtlab train --resume {run_dir}`"):
            tmp.mkdir(parents=True)
            save_weights(model, tmp / "model.safetensors")
            torch.save(state, tmp / "state.pt")
            (tmp / "meta.json").write_text(json.dumps({**meta, "time": time.time(), "code": code_version()}, indent=1))
            for f in [*tmp.iterdir(), tmp]:
                _fsync(f)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    _fsync(run_dir)
    if old.exists():
        shutil.rmtree(prev, ignore_errors=True)
        old.rename(prev)


def drop_previous(run_dir: Path) -> None:
    """The newest checkpoint has trained a finite step: the previous one is no longer needed."""
    shutil.rmtree(run_dir / PREV, ignore_errors=True)


def set_aside_diverged(run_dir: Path) -> Path | None:
    """The newest checkpoint's weights give a non-finite loss: move it to ``checkpoint.diverged/`` and put the
    previous one (if kept) back. Returns the checkpoint the run now resumes from (None: step 0)."""
    final, prev, diverged = run_dir / CKPT, run_dir / PREV, run_dir / DIVERGED
    if final.exists():
        shutil.rmtree(diverged, ignore_errors=True)
        final.rename(diverged)
    if prev.exists():
        prev.rename(final)
    return latest_checkpoint(run_dir)


def _fsync(path: Path) -> None:
    """Flush a file, or a directory entry, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint of ``run_dir``: ``checkpoint/``, or ``checkpoint.old/`` after a crash mid-swap."""
    for name in (CKPT, OLD):
        d = run_dir / name
        if (d / "meta.json").is_file() and (d / "state.pt").is_file() and (d / "model.safetensors").is_file():
            return d
    return None


def load_state(ckpt_dir: Path, map_location: str | torch.device = "cpu") -> dict:
    """The non-weight state of a checkpoint (no pickled code is executed); a damaged or foreign ``state.pt``
    is a :class:`CheckpointError` naming it."""
    path = ckpt_dir / "state.pt"
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: damaged or not written by mmtlab ({why}); {way_out(path)}") from None


__all__ = [
    "CKPT",
    "TMP",
    "OLD",
    "PREV",
    "DIVERGED",
    "CheckpointError",
    "save_weights",
    "load_weights",
    "code_version",
    "save_checkpoint",
    "drop_previous",
    "set_aside_diverged",
    "latest_checkpoint",
    "load_state",
]
