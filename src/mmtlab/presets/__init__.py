"""Registered presets: architectures (``models.yaml``) and loss sets (``losses.yaml``), shipped as YAML.

>>> import mmtlab
>>> "merged" in mmtlab.list_presets()
True
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

from ..config import ConfigError, ModelConfig
from ..typed_config import from_dict

SCALES = ("paper", "tiny")
DEFAULT_LOSS = "itm+mlm+mrm"
_META_KEYS = ("description", "loss", "tiny")


@functools.cache
def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load(resources.files(__package__).joinpath(name).read_text())


def list_presets() -> list[str]:
    """Names of the registered architectures, in the paper's order."""
    return list(_load("models.yaml")["presets"])


def list_loss_sets() -> list[str]:
    return list(_load("losses.yaml"))


def preset_info(name: str) -> dict[str, Any]:
    """The raw preset entry (description, default loss set, overrides)."""
    presets = _load("models.yaml")["presets"]
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(presets)}")
    entry = dict(presets[name] or {})
    entry.setdefault("description", "")
    entry.setdefault("loss", DEFAULT_LOSS)
    return entry


def model_config(name: str, scale: str = "paper", **overrides: Any) -> ModelConfig:
    """Resolve preset ``name`` at ``scale`` ("paper" or "tiny") into a :class:`ModelConfig`.

    ``overrides`` are ModelConfig fields (``schedule``, ``width``, ``heads``, ...) applied last.
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    spec = _load("models.yaml")
    entry = preset_info(name)
    values: dict[str, Any] = dict(spec["base"])
    values.update({k: v for k, v in entry.items() if k not in _META_KEYS})
    if scale == "tiny":
        values.update(spec["tiny"])
        values.update(entry.get("tiny") or {})
    values.update({k.removeprefix("model."): v for k, v in scale_recipe(scale).items() if k.startswith("model.")})
    values.update(overrides)
    return from_dict(ModelConfig, values, prefix="model")


def scale_recipe(scale: str) -> dict[str, Any]:
    """The training recipe of ``scale`` (``recipes.yaml``): dotted run-config keys (``model.dropout``,
    ``train.lr``, ``loss.itm_inputs``, ...) -> value, the defaults under the user's overrides."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    return dict(_load("recipes.yaml")[scale] or {})


def loss_set(name: str) -> dict[str, Any]:
    """The loss set ``name``: ``{"weights": {loss: weight}, ...options}``."""
    sets = _load("losses.yaml")
    if name not in sets:
        raise ConfigError(f"unknown loss set {name!r}; valid loss sets: {', '.join(sets)}")
    return dict(sets[name])


__all__ = [
    "SCALES",
    "DEFAULT_LOSS",
    "list_presets",
    "list_loss_sets",
    "preset_info",
    "model_config",
    "scale_recipe",
    "loss_set",
]
