"""``mmtlab data stats``: what a store holds, and how close its language is to a reference (by default a fresh
sample of the ``flickr`` test style), measured as word, bigram and caption overlap."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

from .store import Store

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def overlap(captions: Iterable[str], reference: Iterable[str]) -> dict[str, float]:
    """Fractions (in %) of the captions' word tokens, word types, bigram tokens and whole captions that also
    occur in ``reference``."""
    ref_words, ref_bigrams, ref_caps = set(), set(), set()
    for c in reference:
        w = words(c)
        ref_words.update(w)
        ref_bigrams.update(zip(w, w[1:]))
        ref_caps.add(" ".join(w))
    tokens = Counter()
    bigrams = hit_bigrams = hit_caps = n = 0
    for c in captions:
        w = words(c)
        tokens.update(w)
        pairs = list(zip(w, w[1:]))
        bigrams += len(pairs)
        hit_bigrams += sum(p in ref_bigrams for p in pairs)
        hit_caps += " ".join(w) in ref_caps
        n += 1
    total = sum(tokens.values())
    return {
        "word_tokens": 100.0 * sum(v for k, v in tokens.items() if k in ref_words) / max(total, 1),
        "word_types": 100.0 * sum(k in ref_words for k in tokens) / max(len(tokens), 1),
        "bigram_tokens": 100.0 * hit_bigrams / max(bigrams, 1),
        "captions": 100.0 * hit_caps / max(n, 1),
    }


def sample_indices(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` evenly spaced indices of ``range(n)``."""
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).astype(np.int64)


def store_stats(store: Store, reference: list[str] | None = None, max_captions: int = 50_000) -> dict:
    """Pairs, images, captions per image, caption length (words), vocabulary, regions per image, and the overlap
    with ``reference`` captions. Captions beyond ``max_captions`` are subsampled evenly."""
    idx = sample_indices(len(store), max_captions)
    caps = [store.captions[int(i)] for i in idx]
    lengths = np.array([len(words(c)) for c in caps]) if caps else np.zeros(1)
    per_image = np.bincount(store.caption_image, minlength=store.n_images)
    img_idx = sample_indices(store.n_images, 2000)
    regions = np.array([store.n_regions(int(i)) for i in img_idx]) if len(img_idx) else np.zeros(1)
    out = {
        "path": str(store.path),
        "style": store.meta.get("style"),
        "splits": store.meta.get("splits"),
        "pairs": len(store),
        "images": store.n_images,
        "feat_dim": store.meta["feat_dim"],
        "n_classes": store.meta.get("n_classes"),
        "pixels": store.meta.get("pixels_shape"),
        "captions_per_image": {
            "mean": float(per_image.mean()),
            "min": int(per_image.min()),
            "max": int(per_image.max()),
        },
        "caption_words": {
            q: float(np.percentile(lengths, p)) for q, p in (("p10", 10), ("median", 50), ("p90", 90), ("max", 100))
        }
        | {"mean": float(lengths.mean())},
        "regions_per_image": {"mean": float(regions.mean()), "max": int(regions.max())},
        "vocabulary": len({w for c in caps for w in words(c)}),
        "sampled_captions": len(caps),
    }
    if reference is not None:
        out["overlap_with_reference"] = overlap(caps, reference)
    return out
