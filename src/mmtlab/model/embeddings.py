"""Input embeddings: word pieces -> text stream ``T``; regions or pixels -> image stream ``V``."""

from __future__ import annotations

import torch
from torch import nn

from ..config import UNK_ID, ModelConfig


class TextEmbedding(nn.Module):
    """BERT-style: word + position + segment, then LayerNorm and dropout.

    With ``cfg.vocab_ids`` the word embeddings hold only those pieces (row ``i`` = ``vocab_ids[i]``) and every
    other id reads the ``[UNK]`` row: :meth:`word_rows` maps ids to rows (the MLM head predicts rows too).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.n_words, cfg.width)
        kept = rows = None
        if cfg.vocab_ids is not None:
            kept = torch.tensor(cfg.vocab_ids)
            rows = torch.full((cfg.vocab_size,), cfg.vocab_ids.index(UNK_ID), dtype=torch.long)
            rows[kept] = torch.arange(len(kept))
        self.register_buffer("kept_ids", kept, persistent=False)  # (n_words,) the piece of each row, or None: all
        self.register_buffer("rows", rows, persistent=False)  # (vocab_size,) id -> row, or None: the identity
        self.position = nn.Embedding(cfg.max_positions, cfg.width)
        self.segment = nn.Embedding(cfg.type_vocab_size, cfg.width)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, text_ids: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        B, T = text_ids.shape
        pos = torch.arange(T, device=text_ids.device)
        x = self.word(self.word_rows(text_ids)) + self.position(pos)[None]  # (B, T, D)
        x = x + (self.segment(segment_ids) if segment_ids is not None else self.segment.weight[0])
        return self.drop(self.norm(x))

    def word_rows(self, text_ids: torch.Tensor) -> torch.Tensor:
        """The embedding row (= MLM output index) of each word-piece id."""
        return text_ids if self.rows is None else self.rows[text_ids]


class RegionEmbedding(nn.Module):
    """ViLBERT/UNITER-style: ``LayerNorm(Linear(feats)) + LayerNorm(Linear(boxes))``, then dropout.

    A region whose features are all zero (how masked region modelling masks a region) gets a learned
    ``mask`` vector in place of its feature term, the region analogue of ``[MASK]``. Without it the feature
    term of a zeroed region is ``LayerNorm(bias)``: a LayerNorm of a near-constant vector, whose gradient
    with respect to the bias is scaled by ``1/std(bias)`` (about 1e6 at initialisation) -- large enough to
    dominate the global gradient norm, so that clipping shrinks every other gradient to nothing.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.feat = nn.Linear(cfg.feat_dim, cfg.width)
        self.feat_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mask = nn.Parameter(torch.zeros(cfg.width))  # initialised with the other weights (std 0.02)
        self.box = nn.Linear(cfg.box_dim, cfg.width)
        self.box_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, img_feats: torch.Tensor, img_boxes: torch.Tensor) -> torch.Tensor:
        dtype = self.feat.weight.dtype  # any float input (fp16 from the store, fp64 from numpy) in the weights' type
        img_feats, img_boxes = img_feats.to(dtype), img_boxes.to(dtype)
        zeroed = (img_feats == 0).all(-1, keepdim=True)  # (B, R, 1) masked (or padding) regions
        feat = torch.where(zeroed, self.mask.to(img_feats.dtype), self.feat_norm(self.feat(img_feats)))  # (B, R, D)
        return self.drop(feat + self.box_norm(self.box(img_boxes)))


class PatchEmbedding(nn.Module):
    """ViLT-style pixel path: non-overlapping patches, linearly embedded, plus a learned global token.

    Produces the same ``V`` stream as :class:`RegionEmbedding`: index 0 is the global token, then one token
    per patch in raster order. :meth:`boxes` gives the matching 5-d boxes (cells of the patch grid).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.grid = cfg.image_size // cfg.patch_size
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.global_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.position = nn.Parameter(torch.zeros(1, 1 + self.grid**2, cfg.width))
        nn.init.normal_(self.global_token, std=cfg.init_std)
        nn.init.normal_(self.position, std=cfg.init_std)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.image_size = cfg.image_size

    @property
    def n_tokens(self) -> int:
        return 1 + self.grid**2

    def boxes(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(B, 1 + G*G, 5) boxes: the global token (0, 0, 1, 1, 1), then each grid cell."""
        g = self.grid
        idx = torch.arange(g, device=device, dtype=torch.float32) / g
        y1, x1 = torch.meshgrid(idx, idx, indexing="ij")
        cells = torch.stack([x1, y1, x1 + 1 / g, y1 + 1 / g, torch.full_like(x1, 1 / g**2)], -1).reshape(-1, 5)
        glob = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]], device=device)
        return torch.cat([glob, cells])[None].expand(batch_size, -1, -1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.proj(pixels.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)  # (B, G*G, D)
        x = torch.cat([self.global_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+G*G, D)
        return self.drop(self.norm(x + self.position))
