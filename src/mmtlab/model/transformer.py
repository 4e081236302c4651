"""The multimodal transformer: embeddings -> a schedule of layers -> heads (docs/design.md, "The model").

    batch ──► TextEmbedding ──► T ─┐
                                   ├─► Layer(code_1) ─► ... ─► Layer(code_L) ─► heads
    batch ──► Region/PatchEmb ─► V ─┘

The leading ``U`` layers of a schedule (its *unimodal prefix*) never mix the streams, so retrieval scoring
computes them once per caption and once per image (:meth:`encode_text`, :meth:`encode_image`) and runs only
the rest per pair (:meth:`fuse`, :meth:`match_logits`, :meth:`match_score`). The unimodal embeddings
``text_vec`` / ``img_vec`` (the ``itc`` loss, the ``dual`` and ``rerank`` scorers) are :meth:`text_vector` and
:meth:`image_vector`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .embeddings import PatchEmbedding, RegionEmbedding, TextEmbedding
from .heads import ITMHead, MLMHead, MRMHead, ProjectionHead, match_score
from .inputs import validate_batch
from .layers import Layer, block_mask


class MultimodalTransformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.text_embed = TextEmbedding(config)
        self.image_embed = PatchEmbedding(config) if config.image_input == "pixels" else RegionEmbedding(config)
        self.layers = nn.ModuleList([Layer(config, code) for code in config.schedule])
        # pre-LN layers leave the residual sum unnormalised: one LayerNorm per stream on top of the stack
        n_norms = (1 if config.shared else 2) if config.norm_first else 0
        self.top_norms = nn.ModuleList([nn.LayerNorm(config.width, eps=config.ln_eps) for _ in range(n_norms)])
        n_itm = config.layers if config.itm_every_layer else 1
        self.itm = nn.ModuleList([ITMHead(config) for _ in range(n_itm)])  # last one is the model's ITM head
        self.mlm = MLMHead(config)
        self.mrm = MRMHead(config)
        self.proj = ProjectionHead(config)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        """BERT's initialisation: weights and embeddings ~ N(0, ``init_std``), biases 0, LayerNorms (1, 0)."""
        std = self.config.init_std
        if isinstance(m, (nn.Linear, nn.Embedding, nn.Conv2d)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, RegionEmbedding):
            nn.init.normal_(m.mask, std=std)

    # ----------------------------------------------------------------------------------- inputs
    def embed_text(self, text_ids: torch.Tensor) -> torch.Tensor:
        return self.text_embed(text_ids)  # (B, T, D)

    def embed_image(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``V`` stream and its mask: (B, R, D), (B, R)."""
        if self.config.image_input == "pixels":
            v = self.image_embed(batch["pixels"])
            return v, torch.ones(v.shape[:2], dtype=torch.bool, device=v.device)
        return self.image_embed(batch["img_feats"], batch["img_boxes"]), batch["img_mask"]

    # ----------------------------------------------------------------------------------- layers
    def run_layers(
        self,
        t: torch.Tensor | None,
        v: torch.Tensor | None,
        text_mask: torch.Tensor | None,
        img_mask: torch.Tensor | None,
        start: int = 0,
        stop: int | None = None,
        keep_all: bool = False,
        last: str | tuple[torch.Tensor | None, torch.Tensor | None] = "all",
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Apply layers ``start:stop``. With one stream ``None`` every layer runs as ``U`` on the other.

        ``last`` says which rows the last of these layers computes: ``"all"``; ``"first"`` (each stream's first
        token only, returned as (B, 1, D)); or a pair of (B, T) / (B, R) bool masks (other rows come back zero).
        Returns the final states and, if ``keep_all``, each layer's output ``(t, v)``.
        """
        masks: dict[str, torch.Tensor] = {}
        outputs = []
        layers = self.layers[start:stop]
        real = self._real_rows(t, v, text_mask, img_mask)
        for i, layer in enumerate(layers):
            if layer.code not in masks:
                masks[layer.code] = block_mask(
                    layer.code, text_mask if t is not None else None, img_mask if v is not None else None
                )
            if i < len(layers) - 1 or last == "all":
                t, v = layer(t, v, masks[layer.code], real=real)
            elif last == "first":
                t, v = layer(t, v, masks[layer.code], first_only=True, real=real)  # (B, 1, D) each
            else:
                t, v = layer(t, v, masks[layer.code], rows=last, real=real)
            top = start + i + 1 == len(self.layers)
            if self.top_norms and top:
                t, v = self._top_norm(t, v)
            if keep_all:  # every layer's output as the heads read it
                outputs.append(self._top_norm(t, v) if self.top_norms and not top else (t, v))
        return t, v, outputs

    def _top_norm(
        self, t: torch.Tensor | None, v: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Pre-LN only: the LayerNorm on top of the stack, per stream (what every head reads)."""
        norm_t, norm_v = self.top_norms[0], self.top_norms[-1]
        return (norm_t(t) if t is not None else None), (norm_v(v) if v is not None else None)

    @staticmethod
    def _real_rows(t, v, text_mask, img_mask) -> tuple[torch.Tensor | None, torch.Tensor | None] | None:
        """The real-token masks for :class:`Layer` ``real`` (per-token work on real rows only) on a CPU, where
        every padding row costs as much as a real one; None on a GPU (padding is nearly free there, and the
        row gathers would cost a host sync per layer) and inside ``torch.compile``."""
        x = t if t is not None else v
        if x is None or x.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        return (text_mask if t is not None else None, img_mask if v is not None else None)

    def encode_text(
        self, text_ids: torch.Tensor, text_mask: torch.Tensor, n_layers: int | None = None, first_only: bool = False
    ) -> torch.Tensor:
        """Text alone through the embeddings and the first ``n_layers`` layers run as ``U``
        (default: the unimodal prefix, where this is exact). (B, T, D), or (B, 1, D) with ``first_only``
        (the last layer computes only the ``[CLS]`` state)."""
        n = self.config.n_unimodal_prefix if n_layers is None else n_layers
        t, _, _ = self.run_layers(
            self.embed_text(text_ids), None, text_mask, None, stop=n, last="first" if first_only else "all"
        )
        return t

    def encode_image(
        self, batch: dict, n_layers: int | None = None, first_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image alone, as :meth:`encode_text`. Returns (B, R, D) states (or (B, 1, D)) and the (B, R) mask."""
        n = self.config.n_unimodal_prefix if n_layers is None else n_layers
        v, img_mask = self.embed_image(batch)
        _, v, _ = self.run_layers(None, v, None, img_mask, stop=n, last="first" if first_only else "all")
        return v, img_mask

    def fuse(
        self,
        t: torch.Tensor,
        text_mask: torch.Tensor,
        v: torch.Tensor,
        img_mask: torch.Tensor,
        start: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the layers after the unimodal prefix (or from ``start``) on paired, pre-encoded streams."""
        start = self.config.n_unimodal_prefix if start is None else start
        t, v, _ = self.run_layers(t, v, text_mask, img_mask, start=start)
        return t, v

    def match_logits(
        self, t: torch.Tensor, text_mask: torch.Tensor, v: torch.Tensor, img_mask: torch.Tensor
    ) -> torch.Tensor:
        """ITM logits (B, 2) of pairs whose streams come from :meth:`encode_text` / :meth:`encode_image`.
        The last layer computes only the two states the ITM head reads."""
        t, v, _ = self.run_layers(t, v, text_mask, img_mask, start=self.config.n_unimodal_prefix, last="first")
        return self.itm[-1](t[:, 0], v[:, 0])

    def match_score(
        self, t: torch.Tensor, text_mask: torch.Tensor, v: torch.Tensor, img_mask: torch.Tensor
    ) -> torch.Tensor:
        """The match log-odds (B,) of :meth:`match_logits` (:func:`~mmtlab.model.heads.match_score`)."""
        return match_score(self.match_logits(t, text_mask, v, img_mask))

    # ----------------------------------------------------------------------------------- unimodal embeddings
    def text_vector(self, text_ids: torch.Tensor, text_mask: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        """The unimodal text embedding ``text_vec`` (B, P), L2-normalised: the caption alone through ``n_layers``
        layers run as ``U`` (default: all), its ``[CLS]`` state through the projection head. Not the ``text_emb``
        output of :meth:`forward`, which projects the fused state (the two agree for a dual model)."""
        n = self.config.layers if n_layers is None else n_layers
        t = self.encode_text(text_ids, text_mask, n_layers=n, first_only=True)  # (B, 1, D)
        return self.proj.embed_text(t[:, 0])

    def image_vector(self, batch: dict, n_layers: int | None = None) -> torch.Tensor:
        """The unimodal image embedding ``img_vec`` (B, P), as :meth:`text_vector` (the global token's state)."""
        n = self.config.layers if n_layers is None else n_layers
        v, _ = self.encode_image(batch, n_layers=n, first_only=True)  # (B, 1, D)
        return self.proj.embed_image(v[:, 0])

    # ----------------------------------------------------------------------------------- forward
    def forward(self, batch: dict, full_states: bool = True) -> dict[str, torch.Tensor]:
        """Run the model on a batch (see :mod:`mmtlab.model.inputs`). Optional keys ``mlm_mask`` (B, T) and
        ``mrm_mask`` (B, R) select where MLM / MRM predictions are computed (only there).

        ``full_states=False`` (training): the last layer finishes only the rows the heads read -- ``[CLS]``, the
        image global token and the ``mlm_mask`` / ``mrm_mask`` positions -- and the output has no
        ``text_states`` / ``img_states``; every head output is the same as with ``full_states=True``.
        """
        if not torch.compiler.is_compiling():  # the checks read values (host syncs, graph breaks)
            validate_batch(batch, self.config)
        text_mask = batch["text_mask"]
        t = self.embed_text(batch["text_ids"])  # (B, T, D)
        v, img_mask = self.embed_image(batch)  # (B, R, D)
        last = (
            "all"
            if full_states
            else (self._read_rows(batch.get("mlm_mask"), t), self._read_rows(batch.get("mrm_mask"), v))
        )
        t, v, per_layer = self.run_layers(t, v, text_mask, img_mask, keep_all=self.config.itm_every_layer, last=last)

        out: dict[str, torch.Tensor] = {"text_states": t, "img_states": v} if full_states else {}
        if self.config.itm_every_layer:
            out["itm_logits_per_layer"] = torch.stack(
                [head(ti[:, 0], vi[:, 0]) for head, (ti, vi) in zip(self.itm, per_layer)]
            )  # (L, B, 2)
            out["itm_logits"] = out["itm_logits_per_layer"][-1]
        else:
            out["itm_logits"] = self.itm[-1](t[:, 0], v[:, 0])  # (B, 2)
        out["text_emb"] = self.proj.embed_text(t[:, 0])  # (B, P)
        out["img_emb"] = self.proj.embed_image(v[:, 0])  # (B, P)
        out["logit_scale"] = self.proj.logit_scale.exp()
        if batch.get("mlm_mask") is not None:
            out["mlm_logits"] = self.mlm(t[batch["mlm_mask"]], self.text_embed.word.weight)  # (N_masked, n_words)
        if batch.get("mrm_mask") is not None:
            out["mrm_logits"], out["mrm_feats"] = self.mrm(v[batch["mrm_mask"]])  # (N_masked, C), (N_masked, F)
        return out

    @staticmethod
    def _read_rows(head_mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """(B, N) bool: the first token of the stream plus the positions a head predicts at."""
        rows = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        rows[:, 0] = True
        return rows | head_mask if head_mask is not None else rows

    def num_parameters(self, layers_only: bool = False) -> int:
        params = self.layers.parameters() if layers_only else self.parameters()
        return sum(p.numel() for p in params)
