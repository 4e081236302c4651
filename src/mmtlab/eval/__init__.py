"""Zero-shot (and fine-tuned) image-text retrieval: metrics, scorers, ``mmtlab eval retrieval`` (fine-tuning is
training: :mod:`mmtlab.train.finetune`).

Names load on first use, so ``mmtlab --help`` imports no torch and ``mmtlab.eval.metrics`` (torch only) needs
neither the data layer nor the trainer, which :func:`evaluate_retrieval` and :func:`evaluate_run` use.
"""

import importlib

from .names import SCORERS

_LAZY = {
    "EvalError": "metrics",
    "retrieval_metrics": "metrics",
    "evaluate_retrieval": "retrieval",
    "evaluate_run": "retrieval",
    "check_scorer": "retrieval",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SCORERS", *_LAZY]
