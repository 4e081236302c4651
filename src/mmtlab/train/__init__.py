"""Pretraining and fine-tuning: the losses of the study, the trainer, checkpoints, retrieval fine-tuning
(docs/design.md, "Loss terms", "The run directory").

``RunConfig`` / ``make_run_config`` load without torch; the rest (``train``, ``load_run``, the losses)
import torch on first use, so ``mmtlab --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import LOSS_TERMS, LossConfig, RunConfig, TrainConfig, load_run_config, loss_config, make_run_config

_LAZY = {
    "train": "trainer", "load_run": "trainer", "TrainingError": "trainer", "Objective": "trainer",
    "PretrainingLoss": "losses", "itm_loss": "losses", "mlm_loss": "losses", "mrm_kl_loss": "losses",
    "mrm_cls_loss": "losses", "mrm_reg_loss": "losses", "dual_contrastive_loss": "losses",
    "cross_contrastive_loss": "losses", "unimodal_embeddings": "losses", "match_score": "losses",
    "itm_negatives": "masking", "mask_words": "masking", "mask_regions": "masking",
    "build_optimizer": "optim", "build_scheduler": "optim", "lr_factor": "optim",
    "save_weights": "checkpoint", "load_weights": "checkpoint",
    "finetune_retrieval": "finetune", "HardNegativeITMLoss": "finetune",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LOSS_TERMS",
    "LossConfig",
    "RunConfig",
    "TrainConfig",
    "load_run_config",
    "loss_config",
    "make_run_config",
    *_LAZY,
]
