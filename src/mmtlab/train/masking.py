"""Input corruption for the pretraining losses: ITM negatives, whole-word MLM masking, region masking.

All functions draw from the global torch RNG; the trainer seeds it per micro-batch (from the run seed and
the micro-batch's global index), so a run is the same for any number of processes and after a resume.
"""

from __future__ import annotations

import torch

# Batch keys that describe the image / the caption of a pair (swapped together to make a negative).
IMAGE_KEYS = ("img_feats", "img_boxes", "img_mask", "img_cls", "pixels", "image_index")
TEXT_KEYS = ("text_ids", "text_mask", "text_word_ids", "caption_index")


def choose_per_row(valid: torch.Tensor, prob: float) -> torch.Tensor:
    """Pick ``max(1, round(prob * n))`` of the ``n`` valid items of each row uniformly at random.

    valid: (B, N) bool. Returns (B, N) bool, a subset of ``valid``; rows with no valid item pick nothing.
    """
    n = valid.sum(1)  # (B,)
    k = torch.where(n > 0, (prob * n).round().clamp(min=1), torch.zeros_like(n))  # (B,)
    scores = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, 2.0)  # invalid items sort last
    rank = scores.argsort(1).argsort(1)  # (B, N) position of each item in a random order
    return (rank < k[:, None]) & valid


def other_index(batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """For each row ``i`` a uniformly random row ``j != i``. (B,) long; requires ``batch_size >= 2``."""
    shift = torch.randint(1, batch_size, (batch_size,), device=device)
    return (torch.arange(batch_size, device=device) + shift) % batch_size


def similar_caption_index(text_ids: torch.Tensor, text_mask: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """For each row ``i`` a row ``j != i`` drawn with probability ``softmax(jaccard(i, j) / temperature)``, where
    ``jaccard`` is the overlap of the two captions' sets of word pieces, leaving out pieces that occur in more
    than half of the batch's captions (articles, ``[CLS]``, ``[SEP]``). (B,) long; requires ``B >= 2``.

    The image of a caption that says nearly the same thing is a *hard* ITM negative: with random negatives a
    cross-encoder can separate pairs by a coarse cue (how many objects, a colour) and never learn the rest.
    """
    B, vocab = text_ids.shape[0], int(text_ids.max()) + 1
    bags = torch.zeros(B, vocab, device=text_ids.device)
    bags.scatter_(1, text_ids.masked_fill(~text_mask, 0), 1.0)  # (B, V) which pieces each caption uses
    bags[:, 0] = 0.0  # padding id
    bags = bags * (bags.mean(0) <= 0.5)  # drop batch-level stop pieces
    inter = bags @ bags.T  # (B, B)
    n = bags.sum(1)
    jaccard = inter / (n[:, None] + n[None, :] - inter).clamp_min(1.0)
    logits = (jaccard / temperature).fill_diagonal_(float("-inf"))
    return torch.multinomial(logits.softmax(1), 1).squeeze(1)  # (B,)


def itm_negatives(batch: dict, ratio: float, swap: str = "image", negatives: str = "random") -> tuple[dict, torch.Tensor]:
    """Turn a fraction ``ratio`` of the pairs into mismatches by swapping in another sample's image
    (``swap="image"``), caption (``"caption"``) or, per pair at random, either (``"either"``). The other
    sample is uniformly random (``negatives="random"``, the paper's ITM) or one whose caption is similar
    (``"similar"``: :func:`similar_caption_index`).

    Returns the new batch (a shallow copy; the input is not modified) and ``itm_labels`` (B,) long,
    1 = matched. A swapped pair whose image is the same picture (``image_index`` equal, e.g. another caption
    of the same image) stays labelled 1.
    """
    B = batch["text_ids"].shape[0]
    device = batch["text_ids"].device
    swapped = torch.rand(B, device=device) < ratio if B > 1 else torch.zeros(B, dtype=torch.bool, device=device)
    if B < 2:
        j = torch.zeros(B, dtype=torch.long, device=device)
    elif negatives == "similar":
        j = similar_caption_index(batch["text_ids"], batch["text_mask"])
    else:
        j = other_index(B, device)
    src = torch.where(swapped, j, torch.arange(B, device=device))  # (B,) row the swapped part comes from
    if swap == "either":
        use_caption = torch.rand(B, device=device) < 0.5
    else:
        use_caption = torch.full((B,), swap == "caption", device=device)
    rows = {}  # for image and caption: the row each pair's part comes from
    rows["image"] = torch.where(use_caption, torch.arange(B, device=device), src)  # (B,)
    rows["caption"] = torch.where(use_caption, src, torch.arange(B, device=device))  # (B,)
    out = dict(batch)
    for keys, part in ((IMAGE_KEYS, "image"), (TEXT_KEYS, "caption")):
        for key in keys:
            if batch.get(key) is not None:
                out[key] = batch[key][rows[part]]
    if batch.get("image_index") is not None:  # matched = the image is the one the caption was written for
        image = image_ids(batch)
        return out, (image[rows["image"]] == image[rows["caption"]]).long()
    return out, (~swapped).long()


def image_ids(batch: dict) -> torch.Tensor:
    """(B,) an id per pair's image, unique across the datasets of a mixture (``image_index``, ``dataset_index``)."""
    ids = batch["image_index"]
    if batch.get("dataset_index") is not None:
        ids = ids + batch["dataset_index"].long() * (1 << 40)
    return ids


def mask_words(
    text_ids: torch.Tensor, word_ids: torch.Tensor, prob: float, mask_token_id: int, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-word masking with BERT's 80/10/10 rule.

    text_ids, word_ids: (B, T) (``word_ids`` = index of each piece's word, -1 for special/pad tokens).
    Picks ``max(1, round(prob * n_words))`` words per caption; every piece of a picked word is a target:
    80% become ``[MASK]``, 10% a random id, 10% stay. Returns (new ids, targets (B, T) bool).
    """
    B, T = text_ids.shape
    n_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    if n_words <= 0:
        return text_ids, torch.zeros_like(text_ids, dtype=torch.bool)
    present = torch.zeros(B, n_words + 1, dtype=torch.bool, device=text_ids.device)
    present.scatter_(1, word_ids + 1, True)  # column 0 collects the -1s
    words = choose_per_row(present[:, 1:], prob)  # (B, W)
    targets = words.gather(1, word_ids.clamp(min=0)) & (word_ids >= 0)  # (B, T)
    r = torch.rand(B, T, device=text_ids.device)
    ids = text_ids.clone()
    ids[targets & (r < 0.8)] = mask_token_id
    rand_pos = targets & (r >= 0.8) & (r < 0.9)
    ids[rand_pos] = torch.randint(0, vocab_size, (int(rand_pos.sum()),), device=ids.device)
    return ids, targets


def mask_regions(img_feats: torch.Tensor, img_mask: torch.Tensor, prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``max(1, round(prob * n))`` of the ``n`` real regions of each image (never the global token at
    index 0) by zeroing their features. Returns (new feats (B, R, F), targets (B, R) bool)."""
    valid = img_mask.clone()
    valid[:, 0] = False
    targets = choose_per_row(valid, prob)  # (B, R)
    return img_feats.masked_fill(targets[..., None], 0.0), targets
