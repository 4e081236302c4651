"""Retrieval metrics of the paper's protocol (docs/design.md, "Evaluation"): R@1/5/10, median and mean rank, both
directions.

Ranks are 1-based and **pessimistic**: an item's rank is ``1 + the number of wrong items scoring >= it``, so
a tie with a wrong item counts against the model (a constant scorer gets the worst rank, not a lucky one).

* text -> image: for each caption, rank all images; the true image is the caption's own.
* image -> text: for each image, rank all captions; the image's best-ranked own caption counts (a hit at K
  if any of its captions is in the top K), wrong items are the other images' captions.

Identical captions of different images tie with each other, so they cap R@1 below 100% whatever the model:
:func:`recall_caps` computes that cap.

This module needs only torch (no data layer).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import torch

from ..errors import MmtlabError

RECALL_AT = (1, 5, 10)


class EvalError(MmtlabError, ValueError):
    """An evaluation cannot give an honest number (empty split, bad scores, a scorer the run cannot use)."""


def _summary(ranks: torch.Tensor) -> dict[str, float]:
    """R@K in percent, median and mean of 1-based ranks (median of an even count = mean of the middle two)."""
    r = ranks.double()
    out = {f"R@{k}": float((r <= k).double().mean() * 100) for k in RECALL_AT}
    out["median_rank"] = float(r.quantile(0.5))
    out["mean_rank"] = float(r.mean())
    return out


def _check(scores: torch.Tensor, caption_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores)
    caption_image = torch.as_tensor(caption_image)
    if scores.dim() != 2:
        raise EvalError(f"scores must be a (n_captions, n_images) matrix, got shape {tuple(scores.shape)}")
    n_captions, n_images = scores.shape
    if n_captions == 0 or n_images == 0:
        raise EvalError(f"empty split: {n_captions} captions x {n_images} images; retrieval needs at least one of each")
    if caption_image.shape != (n_captions,):
        raise EvalError(
            f"caption_image must have shape ({n_captions},) (one image per caption), got {tuple(caption_image.shape)}"
        )
    if caption_image.is_floating_point() or caption_image.dtype == torch.bool:
        raise EvalError(f"caption_image must hold integer image indices, got {caption_image.dtype}")
    lo, hi = int(caption_image.min()), int(caption_image.max())
    if lo < 0 or hi >= n_images:
        raise EvalError(f"caption_image holds image index {lo if lo < 0 else hi}; valid: 0..{n_images - 1}")
    if not scores.is_floating_point():
        scores = scores.double()
    if torch.isnan(scores).any():
        raise EvalError(f"scores hold {int(torch.isnan(scores).sum())} NaN value(s); cannot rank")
    return scores, caption_image.long()


def caption_counts(caption_image: torch.Tensor, n_images: int) -> torch.Tensor:
    """Number of captions of each image, (n_images,) long."""
    return torch.bincount(torch.as_tensor(caption_image).long(), minlength=n_images)


def text_to_image_ranks(scores: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """(n_captions,) pessimistic rank of each caption's image among all images."""
    scores, caption_image = _check(scores, caption_image)
    true = scores.gather(1, caption_image[:, None])  # (Nc, 1)
    return (scores >= true).sum(1)  # the true image counts itself once: 1 + wrong images scoring >= it


def image_to_text_ranks(scores: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """(n_images,) pessimistic rank of each image's best own caption among all captions.
    Images without a caption get rank 0 (excluded by :func:`retrieval_metrics`)."""
    scores, caption_image = _check(scores, caption_image)
    n_captions, n_images = scores.shape
    own = caption_image[:, None] == torch.arange(n_images)[None]  # (Nc, Ni)
    best = scores.masked_fill(~own, float("-inf")).amax(0)  # (Ni,) best own-caption score
    wrong_ge = (scores >= best[None]) & ~own  # (Nc, Ni)
    ranks = 1 + wrong_ge.sum(0)
    return ranks.masked_fill(caption_counts(caption_image, n_images) == 0, 0)


def retrieval_metrics(scores: torch.Tensor, caption_image: torch.Tensor) -> dict:
    """Metrics of a (n_captions, n_images) score matrix (higher = better match) in the results contract.

    Returns ``{"n_images", "n_captions", "text_to_image": {...}, "image_to_text": {...}, "notes": [...]}``,
    each direction with ``R@1``, ``R@5``, ``R@10`` (percent), ``median_rank`` and ``mean_rank``. ``notes``
    states departures from the protocol (not 5 captions per image; images without captions, which still
    count as distractors for text -> image but are not image -> text queries).

    >>> m = retrieval_metrics(torch.eye(3), torch.arange(3))
    >>> m["text_to_image"]["R@1"], m["image_to_text"]["mean_rank"]
    (100.0, 1.0)
    """
    scores, caption_image = _check(scores, caption_image)
    n_captions, n_images = scores.shape
    counts = caption_counts(caption_image, n_images)
    i2t = image_to_text_ranks(scores, caption_image)
    notes = []
    if not bool((counts == 5).all()):
        with_caps = counts[counts > 0]
        notes.append(
            f"not 5 captions per image (protocol): {int(with_caps.min())}-{int(with_caps.max())} captions per image, "
            f"{n_captions / max(len(with_caps), 1):.2f} on average"
        )
    if bool((counts == 0).any()):
        notes.append(
            f"{int((counts == 0).sum())} image(s) without captions: distractors for text->image, "
            "not image->text queries"
        )
    return {
        "n_images": n_images,
        "n_captions": n_captions,
        "text_to_image": _summary(text_to_image_ranks(scores, caption_image)),
        "image_to_text": _summary(i2t[counts > 0]),
        "notes": notes,
    }


def recall_caps(caption_keys: Sequence[Hashable], caption_image: Sequence[int]) -> dict:
    """The highest R@1 (percent) any scorer can reach on a split where captions with the same key (the same
    text as the model reads it) belong to different images: such captions get the same score with every image,
    so under the pessimistic tie rule at most one of their images can rank first for them (text -> image), and
    an image ranks first for image -> text only through a caption whose text no other image has.

    Returns ``text_to_image`` and ``image_to_text`` (the caps, percent), ``captions_sharing_text`` (captions
    whose text another image also has) and ``shared_texts`` (such texts).

    >>> recall_caps(["a dog", "a dog", "a cat"], [0, 1, 1])["text_to_image"]  # one "a dog" can be right
    66.66666666666667
    """
    images_of: dict[Hashable, Counter] = defaultdict(Counter)
    for key, image in zip(caption_keys, caption_image):
        images_of[key][int(image)] += 1
    n_captions = sum(sum(c.values()) for c in images_of.values())
    if n_captions == 0:
        raise EvalError("no captions: R@1 caps need at least one caption")
    shared = {k: c for k, c in images_of.items() if len(c) > 1}
    unique_owner = {next(iter(c)) for c in images_of.values() if len(c) == 1}  # images with a text of their own
    queried = {int(i) for i in caption_image}  # images with at least one caption
    return {
        "text_to_image": 100.0 * sum(max(c.values()) for c in images_of.values()) / n_captions,
        "image_to_text": 100.0 * len(unique_owner) / len(queried),
        "captions_sharing_text": sum(sum(c.values()) for c in shared.values()),
        "shared_texts": len(shared),
    }


__all__ = [
    "EvalError",
    "RECALL_AT",
    "retrieval_metrics",
    "recall_caps",
    "text_to_image_ranks",
    "image_to_text_ranks",
    "caption_counts",
]
