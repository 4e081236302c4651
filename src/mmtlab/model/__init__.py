"""The model family: a schedule of attention layers over a text and an image stream."""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from ..presets import model_config
from .bert_init import load_bert_into
from .compile import compile_fn
from .inputs import validate_batch
from .layers import BLOCKS, block_mask
from .transformer import MultimodalTransformer


def build_model(preset: str = "merged", scale: str = "paper", **overrides: Any) -> MultimodalTransformer:
    """Build preset ``preset`` at ``scale`` ("paper" or "tiny"); ``overrides`` are ModelConfig fields.

    >>> m = build_model("mixed-modality", scale="tiny", feat_dim=64)
    >>> m.config.schedule, m.config.width
    ('UUUUUM', 128)
    """
    return build_from_config(model_config(preset, scale, **overrides))


def build_from_config(config: ModelConfig) -> MultimodalTransformer:
    model = MultimodalTransformer(config)
    if config.text_init:
        load_bert_into(model, config.text_init)
    return model


__all__ = [
    "build_model",
    "build_from_config",
    "MultimodalTransformer",
    "validate_batch",
    "block_mask",
    "BLOCKS",
    "compile_fn",
]
