"""Pretraining and scoring heads on top of the two streams."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


def match_score(itm_logits: torch.Tensor) -> torch.Tensor:
    """The match log-odds ``logit[1] - logit[0]`` of ITM logits (..., 2) -> (...), in fp32: ranks pairs exactly as
    the match probability does, without the ties of a saturated sigmoid."""
    return itm_logits[..., 1].float() - itm_logits[..., 0].float()


class ITMHead(nn.Module):
    """Image-text matching (docs/design.md, "The model"): text ``[CLS]`` and image global state, each through a
    dense+tanh pooler, multiplied element-wise, then a linear layer to 2 logits (index 1 = match)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.text_pool = nn.Linear(cfg.width, cfg.width)
        self.img_pool = nn.Linear(cfg.width, cfg.width)
        self.classifier = nn.Linear(cfg.width, 2)

    def forward(self, t_cls: torch.Tensor, v_glob: torch.Tensor) -> torch.Tensor:
        pooled = torch.tanh(self.text_pool(t_cls)) * torch.tanh(self.img_pool(v_glob))  # (B, D)
        return self.classifier(pooled)  # (B, 2)

    def match_score_matrix(self, t_cls: torch.Tensor, v_glob: torch.Tensor) -> torch.Tensor:
        """The match log-odds of every caption with every image, (Nc, D) x (Ni, D) -> (Nc, Ni), without building
        the Nc x Ni pairs: ``logit[1] - logit[0]`` of ``classifier(tanh(P_t t) * tanh(P_v v))`` is
        ``(p_t * w) @ p_v.T + b``."""
        pt = torch.tanh(self.text_pool(t_cls))  # (Nc, D)
        pv = torch.tanh(self.img_pool(v_glob))  # (Ni, D)
        w = self.classifier.weight[1] - self.classifier.weight[0]  # (D,)
        b = self.classifier.bias[1] - self.classifier.bias[0]
        return (pt * w) @ pv.T + b  # (Nc, Ni)


class Transform(nn.Sequential):
    """BERT's prediction-head transform: dense, GELU, LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(nn.Linear(cfg.width, cfg.width), nn.GELU(), nn.LayerNorm(cfg.width, eps=cfg.ln_eps))


class MLMHead(nn.Module):
    """Masked language modelling; the decoder is tied to the word embeddings (weight passed at call)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.transform = Transform(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg.n_words))

    def forward(self, states: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(states), word_embeddings, self.bias)  # (N, V)


class MRMHead(nn.Module):
    """Masked region modelling: class logits (for ``mrm-kl`` / ``mrm-cls``) and feature regression."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.transform = Transform(cfg)
        self.classes = nn.Linear(cfg.width, cfg.n_region_classes)
        self.features = nn.Linear(cfg.width, cfg.feat_dim)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.transform(states)
        return self.classes(h), self.features(h)  # (N, C), (N, F)


class ProjectionHead(nn.Module):
    """Contrastive / dual-encoder embeddings: ``[CLS]`` and global states projected and L2-normalised,
    with a learned temperature (CLIP-style, initialised at 1/0.07)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.text = nn.Linear(cfg.width, cfg.proj_dim)
        self.image = nn.Linear(cfg.width, cfg.proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed_text(self, t_cls: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(t_cls), dim=-1)  # (B, P)

    def embed_image(self, v_glob: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(v_glob), dim=-1)  # (B, P)
