"""One transformer layer over two streams, and the block masks that give each layer code its meaning.

Every code is the same computation: queries, keys and values of both streams are concatenated into one
``[T; V]`` sequence and attended with a single ``scaled_dot_product_attention`` call, under a 2x2 block
mask saying which stream's queries may see which stream's keys (docs/design.md, "Layer codes"):

======  =================  ==================
code    text queries see   image queries see
======  =================  ==================
``M``   T + V              T + V
``C``   V                  T
``L``   T + V              V
``I``   T                  T + V
``U``   T                  V
======  =================  ==================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig

# (text queries see (T, V), image queries see (T, V))
BLOCKS: dict[str, tuple[tuple[bool, bool], tuple[bool, bool]]] = {
    "M": ((True, True), (True, True)),
    "C": ((False, True), (True, False)),
    "L": ((True, True), (False, True)),
    "I": ((True, False), (True, True)),
    "U": ((True, False), (False, True)),
}


def text_sees_image(code: str) -> bool:
    return BLOCKS[code][0][1]


def image_sees_text(code: str) -> bool:
    return BLOCKS[code][1][0]


def block_mask(code: str, text_mask: torch.Tensor | None, img_mask: torch.Tensor | None) -> torch.Tensor:
    """Boolean attention mask (B, 1, N, N) for the sequence ``[T; V]`` (True = may attend).

    Either mask may be ``None`` when that stream is absent (a unimodal pass): then only the other stream's
    self-attention block is built.
    """
    masks = [m for m in (text_mask, img_mask) if m is not None]
    keys = torch.cat(masks, dim=1)  # (B, N) real tokens
    if text_mask is None or img_mask is None:
        allowed = keys[:, None, :]  # (B, 1, N): one stream attends to itself
    else:
        (tt, tv), (vt, vv) = BLOCKS[code]
        T, R = text_mask.shape[1], img_mask.shape[1]
        is_text_key = torch.arange(T + R, device=keys.device) < T  # (N,)
        text_rows = torch.where(is_text_key, tt, tv)  # (N,) what a text query may see
        img_rows = torch.where(is_text_key, vt, vv)
        blocks = torch.cat([text_rows.expand(T, -1), img_rows.expand(R, -1)])  # (N, N)
        allowed = blocks[None] & keys[:, None, :]  # (B, N, N)
    return allowed[:, None]  # (B, 1, N|1, N)


RowMask = torch.Tensor | None


def on_rows(fn, x: torch.Tensor, rows: RowMask, *more: torch.Tensor) -> torch.Tensor:
    """``fn(x, *more)`` for per-token ``fn``, computed only at the rows where ``rows`` (B, n) is True (all when
    None), scattered back into zeros: (B, n, D_out). One host sync for the row count."""
    if rows is None:
        return fn(x, *more)
    B, n = x.shape[:2]
    idx = rows.flatten().nonzero().squeeze(1)  # (n_rows,) rows of the flattened (B * n)
    y = fn(*(t.flatten(0, 1).index_select(0, idx) for t in (x, *more)))  # (n_rows, D_out)
    return y.new_zeros(B * n, y.shape[-1]).index_copy(0, idx, y).view(B, n, -1)


class StreamWeights(nn.Module):
    """One stream's parameters in a layer: fused QKV, output projection, FFN, two LayerNorms -- after each
    residual sum (post-LN, BERT) or, with ``cfg.norm_first``, on each branch's input (pre-LN)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_first = cfg.norm_first
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.out = nn.Linear(cfg.width, cfg.width)
        self.attn_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.ffn_in = nn.Linear(cfg.width, cfg.ffn)
        self.ffn_out = nn.Linear(cfg.ffn, cfg.width)
        self.ffn_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """Queries, keys and values of the tokens ``x``: (..., 3D)."""
        return self.qkv(self.attn_norm(x) if self.norm_first else x)

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual around attention, then around the feed-forward block, each with its LayerNorm."""
        if self.norm_first:
            x = x + self.drop(self.out(attended))
            return x + self.drop(self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x)))))
        x = self.attn_norm(x + self.drop(self.out(attended)))
        return self.ffn_norm(x + self.drop(self.ffn_out(F.gelu(self.ffn_in(x)))))


class Layer(nn.Module):
    """A layer with code ``code``; separate weights per stream unless ``cfg.shared`` (single stream)."""

    def __init__(self, cfg: ModelConfig, code: str):
        super().__init__()
        self.code = code
        self.heads = cfg.heads
        self.attn_dropout = cfg.attn_dropout
        n_streams = 1 if cfg.shared else 2
        self.streams = nn.ModuleList([StreamWeights(cfg) for _ in range(n_streams)])

    def weights(self, stream: int) -> StreamWeights:
        """Weights of stream 0 (text) or 1 (image); the same module when shared."""
        return self.streams[min(stream, len(self.streams) - 1)]

    def forward(
        self,
        t: torch.Tensor | None,
        v: torch.Tensor | None,
        mask: torch.Tensor,
        first_only: bool = False,
        rows: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
        real: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """t: (B, T, D) or None, v: (B, R, D) or None, mask from :func:`block_mask`.

        With shared weights and both streams the layer runs as one sequence ``[T; V]`` (one matmul per weight
        instead of one per stream). Three ways to compute less, each leaving every other row's result unchanged:

        - ``real`` = ((B, T) bool, (B, R) bool), the real (non-padding) tokens of each stream: the per-token
          projections (QKV, output, FFN) run on those rows only, and padding rows come back as zeros (on a CPU a
          batch padded to its longest caption is about a quarter padding);
        - ``first_only`` (a last layer) returns each stream's first token only, (B, 1, D): the text ``[CLS]`` and
          image global states that the ITM head reads (scoring: output projection and FFN run on two tokens);
        - ``rows`` = ((B, T) bool, (B, R) bool) (a last layer) finishes (output projection, FFN) only those rows
          of each stream, e.g. the ones the heads read in training; the other rows come back as zeros.

        Keys and values always come from every real token.
        """
        if len(self.streams) == 1 and t is not None and v is not None and not first_only:
            keep = None if rows is None else torch.cat(rows, dim=1)  # (B, T+R)
            inp = None if real is None else torch.cat(real, dim=1)
            x = self._attend([(self.streams[0], torch.cat([t, v], dim=1), inp, keep)], mask, False)[0]  # (B, T+R, D)
            return x[:, : t.shape[1]], x[:, t.shape[1] :]
        present = [(i, x) for i, x in enumerate((t, v)) if x is not None]
        parts = [(self.weights(i), x, real[i] if real else None, rows[i] if rows else None) for i, x in present]
        outs = self._attend(parts, mask, first_only)
        out: list[torch.Tensor | None] = [None, None]
        for (i, _), y in zip(present, outs):
            out[i] = y
        return out[0], out[1]

    def _attend(
        self, parts: list[tuple[StreamWeights, torch.Tensor, RowMask, RowMask]], mask: torch.Tensor, first_only: bool
    ) -> list[torch.Tensor]:
        """One SDPA call over the concatenated parts ``(weights, x, input rows, kept rows)``: each part projects
        its input rows (all if None) and then finishes with its own weights at its kept rows (all if None)."""
        qkvs = [on_rows(w.project_qkv, x, inp) for w, x, inp, _ in parts]
        qkv = qkvs[0] if len(qkvs) == 1 else torch.cat(qkvs, dim=1)  # (B, N, 3D)
        B, N, D3 = qkv.shape
        q, k, val = qkv.view(B, N, 3, self.heads, D3 // (3 * self.heads)).permute(2, 0, 3, 1, 4)  # (B, H, N, hd)
        lengths = [x.shape[1] for _, x, _, _ in parts]
        if first_only:
            starts = [sum(lengths[:i]) for i in range(len(lengths))]  # first token of each part (ints: no device copy)
            q = torch.cat([q[:, :, s : s + 1] for s in starts], dim=2)  # (B, H, P, hd)
            mask = torch.cat([mask[:, :, s : s + 1] for s in starts], dim=2) if mask.shape[2] > 1 else mask
            parts, lengths = [(w, x[:, :1], None, None) for w, x, _, _ in parts], [1] * len(parts)
        drop = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, val, attn_mask=mask, dropout_p=drop)  # (B, H, Nq, hd)
        outs, start = [], 0
        for (w, x, inp, keep), n in zip(parts, lengths):
            attended = a[:, :, start : start + n].transpose(1, 2).reshape(B, n, D3 // 3)  # (B, n, D), contiguous
            if inp is not None:
                keep = inp if keep is None else keep & inp
            outs.append(on_rows(w.finish, x, keep, attended))
            start += n
        return outs
