"""mmtlab: pretrain, evaluate and study multimodal (image-text) transformers.

The library is importable without the training stack: ``import mmtlab`` loads no torch; the model,
data, training and evaluation modules load on first use.
"""

from __future__ import annotations

from typing import Any

from .presets import list_loss_sets, list_presets

__version__ = "0.1.0"


def build_model(preset: str = "merged", scale: str = "paper", **overrides: Any):
    """Build a registered preset (see :func:`list_presets`); ``overrides`` are model-config fields
    such as ``schedule``, ``shared``, ``width``, ``heads``, ``ffn``, ``feat_dim``, ``vocab_size``, ``text_init``."""
    from .model import build_model as _build

    return _build(preset, scale, **overrides)


__all__ = ["__version__", "build_model", "list_presets", "list_loss_sets"]
