"""Turn captions and stored images into the batch contract (docs/design.md, "The batch dict"): padding, global
token, boxes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .store import DataError, Store, no_pixels_error

GLOBAL_BOX = (0.0, 0.0, 1.0, 1.0, 1.0)


def collate_texts(tokenizer, captions: Sequence[str], max_text_len: int = 40) -> dict[str, torch.Tensor]:
    """Tokenise ``captions`` into ``text_ids``, ``text_mask`` and ``text_word_ids`` (B, T), right-padded to
    the longest caption (at most ``max_text_len`` pieces; longer ones are cut and keep their ``[SEP]``).

    ``text_word_ids`` is the index of the whole word each piece belongs to, -1 for special tokens and padding.
    """
    encodings = tokenizer.encode_batch(list(captions))
    sep = tokenizer.token_to_id("[SEP]")
    pad = tokenizer.token_to_id("[PAD]")
    T = min(max_text_len, max(len(e.ids) for e in encodings))
    ids = np.full((len(encodings), T), pad, dtype=np.int64)
    words = np.full((len(encodings), T), -1, dtype=np.int64)
    mask = np.zeros((len(encodings), T), dtype=bool)
    for b, enc in enumerate(encodings):
        row = enc.ids
        word = [-1 if w is None else w for w in enc.word_ids]
        if len(row) > T:  # cut, then close with [SEP]
            row, word = row[: T - 1] + [sep], word[: T - 1] + [-1]
        ids[b, : len(row)] = row
        words[b, : len(word)] = word
        mask[b, : len(row)] = True
    return {
        "text_ids": torch.from_numpy(ids),
        "text_mask": torch.from_numpy(mask),
        "text_word_ids": torch.from_numpy(words),
    }


def collate_images(
    store: Store, indices: Sequence[int], max_regions: int = 36, with_pixels: bool = False
) -> dict[str, torch.Tensor]:
    """Stack images ``indices`` of ``store`` into ``img_feats (B, R, F)``, ``img_boxes (B, R, 5)``,
    ``img_mask (B, R)`` with R = 1 + the most regions in the batch (capped at ``max_regions``); index 0 is the
    global token (mean of the real regions, box (0, 0, 1, 1, 1)). Adds ``img_cls (B, R, C)`` when the store
    has class distributions (the global row is their mean) and ``pixels (B, 3, H, W)`` in [0, 1] on request.
    Regions beyond ``max_regions`` are dropped (stores keep regions in detector order)."""
    if with_pixels and not store.has_pixels:
        raise no_pixels_error(store.path)
    images = [store.image(int(i), pixels=with_pixels) for i in indices]
    return stack_images(images, max_regions, with_pixels)


def stack_images(
    images: list[dict[str, np.ndarray]], max_regions: int, with_pixels: bool = False
) -> dict[str, torch.Tensor]:
    """:func:`collate_images` on images already read (``Store.image`` dicts)."""
    B = len(images)
    n = [min(len(im["feats"]), max_regions) for im in images]
    R = 1 + max(n)
    F = images[0]["feats"].shape[1]
    with_cls = all("cls" in im for im in images)
    # filled in numpy, handed to torch once: cheaper than many small torch ops in DataLoader workers
    feats = np.zeros((B, R, F), np.float32)
    boxes = np.zeros((B, R, 5), np.float32)
    mask = np.zeros((B, R), bool)
    cls = np.zeros((B, R, images[0]["cls"].shape[1]), np.float32) if with_cls else None
    boxes[:, 0] = GLOBAL_BOX
    mask[:, 0] = True
    for b, (im, k) in enumerate(zip(images, n)):
        feats[b, 1 : k + 1] = im["feats"][:k]
        feats[b, 0] = feats[b, 1 : k + 1].mean(0) if k else 0.0
        boxes[b, 1 : k + 1] = im["boxes"][:k]
        mask[b, 1 : k + 1] = True
        if cls is not None:
            cls[b, 1 : k + 1] = im["cls"][:k]
            cls[b, 0] = cls[b, 1 : k + 1].mean(0) if k else 0.0
    out = {
        "img_feats": torch.from_numpy(feats),
        "img_boxes": torch.from_numpy(boxes),
        "img_mask": torch.from_numpy(mask),
    }
    if cls is not None:
        out["img_cls"] = torch.from_numpy(cls)
    if with_pixels:
        if not all("pixels" in im for im in images):
            raise DataError(
                "with_pixels=True, but some of these images have no pixels: their store holds only region "
                "features; write it with pixels (`mmtlab features extract ... --pixels 64`) or use a model "
                "of region features (model.image_input=regions)"
            )
        out["pixels"] = torch.from_numpy(
            np.stack([im["pixels"] for im in images]).astype(np.float32) / 255.0
        )  # (B, 3, H, W)
    return out
