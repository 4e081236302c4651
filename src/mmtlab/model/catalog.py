"""The preset catalogue: every registered architecture with its schedule, shape and parameter counts at both
scales (``mmtlab presets``, and the table in the README). It builds each model on the meta device, so it lives
beside the model rather than in :mod:`mmtlab.presets`, which only reads the YAML registry."""

from __future__ import annotations

from typing import Any

import torch

from ..presets import SCALES, list_presets, model_config, preset_info
from .transformer import MultimodalTransformer


def preset_rows() -> list[dict[str, Any]]:
    """One row per preset: schedule, shape and parameter counts at both scales (built on the meta device)."""
    rows = []
    for name in list_presets():
        info = preset_info(name)
        row: dict[str, Any] = {"preset": name}
        for scale in SCALES:
            cfg = model_config(name, scale)
            with torch.device("meta"):
                n = MultimodalTransformer(cfg).num_parameters()
            row[scale] = {"width": cfg.width, "heads": cfg.heads, "ffn": cfg.ffn, "params": n}
        row.update(
            schedule=cfg.schedule,
            layers=cfg.layers,
            shared=cfg.shared,
            loss=info["loss"],
            description=info["description"],
        )
        rows.append(row)
    return rows


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def preset_table(markdown: bool = False) -> str:
    """The table printed by ``mmtlab presets`` (and, as Markdown, kept in the README)."""
    head = [
        "preset",
        "schedule",
        "layers",
        "shared",
        "width",
        "heads",
        "ffn",
        "params",
        "tiny width/heads",
        "tiny params",
        "loss",
    ]
    body = []
    for r in preset_rows():
        p, t = r["paper"], r["tiny"]
        body.append(
            [
                r["preset"],
                r["schedule"],
                str(r["layers"]),
                "yes" if r["shared"] else "no",
                str(p["width"]),
                str(p["heads"]),
                str(p["ffn"]),
                _millions(p["params"]),
                f"{t['width']}/{t['heads']}",
                _millions(t["params"]),
                r["loss"],
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += [
            "| " + " | ".join(f"`{c}`" if i in (0, 1, 10) else c for i, c in enumerate(row)) + " |" for row in body
        ]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*row) for row in body])


__all__ = ["preset_rows", "preset_table"]
