"""The pretraining losses (docs/design.md, "Loss terms") and :class:`PretrainingLoss`, which combines a loss set.

=====================  ==============================================================================
term                   what
=====================  ==============================================================================
``itm``                cross-entropy of the ITM head on matched pairs and swapped-in negatives; with an
                       ITM head after every layer (``model.hloss``) the mean over those heads
``mlm``                cross-entropy at whole-word-masked positions of matched pairs
``mrm-kl``             KL(region class distribution || prediction) at masked regions of matched pairs
``mrm-cls``            cross-entropy to the argmax class at those regions
``mrm-reg``            mean squared error to the original (unmasked) feature at those regions
``itm-contrastive``    InfoNCE: cross-encoders over the match logit of 1 positive + K in-batch negatives;
                       dual models (all ``U``) over embedding similarity with all in-batch negatives of
                       every process (gathered with gradients), symmetric
``itc``                the dual InfoNCE on the *unimodal view* of any model (not in the paper's loss sets)
=====================  ==============================================================================
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..config import ConfigError
from ..model.heads import match_score
from ..model.inputs import pair_up
from ..run.config import LossConfig
from ..run.terms import INPUTS, TERMS
from .masking import image_ids, itm_negatives, mask_regions, mask_words, piece_idf

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on the learned temperature


def _rows_mean(loss_fn, pred: torch.Tensor, target: torch.Tensor, per_row: int = 1) -> torch.Tensor:
    """``loss_fn(pred, target, reduction="sum")`` divided by rows x ``per_row``: the mean over rows, and 0 (still
    attached to the graph) when there is no row. Branch-free, so that ``torch.compile`` traces it with a row count
    that depends on the data (:mod:`mmtlab.model.compile`)."""
    return loss_fn(pred.float(), target, reduction="sum") / (max(pred.shape[0], 1) * per_row)


def itm_loss(out: dict, labels: torch.Tensor) -> torch.Tensor:
    """ITM cross-entropy; with per-layer heads (``itm_logits_per_layer`` (L, B, 2)) the mean over layers."""
    if "itm_logits_per_layer" in out:
        per_layer = out["itm_logits_per_layer"]  # (L, B, 2)
        L = per_layer.shape[0]
        return F.cross_entropy(per_layer.float().flatten(0, 1), labels.repeat(L))
    return F.cross_entropy(out["itm_logits"].float(), labels)


def mlm_loss(mlm_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mlm_logits (N, V) at the masked positions, targets (N,) the original ids (-100: ignored, as in
    ``F.cross_entropy``); the mean over the scored positions, 0 when there is none."""
    total = F.cross_entropy(mlm_logits.float(), targets, reduction="sum")
    return total / (targets != -100).sum().clamp_min(1)


def mrm_kl_loss(mrm_logits: torch.Tensor, target_dist: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(logits)), averaged over masked regions. target_dist (N, C) is renormalised."""
    target = target_dist.float() / target_dist.float().sum(-1, keepdim=True).clamp_min(1e-12)

    def kl(pred: torch.Tensor, tgt: torch.Tensor, reduction: str) -> torch.Tensor:
        return F.kl_div(F.log_softmax(pred, -1), tgt, reduction=reduction)

    return _rows_mean(kl, mrm_logits, target)


def mrm_cls_loss(mrm_logits: torch.Tensor, target_dist: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the most likely class of each masked region."""
    return _rows_mean(F.cross_entropy, mrm_logits, target_dist.argmax(-1))


def mrm_reg_loss(mrm_feats: torch.Tensor, target_feats: torch.Tensor) -> torch.Tensor:
    """Mean squared error (over regions and feature dims) to the original features."""
    return _rows_mean(F.mse_loss, mrm_feats, target_feats.float(), per_row=mrm_feats.shape[-1])


