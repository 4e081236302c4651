"""Input corruption for the pretraining losses: ITM negatives, whole-word MLM masking, region masking.

All functions draw from the global torch RNG; the trainer seeds it per micro-batch (from the run seed and
the micro-batch's global index), so a run is the same for any number of processes and after a resume.
"""

from __future__ import annotations

import torch

from ..model.inputs import pair_up


def choose_per_row(valid: torch.Tensor, prob: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pick ``max(1, round(prob * n))`` of the ``n`` valid items of each row, uniformly at random or, with
    ``weights`` (B, N) > 0, without replacement with probability proportional to the weight (each draw among
    the items not yet picked; an exponential race: the ``k`` smallest ``Exp(1) / weight``).

    valid: (B, N) bool. Returns (B, N) bool, a subset of ``valid``; rows with no valid item pick nothing.
    """
    n = valid.sum(1)  # (B,)
    k = torch.where(n > 0, (prob * n).round().clamp(min=1), torch.zeros_like(n))  # (B,)
    if weights is None:
        scores = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, 2.0)  # invalid items sort last
    else:
        race = -torch.rand(valid.shape, device=valid.device).clamp_min(1e-12).log() / weights  # (B, N) Exp(1) / w
        scores = race.masked_fill(~valid, float("inf"))
    rank = scores.argsort(1).argsort(1)  # (B, N) position of each item in a random order
    return (rank < k[:, None]) & valid


def other_index(batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """For each row ``i`` a uniformly random row ``j != i``. (B,) long; requires ``batch_size >= 2``."""
    shift = torch.randint(1, batch_size, (batch_size,), device=device)
    return (torch.arange(batch_size, device=device) + shift) % batch_size


def sample_other(logits: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """For each row ``i`` a column ``j != i`` drawn with probability ``softmax(logits[i])`` over the allowed
    columns. logits: (B, B); ``exclude`` (B, B) bool marks further columns not to draw (e.g. other pairs of the
    same picture); a row left with nothing draws among all ``j != i``. (B,) long; needs ``B >= 2``."""
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    banned = eye if exclude is None else eye | exclude
    banned = torch.where(banned.all(1, keepdim=True), eye, banned)  # (B, B)
    probs = logits.float().masked_fill(banned, float("-inf")).softmax(1)
    return torch.multinomial(probs, 1).squeeze(1)  # (B,)


def piece_bags(text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """(B, V) 1.0 where caption ``b`` uses word piece ``v`` (``V`` = the largest id + 1; padding id 0 left out)."""
    bags = torch.zeros(text_ids.shape[0], int(text_ids.max()) + 1, device=text_ids.device)
    bags.scatter_(1, text_ids.masked_fill(~text_mask, 0), 1.0)
    bags[:, 0] = 0.0
    return bags


def caption_similarity(text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """(B, B) Jaccard overlap of the captions' sets of word pieces, leaving out pieces that occur in more than
    half of the batch's captions (articles, ``[CLS]``, ``[SEP]``)."""
    bags = piece_bags(text_ids, text_mask)  # (B, V) which pieces each caption uses
    bags = bags * (bags.mean(0) <= 0.5)  # drop batch-level stop pieces
    inter = bags @ bags.T  # (B, B)
    n = bags.sum(1)
    return inter / (n[:, None] + n[None, :] - inter).clamp_min(1.0)


def piece_idf(text_ids: torch.Tensor, word_ids: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """(B, T) the inverse document frequency of each word piece among the batch's ``B`` captions,
    ``log((1 + B) / (1 + captions using it))``, at least ``floor``; 0 at special and padding tokens
    (``word_ids`` -1). A piece in every caption (an article, the full stop) gets the floor."""
    words = word_ids >= 0  # (B, T)
    df = piece_bags(text_ids, words).sum(0)  # (V,) captions using each piece
    B = text_ids.shape[0]
    idf = torch.log((1.0 + B) / (1.0 + df)).clamp_min(floor)  # (V,)
    return idf[text_ids] * words


def similar_caption_index(
    text_ids: torch.Tensor, text_mask: torch.Tensor, exclude: torch.Tensor | None = None, temperature: float = 0.05
) -> torch.Tensor:
    """For each row ``i`` a row ``j != i`` (and not excluded) drawn with probability
    ``softmax(caption_similarity(i, j) / temperature)``. (B,) long; requires ``B >= 2``.

    The image of a caption that says nearly the same thing is a *hard* ITM negative: with random negatives a
    cross-encoder can separate pairs by a coarse cue (how many objects, a colour) and never learn the rest.
    """
    return sample_other(caption_similarity(text_ids, text_mask) / temperature, exclude)


def itm_negatives(
    batch: dict, ratio: float, swap: str = "image", negatives: str = "random", similarity: torch.Tensor | None = None
) -> tuple[dict, torch.Tensor]:
    """Turn a fraction ``ratio`` of the pairs into mismatches by swapping in another sample's image
    (``swap="image"``), caption (``"caption"``) or, per pair at random, either (``"either"``). The other
    sample is

    * ``negatives="random"``: uniformly random (the paper's ITM);
    * ``"similar"``: one whose caption is similar (:func:`similar_caption_index`);
    * ``"itc"``: one the model's own embeddings rank close (ALBEF's hard negatives). ``similarity`` (B, B) holds
      the caption-to-image logits of the unimodal embeddings (``text_vec @ img_vec.T * scale``): caption ``i``
      gets image ``j`` with probability ``softmax(similarity[i])``, image ``i`` gets caption ``j`` with
      ``softmax(similarity[:, i])``.

    ``similar`` and ``itc`` never draw another pair of the same picture. Returns the new batch (a shallow
    copy; the input is not modified) and ``itm_labels`` (B,) long, 1 = matched. A swapped pair whose image is
    the same picture (``image_index`` equal, e.g. another caption of the same image) stays labelled 1.
    """
    B = batch["text_ids"].shape[0]
    device = batch["text_ids"].device
    rows = torch.arange(B, device=device)
    same = None
    if batch.get("image_index") is not None:
        ids = image_ids(batch)
        same = ids[:, None] == ids[None, :]  # (B, B) pairs of the same picture
    swapped = torch.rand(B, device=device) < ratio if B > 1 else torch.zeros(B, dtype=torch.bool, device=device)
    if swap == "either":
        use_caption = torch.rand(B, device=device) < 0.5
    else:
        use_caption = torch.full((B,), swap == "caption", device=device)
    if B < 2:
        j = rows
    elif negatives == "similar":
        j = similar_caption_index(batch["text_ids"], batch["text_mask"], same)
    elif negatives == "itc":
        if similarity is None:
            raise ValueError("itm_negatives='itc' needs the (B, B) caption-to-image similarity of the batch")
        sim = similarity.detach()
        j = torch.where(use_caption, sample_other(sim.T, same), sample_other(sim, same))
    else:
        j = other_index(B, device)
    src = torch.where(swapped, j, rows)  # (B,) row the swapped part comes from
    image_row = torch.where(use_caption, rows, src)  # (B,) the row each pair's image comes from
    caption_row = torch.where(use_caption, src, rows)
    out = dict(batch) | pair_up(batch, caption_row, image_row)
    if same is not None:  # matched = the image is the one the caption was written for
        return out, same[caption_row, image_row].long()
    return out, (~swapped).long()


def image_ids(batch: dict) -> torch.Tensor:
    """(B,) an id per pair's image, unique across the datasets of a mixture (``image_index``, ``dataset_index``)."""
    ids = batch["image_index"]
    if batch.get("dataset_index") is not None:
        ids = ids + batch["dataset_index"].long() * (1 << 40)
    return ids


def mask_words(
    text_ids: torch.Tensor,
    word_ids: torch.Tensor,
    prob: float,
    mask_token_id: int,
    vocab_size: int,
    vocab_ids: torch.Tensor | None = None,
    piece_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-word masking with BERT's 80/10/10 rule.

    text_ids, word_ids: (B, T) (``word_ids`` = index of each piece's word, -1 for special/pad tokens).
    Picks ``max(1, round(prob * n_words))`` words per caption, uniformly or, with ``piece_weights`` (B, T) > 0 at
    the words' pieces (e.g. :func:`piece_idf`), with probability proportional to the largest weight among a
    word's pieces; every piece of a picked word is a target: 80% become ``[MASK]``, 10% a random id (uniform
    over ``[0, vocab_size)``, or over ``vocab_ids`` (K,) when given: a model's own vocabulary), 10% stay.
    Returns (new ids, targets (B, T) bool).
    """
    B, T = text_ids.shape
    n_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    if n_words <= 0:
        return text_ids, torch.zeros_like(text_ids, dtype=torch.bool)
    present = torch.zeros(B, n_words + 1, dtype=torch.bool, device=text_ids.device)
    present.scatter_(1, word_ids + 1, True)  # column 0 collects the -1s
    weights = None
    if piece_weights is not None:
        weights = torch.zeros(B, n_words + 1, device=text_ids.device)
        weights.scatter_reduce_(1, word_ids + 1, piece_weights.float(), reduce="amax")  # (B, W + 1)
        weights = weights[:, 1:].clamp_min(1e-12)
    words = choose_per_row(present[:, 1:], prob, weights)  # (B, W)
    targets = words.gather(1, word_ids.clamp(min=0)) & (word_ids >= 0)  # (B, T)
    r = torch.rand(B, T, device=text_ids.device)
    ids = text_ids.clone()
    ids[targets & (r < 0.8)] = mask_token_id
    rand_pos = targets & (r >= 0.8) & (r < 0.9)
    if vocab_ids is None:
        ids[rand_pos] = torch.randint(0, vocab_size, (int(rand_pos.sum()),), device=ids.device)
    else:
        ids[rand_pos] = vocab_ids.to(ids.device)[
            torch.randint(0, len(vocab_ids), (int(rand_pos.sum()),), device=ids.device)
        ]
    return ids, targets


def mask_regions(img_feats: torch.Tensor, img_mask: torch.Tensor, prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``max(1, round(prob * n))`` of the ``n`` real regions of each image (never the global token at
    index 0) by zeroing their features. Returns (new feats (B, R, F), targets (B, R) bool)."""
    valid = img_mask.clone()
    valid[:, 0] = False
    targets = choose_per_row(valid, prob)  # (B, R)
    return img_feats.masked_fill(targets[..., None], 0.0), targets
