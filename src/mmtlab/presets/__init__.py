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

from ..config import ConfigError, ModelConfig, from_dict

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


__all__ = ["SCALES", "DEFAULT_LOSS", "list_presets", "list_loss_sets", "preset_info", "model_config", "scale_recipe", "loss_set"]


def preset_rows() -> list[dict[str, Any]]:
    """One row per preset: schedule, shape and parameter counts at both scales (built on the meta device)."""
    import torch

    from ..model.transformer import MultimodalTransformer

    rows = []
    for name in list_presets():
        info = preset_info(name)
        row: dict[str, Any] = {"preset": name}
        for scale in SCALES:
            cfg = model_config(name, scale)
            with torch.device("meta"):
                n = MultimodalTransformer(cfg).num_parameters()
            row[scale] = {"width": cfg.width, "heads": cfg.heads, "ffn": cfg.ffn, "params": n}
        row.update(schedule=cfg.schedule, layers=cfg.layers, shared=cfg.shared, loss=info["loss"], description=info["description"])
        rows.append(row)
    return rows


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def preset_table(markdown: bool = False) -> str:
    """The table printed by ``mmtlab presets`` (and, as Markdown, kept in the README)."""
    head = ["preset", "schedule", "layers", "shared", "width", "heads", "ffn", "params", "tiny width/heads", "tiny params", "loss"]
    body = []
    for r in preset_rows():
        p, t = r["paper"], r["tiny"]
        body.append([
            r["preset"], r["schedule"], str(r["layers"]), "yes" if r["shared"] else "no", str(p["width"]), str(p["heads"]),
            str(p["ffn"]), _millions(p["params"]), f"{t['width']}/{t['heads']}", _millions(t["params"]), r["loss"],
        ])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(f"`{c}`" if i in (0, 1, 10) else c for i, c in enumerate(row)) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*row) for row in body])


__all__ += ["preset_rows", "preset_table"]