def _gather(x: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` from every process (rank order) and return it with this rank's row offset."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(x)
    else:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
    return torch.cat(parts), dist.get_rank() * x.shape[0]


def similarity_logits(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` times the learned temperature (clamped like CLIP's), in fp32: (N, M) from (N, P), (M, P)."""
    return logit_scale.clamp(max=MAX_LOGIT_SCALE) * a.float() @ b.float().T


def dual_contrastive_loss(
    text_vec: torch.Tensor, img_vec: torch.Tensor, logit_scale: torch.Tensor, ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE over ``text_vec @ img_vec.T * logit_scale`` with every in-batch negative of every
    process. text_vec, img_vec: (B, P) unimodal embeddings (:func:`unimodal_embeddings`), L2-normalised; row
    ``i`` of both is a matched pair. ``ids`` (B,) identifies images: another pair of the same image is not used
    as a negative."""
    all_text, offset = _gather(text_vec, with_grad=True)  # (W*B, P)
    all_img, _ = _gather(img_vec, with_grad=True)
    B = text_vec.shape[0]
    targets = offset + torch.arange(B, device=text_vec.device)  # (B,)
    t2i = similarity_logits(text_vec, all_img, logit_scale)  # (B, W*B)
    i2t = similarity_logits(img_vec, all_text, logit_scale)
    if ids is not None:
        all_ids, _ = _gather(ids, with_grad=False)
        false_neg = ids[:, None] == all_ids[None, :]  # (B, W*B)
        false_neg[torch.arange(B), targets] = False
        t2i = t2i.masked_fill(false_neg, float("-inf"))
        i2t = i2t.masked_fill(false_neg, float("-inf"))
    return (F.cross_entropy(t2i, targets) + F.cross_entropy(i2t, targets)) / 2


def unimodal_embeddings(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The unimodal embeddings ``(text_vec, img_vec)`` (B, P), (B, P) of a batch's pairs: the model's
    :meth:`~mmtlab.model.MultimodalTransformer.text_vector` and ``image_vector`` over all layers."""
    return model.text_vector(batch["text_ids"], batch["text_mask"]), model.image_vector(batch)


def cross_contrastive_loss(model: torch.nn.Module, batch: dict, k: int) -> torch.Tensor:
    """InfoNCE over the cross-encoder's match score: each caption against its own image and
    ``K = min(k, B - 1)`` other images of the batch (chosen at random; other pictures first). Runs the
    model on ``B * (K + 1)`` pairs."""
    B = batch["text_ids"].shape[0]
    K = min(k, B - 1)
    device = batch["text_ids"].device
    if K < 1:
        raise ValueError("itm-contrastive needs at least 2 pairs per micro-batch; raise train.micro_batch_size")
    ids = image_ids(batch) if batch.get("image_index") is not None else torch.arange(B, device=device)
    same = ids[:, None] == ids[None, :]  # (B, B), diagonal included
    scores = torch.rand(B, B, device=device) + same.float()  # same picture sorts after every other one
    scores.fill_diagonal_(3.0)
    negs = scores.argsort(1)[:, :K]  # (B, K)
    img_rows = torch.cat([torch.arange(B, device=device)[:, None], negs], 1)  # (B, K+1), column 0 = positive
    txt_rows = torch.arange(B, device=device)[:, None].expand(B, K + 1)
    pairs = pair_up(batch, txt_rows.flatten(), img_rows.flatten())
    scores = match_score(model(pairs, full_states=False)["itm_logits"]).view(B, K + 1)
    scores = scores.masked_fill(same.gather(1, img_rows) & (torch.arange(K + 1, device=device) > 0), float("-inf"))
    return F.cross_entropy(scores, torch.zeros(B, dtype=torch.long, device=device))


class PretrainingLoss:
    """A loss set as a ``loss_fn(model, batch, step) -> (total, {term: loss})`` for :func:`mmtlab.train.train`.

    One forward pass over the corrupted batch serves ITM, MLM and MRM: a fraction of pairs becomes ITM
    negatives, then words and regions are masked in every pair, and MLM / MRM are scored only in the pairs
    that are still matched. Contrastive terms run their own passes on the clean batch. ``total`` is the
    weighted sum; ``terms`` holds every active term.
    """

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg

    def __call__(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, w = self.cfg, self.cfg.weight
        terms: dict[str, torch.Tensor] = {}
        similarity = None
        if w("itc"):  # before the fused pass: its caption-to-image logits pick itc-mined ITM negatives
            terms["itc"], similarity = self.dual_term(model, batch, with_similarity=cfg.itm_negatives == "itc")
        if any(TERMS[t].fused for t in cfg.active):
            terms.update(self.fused_terms(model, batch, similarity))
        if w("itm-contrastive"):
            if model.config.is_dual:  # the same InfoNCE as itc on a dual model: computed once
                terms["itm-contrastive"] = terms["itc"] if "itc" in terms else self.dual_term(model, batch)[0]
            else:
                terms["itm-contrastive"] = cross_contrastive_loss(model, batch, cfg.contrastive_k)
        total = sum(cfg.weight_at(t, step) * loss for t, loss in terms.items())
        return total, terms

    @staticmethod
    def dual_term(
        model: torch.nn.Module, batch: dict, with_similarity: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The dual InfoNCE on the unimodal view (a dual model's own embeddings), and, if asked, the batch's
        (B, B) caption-to-image logits for ``loss.itm_negatives=itc`` (which detaches them)."""
        ids = image_ids(batch) if batch.get("image_index") is not None else None
        text_vec, img_vec = unimodal_embeddings(model, batch)
        scale = model.proj.logit_scale.exp()
        similarity = similarity_logits(text_vec, img_vec, scale) if with_similarity else None
        return dual_contrastive_loss(text_vec, img_vec, scale, ids), similarity

    def fused_terms(
        self, model: torch.nn.Module, batch: dict, similarity: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """ITM, MLM and MRM (only the active ones): from one forward pass over the corrupted batch, or with
        ``loss.itm_inputs=clean`` ITM from its own pass over unmasked pairs and MLM / MRM from a second pass over
        the pairs that ITM kept matched, masked -- the same pairs MLM and MRM are scored on in the one-pass
        form, so the two forms differ only in what the ITM head reads (the second pass costs about half a
        step). ``similarity``: the batch's (B, B) caption-to-image logits from the ``itc`` term, for
        ``loss.itm_negatives=itc``."""
        cfg, w = self.cfg, self.cfg.weight
        needs_masking = any(TERMS[t].masks for t in cfg.active)
        if w("itm"):
            x, labels = itm_negatives(batch, cfg.itm_neg_ratio, cfg.itm_swap, cfg.itm_negatives, similarity)
            if cfg.itm_inputs == "masked" or not needs_masking:
                return self.masked_terms(model, x, labels)
            terms = {"itm": itm_loss(model(x, full_states=False), labels)}
            matched = labels.bool()
            if not bool(matched.any()):  # (a tiny micro-batch of negatives only) MLM / MRM on every pair instead
                matched = torch.ones_like(matched)
            return terms | self.masked_terms(model, {k: v[matched] for k, v in x.items()}, None)
        return self.masked_terms(model, dict(batch), None)

    def masked_terms(self, model: torch.nn.Module, x: dict, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One forward pass over ``x`` with words and regions masked: MLM and MRM at the targets of matched
        pairs, and ITM against ``labels`` (1 = matched) unless ``labels`` is None (then every pair is matched)."""
        cfg = self.cfg
        fused = [t for t in cfg.active if TERMS[t].fused and (t != "itm" or labels is not None)]
        if labels is None:
            labels = torch.ones_like(x["text_ids"][:, 0])
        check_inputs(x, fused)
        # Inputs are masked in every pair, matched or not (masking only matched pairs would tell the ITM head
        # the answer); predictions and losses are made only at the targets of matched pairs.
        matched = labels.bool()  # (B,)
        clean = {"itm_labels": labels, "text_ids": x["text_ids"], "img_feats": x.get("img_feats")}
        masks = {TERMS[t].masks for t in fused}
        if "words" in masks:
            idf = piece_idf(x["text_ids"], x["text_word_ids"]) if cfg.mlm_words == "idf" else None
            x["text_ids"], masked = mask_words(
                x["text_ids"], x["text_word_ids"], cfg.mlm_prob, cfg.mask_token_id, model.config.vocab_size,
                vocab_ids=model.text_embed.kept_ids, piece_weights=idf,
            )  # fmt: skip
            x["mlm_mask"] = masked & matched[:, None]  # (B, T)
        if "regions" in masks:
            x["img_feats"], masked = mask_regions(x["img_feats"], x["img_mask"], cfg.mrm_prob)
            x["mrm_mask"] = masked & matched[:, None]  # (B, R)
        out = model(x, full_states=False)  # the last layer only where the heads read
        return {t: FUSED_LOSSES[t](model, out, x, clean) for t in fused}


def check_inputs(x: dict, terms: list[str]) -> None:
    """Each of ``terms`` finds the batch keys it reads (``LossTerm.needs``); region class distributions come from
    the data (a :class:`ConfigError`), the word of each piece from the collator (a ``ValueError``, a bug)."""
    for key, error, way_out in (
        ("text_word_ids", ValueError, "collate the captions with collate_texts"),
        ("img_cls", ConfigError, "use mrm-reg"),
        ("img_feats", ConfigError, "use --loss itm+mlm"),
    ):
        users = [t for t in terms if key in TERMS[t].needs]
        if users and x.get(key) is None:
            raise error(f"{' / '.join(users)} need {INPUTS[key]}; the batch has none ({way_out})")


# The terms of the shared forward pass: ``(model, out, x, clean) -> loss`` from the model's outputs ``out`` on the
# masked inputs ``x`` and ``clean``, the inputs before masking and the ITM labels.
FUSED_LOSSES = {
    "itm": lambda model, out, x, clean: itm_loss(out, clean["itm_labels"]),
    "mlm": lambda model, out, x, clean: mlm_loss(
        out["mlm_logits"], model.text_embed.word_rows(clean["text_ids"][x["mlm_mask"]])
    ),
    "mrm-kl": lambda model, out, x, clean: mrm_kl_loss(out["mrm_logits"], x["img_cls"][x["mrm_mask"]]),
    "mrm-cls": lambda model, out, x, clean: mrm_cls_loss(out["mrm_logits"], x["img_cls"][x["mrm_mask"]]),
    "mrm-reg": lambda model, out, x, clean: mrm_reg_loss(out["mrm_feats"], clean["img_feats"][x["mrm_mask"]]),
}
