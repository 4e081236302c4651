"""Reading a finished run directory: its model and config (:func:`load_run`), and whether it was fine-tuned
(:func:`finetune_info`). docs/design.md, "The run directory"."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError
from ..model import build_from_config
from .config import RunConfig, load_run_config
from .layout import FINETUNE_FILE
from .weights import load_weights


def load_run(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """The finished model of a run directory, in eval mode, and its :class:`RunConfig`."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(
            f"{run_dir}: no model.safetensors, the run has not finished; continue it with `mmtlab train --resume {run_dir}`"
        )
    model = build_from_config(dataclasses.replace(cfg.model, text_init=None))
    load_weights(model, weights)
    return model.to(map_location).eval(), cfg


def finetune_info(run_dir: str | Path) -> dict | None:
    """The fine-tuning record of a run (``finetune.json``), or None for a pretrained run."""
    f = Path(run_dir) / FINETUNE_FILE
    return json.loads(f.read_text()) if f.is_file() else None
