"""Resolving a new run: :func:`make_run_config` (a preset, a loss set, a scale, the data directories and
``key=value`` overrides -> a :class:`~mmtlab.run.config.RunConfig`, saved as ``RUN/config.yaml``), and
:func:`loss_config`. The run config itself lives in :mod:`mmtlab.run.config` (re-exported here). No torch
import here (the CLI stays fast).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import ConfigError, ModelConfig
from ..presets import SCALES, loss_set, model_config, preset_info, scale_recipe
from ..run.config import (
    DEVICES,
    ITM_INPUTS,
    ITM_NEGATIVES,
    ITM_SWAP,
    RESUMABLE_CHANGES,
    SCHEDULES,
    LossConfig,
    RunConfig,
    TrainConfig,
    check_run_config,
    config_differences,
    load_run_config,
    run_config_from_dict,
)
from ..run.terms import LOSS_TERMS, MRM_TERMS
from ..typed_config import apply_overrides, from_dict


def loss_config(name: str, **overrides: Any) -> LossConfig:
    """The :class:`LossConfig` of loss set ``name`` (``losses.yaml``), with field overrides."""
    values = {k: v for k, v in loss_set(name).items() if k != "description"}
    values.update(overrides)
    return from_dict(LossConfig, {"name": name, **values}, prefix="loss")


def _split_term_overrides(overrides: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate ``<prefix><term>=value`` (a dict entry, which the generic override machinery cannot set)."""
    terms, rest = {}, {}
    for key, value in overrides.items():
        if key.startswith(prefix):
            terms[key.removeprefix(prefix)] = value
        else:
            rest[key] = value
    return terms, rest


def make_run_config(
    preset: str,
    loss: str | None = None,
    scale: str = "paper",
    data_dirs: tuple[str, ...] | list[str] = (),
    overrides: Mapping[str, Any] | None = None,
    val_dir: str | None = None,
) -> RunConfig:
    """Resolve a run: preset at ``scale`` + loss set (default: the preset's) + the scale's training recipe
    (:func:`mmtlab.presets.scale_recipe`) + ``key=value`` overrides (which win over the recipe).

    When ``data_dirs`` are given, ``model.feat_dim`` and ``model.n_region_classes`` come from the stores'
    meta unless an override sets them (then they must agree). ``loss.weights.<term>=w`` sets one weight.
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    recipe = {k: v for k, v in scale_recipe(scale).items() if not k.startswith("model.")}  # model.*: model_config
    overrides = recipe | dict(overrides or {})
    loss = loss or preset_info(preset)["loss"]
    weight_overrides, overrides = _split_term_overrides(overrides, "loss.weights.")
    start_overrides, overrides = _split_term_overrides(overrides, "loss.start.")
    lcfg = loss_config(loss)
    for name, given in (("weights", weight_overrides), ("start", start_overrides)):
        bad = sorted(set(given) - set(LOSS_TERMS))
        if bad:
            raise ConfigError(f"unknown loss term(s) {bad} in loss.{name}.*; valid terms: {', '.join(LOSS_TERMS)}")
    if weight_overrides or start_overrides:
        start = {**lcfg.start, **start_overrides}
        lcfg = loss_config(loss, weights={**lcfg.weights, **weight_overrides}, start=start)
    cfg = RunConfig(
        preset=preset, scale=scale, data_dirs=[_absolute(d) for d in data_dirs], val_dir=val_dir and _absolute(val_dir),
        model=model_config(preset, scale), loss=lcfg,
    )  # fmt: skip
    if data_dirs:
        cfg = _model_from_data(cfg, overrides)
    cfg = apply_overrides(cfg, overrides)
    check_run_config(cfg)
    return cfg


def _absolute(path: str | Path) -> str:
    """Data paths are stored absolute, so a run resumes and evaluates from any working directory."""
    return str(Path(path).resolve())


def _model_from_data(cfg: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Take ``feat_dim`` / ``n_region_classes`` from the stores (the user's explicit values must match them)."""
    from ..data.store import open_store

    for key, meta_key in (("feat_dim", "feat_dim"), ("n_region_classes", "n_classes")):
        found = {d: open_store(d).meta.get(meta_key) for d in cfg.data_dirs}
        found = {d: v for d, v in found.items() if v is not None}
        values = set(found.values())
        if len(values) > 1:
            raise ConfigError(
                f"the data dirs disagree on {meta_key}: " + ", ".join(f"{d}: {v}" for d, v in found.items())
            )
        if not values:
            continue
        (value,) = values
        user = overrides.get(f"model.{key}")
        if user is not None:
            user_value = from_dict(ModelConfig, {key: user}, prefix="model").__dict__[key]
            if user_value != value:
                d = next(iter(found))
                raise ConfigError(f"model.{key}={user_value} does not match the data: {d} has {meta_key}={value}")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **{key: int(value)}))
    return cfg


__all__ = [
    "DEVICES",
    "ITM_INPUTS",
    "ITM_NEGATIVES",
    "ITM_SWAP",
    "LOSS_TERMS",
    "MRM_TERMS",
    "RESUMABLE_CHANGES",
    "SCHEDULES",
    "LossConfig",
    "RunConfig",
    "TrainConfig",
    "check_run_config",
    "config_differences",
    "load_run_config",
    "loss_config",
    "make_run_config",
    "run_config_from_dict",
]
