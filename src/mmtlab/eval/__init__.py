"""Zero-shot (and fine-tuned) image-text retrieval: metrics, scorers, ``mmtlab eval retrieval``,
``mmtlab finetune retrieval``.

``mmtlab.eval.metrics`` needs only torch; :func:`evaluate_retrieval` and :func:`evaluate_run` (which use the
data layer and the trainer) load on first use.
"""

from .metrics import EvalError, retrieval_metrics

_LAZY = {"evaluate_retrieval": "retrieval", "evaluate_run": "retrieval", "check_scorer": "retrieval",
         "finetune_retrieval": "finetune"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EvalError", "retrieval_metrics", *_LAZY]
