"""The benchmark's shapes (from the model configs) and its random inputs (docs/design.md, "Benchmark shape")."""

from __future__ import annotations

import functools

from ..config import ConfigError, ModelConfig
from ..presets import SCALES, model_config

# Per-sample inputs of each scale: the paper's (40 word pieces, 36 regions of 2,048-d features: the data and
# model defaults) and the synthetic world's (16 pieces, 10 regions of 256-d).
INPUTS = {
    "paper": dict(text_len=40, regions=36, feat_dim=ModelConfig.feat_dim),
    "tiny": dict(text_len=16, regions=10, feat_dim=256),
}
SCALE_ALIASES = {"base": "paper"}  # the name `mmtlab bench` used before it took the presets' scale names
VOCAB = 30522  # bert-base-uncased, for every contender
MLM_FRACTION = 0.15
SCORE_CAPTIONS = 16  # captions per scoring block; images = ceil(batch / 16)


def bench_scale(scale: str) -> str:
    """The scale's name in the presets (``base`` -> ``paper``); an unknown one is a :class:`ConfigError`."""
    name = SCALE_ALIASES.get(scale, scale)
    if name not in SCALES:
        raise ConfigError(f"--scale {scale!r}: valid scales are {', '.join((*SCALES, *SCALE_ALIASES))}")
    return name


@functools.cache
def bench_shape(scale: str) -> dict:
    """Width, heads and FFN of the ``merged`` model config at ``scale``, and the scale's inputs (:data:`INPUTS`)."""
    cfg = model_config("merged", bench_scale(scale))
    return dict(width=cfg.width, heads=cfg.heads, ffn=cfg.ffn, **INPUTS[bench_scale(scale)])


def make_inputs(shape: dict, batch: int, device, seed: int = 0) -> dict:
    """Random inputs in the batch contract (docs/design.md, "The batch dict"), plus the MLM positions and ITM labels.

    Every sample has all ``text_len`` word pieces and ``regions`` regions real (no padding), and the same
    number of MLM positions (never ``[CLS]``), so all contenders see identical work.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    B, T, R, F = batch, shape["text_len"], shape["regions"], shape["feat_dim"]
    text_ids = torch.randint(1000, VOCAB, (B, T), generator=g)
    n_mlm = max(1, round(MLM_FRACTION * T))
    pos = torch.rand(B, T - 1, generator=g).argsort(dim=1)[:, :n_mlm] + 1  # (B, n_mlm), never [CLS]
    mlm_mask = torch.zeros(B, T, dtype=torch.bool).scatter_(1, pos, True)
    xy = torch.rand(B, R, 2, generator=g) * 0.5
    wh = torch.rand(B, R, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + wh, (wh[..., :1] * wh[..., 1:])], dim=-1)  # (B, R, 5)
    boxes[:, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])  # the global token
    batch_ = {
        "text_ids": text_ids,
        "text_mask": torch.ones(B, T, dtype=torch.bool),
        "img_feats": torch.randn(B, R, F, generator=g).abs(),
        "img_boxes": boxes,
        "img_mask": torch.ones(B, R, dtype=torch.bool),
        "mlm_mask": mlm_mask,
        "itm_labels": torch.randint(0, 2, (B,), generator=g),
    }
    return {k: v.to(device) for k, v in batch_.items()}


def score_pairs(batch: int, device) -> tuple:
    """Caption and image index of each scored pair: ``SCORE_CAPTIONS`` captions x ceil(batch / that) images."""
    import torch

    n_cap = min(SCORE_CAPTIONS, batch)
    i = torch.arange(batch, device=device)
    return i % n_cap, i // n_cap  # (batch,), (batch,)
