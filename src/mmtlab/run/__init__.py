"""A run, as the trainer writes it and evaluation, fine-tuning and studies read it (docs/design.md, "Run
configuration", "The run directory"): its config (:mod:`~mmtlab.run.config`, torch-free), the names in its
directory (:mod:`~mmtlab.run.layout`), its weights (:mod:`~mmtlab.run.weights`) and loading a finished one
(:mod:`~mmtlab.run.load`). The torch-based names load on first use."""

from __future__ import annotations

import importlib
from typing import Any

from .config import LossConfig, RunConfig, TrainConfig, load_run_config

_LAZY = {
    "load_run": "load", "finetune_info": "load",
    "save_weights": "weights", "load_weights": "weights", "CheckpointError": "weights",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LossConfig", "RunConfig", "TrainConfig", "load_run_config", *_LAZY]
