"""Pretraining batches from one store or a mixture: deterministic, resumable, shard-aware.

Sample positions are global: rank ``r``'s batch ``k`` holds positions ``[(k*W + r)*B, (k*W + r + 1)*B)``
and each block of ``B`` positions (a *slot*) is drawn from its own generator seeded with ``(seed, slot)``.
So the stream does not depend on the number of worker processes, one process with gradient accumulation sees
the same global batches as ``W`` processes, and resuming at ``start_batch`` continues it exactly.
Pairs are drawn with replacement: a dataset by the mixture's probabilities, then a pair uniformly within it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from .collate import collate_texts, stack_images
from .config import SAMPLING, SPLIT_MODES
from .store import DataError, Store, no_pixels_error, open_store
from .tokenizer import get_tokenizer


def mixture_probs(sizes: Sequence[int], sampling: str, weights: Sequence[float] | None) -> np.ndarray:
    """P(dataset) for a mixture: ``instance`` -> proportional to size x weight; ``dataset`` -> proportional to weight."""
    if sampling not in SAMPLING:
        raise ConfigError(f"data.sampling: {sampling!r}; valid: {', '.join(SAMPLING)}")
    w = np.ones(len(sizes)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(sizes) or (w < 0).any():
        raise ConfigError(f"data.weights: {list(w)}; give one non-negative weight per dataset ({len(sizes)} datasets)")
    p = w * np.asarray(sizes, dtype=np.float64) if sampling == "instance" else w * (np.asarray(sizes) > 0)
    if p.sum() <= 0:
        raise ConfigError("data.weights: every dataset of the mixture has weight 0 or no pairs")
    return p / p.sum()


def training_split(store: Store, split: str = "auto") -> tuple[Store, str]:
    """The images of ``store`` (a whole store) that training reads under ``data.split``, and in words which:
    ``all`` -> every image; ``auto`` -> split ``train`` of a store holding several splits (after `mmtlab data
    split`), the whole of a store holding one (whatever its name); a split name -> that split. A split the store
    lacks is a one-line :class:`ConfigError` naming the store's splits."""
    names = [n for n in store.meta.get("split_names", []) if store.meta["splits"].get(n, 0) > 0]
    have = ", ".join(f"{n} ({store.meta['splits'][n]} images)" for n in names) or "none"
    if split == "all" or (split == "auto" and len(names) <= 1):
        what = f"split {names[0]}" if len(names) == 1 else f"splits {have}"
        return store, f"all {store.n_images} images ({what})"
    name = "train" if split == "auto" else split
    if name not in names:
        why = "holds several splits and none named 'train'" if split == "auto" else f"has no split {name!r}"
        raise ConfigError(
            f"data.split={split}: {store.path} {why}; its splits: {have}; valid: {', '.join(SPLIT_MODES)} "
            "or one of its splits"
        )
    view = store.split(name)
    return view, f"{view.n_images} of {store.n_images} images (split {name})"


class _Batches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``k`` is this rank's collated batch ``k`` (runs in DataLoader workers)."""

    def __init__(
        self, stores, probs, seed, batch_size, rank, world_size, max_text_len, max_regions, with_pixels, vocab_path
    ):
        self.stores, self.probs, self.seed = stores, probs, seed
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.max_text_len, self.max_regions, self.with_pixels, self.vocab_path = (
            max_text_len,
            max_regions,
            with_pixels,
            vocab_path,
        )
        self.with_cls = all(s.has_classes for s in stores)
        self.sizes = np.array([len(s) for s in stores])
        self._tokenizer = None  # loaded on first use in each process

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset index, pair index) of each sample of this rank's batch ``k``."""
        rng = np.random.default_rng([self.seed, k * self.world_size + self.rank])
        ds = rng.choice(len(self.stores), size=self.batch_size, p=self.probs)
        pair = np.minimum((rng.random(self.batch_size) * self.sizes[ds]).astype(np.int64), self.sizes[ds] - 1)
        return ds, pair

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        ds, pair = self.draw(k)
        image = np.array([self.stores[d].caption_image[p] for d, p in zip(ds, pair)], dtype=np.int64)
        captions = [self.stores[d].captions[int(p)] for d, p in zip(ds, pair)]
        images = [self.stores[d].image(int(i), pixels=self.with_pixels) for d, i in zip(ds, image)]
        if not self.with_cls:
            for im in images:
                im.pop("cls", None)
        if self._tokenizer is None:
            self._tokenizer = get_tokenizer(self.vocab_path)
        batch = collate_texts(self._tokenizer, captions, self.max_text_len)
        batch.update(stack_images(images, self.max_regions, self.with_pixels))
        batch["image_index"] = torch.from_numpy(image)  # (B,) within its dataset
        batch["caption_index"] = torch.from_numpy(pair.astype(np.int64))  # (B,)
        batch["dataset_index"] = torch.from_numpy(ds.astype(np.int64))  # (B,)
        return batch

    def __len__(self) -> int:  # the stream is infinite; DataLoader only needs this for sanity checks
        return 2**62


class TrainLoader:
    """Infinite iterator of micro-batches. ``batch_index`` is the next batch to yield (save it to resume),
    ``counts[d]`` the samples drawn from dataset ``d`` so far (``names[d]`` is its path)."""

    def __init__(
        self, dataset: _Batches, start_batch: int, num_workers: int, names: list[str], pin_memory: bool = False
    ):
        self.dataset, self.num_workers, self.names, self.pin_memory = dataset, num_workers, names, pin_memory
        self.batch_index = start_batch
        self.counts = [0] * len(names)
        self._it = None

    def __iter__(self) -> TrainLoader:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._it is None:
            if self.num_workers > 0:
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are the parallelism
            loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_size=None,
                sampler=itertools.count(self.batch_index),
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                pin_memory=self.pin_memory,  # page-locked batches: the copy to the GPU overlaps the step
            )
            self._it = iter(loader)
        batch = next(self._it)
        for d, c in enumerate(np.bincount(batch["dataset_index"].numpy(), minlength=len(self.counts))):
            self.counts[d] += int(c)
        self.batch_index += 1
        return batch


def build_train_loader(
    stores: Sequence[Store | str | Path] | Store | str | Path,
    batch_size: int,
    seed: int = 0,
    sampling: str = "instance",
    weights: Sequence[float] | None = None,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
    max_text_len: int = 40,
    max_regions: int = 36,
    num_workers: int = 0,
    with_pixels: bool = False,
    vocab_path: str | Path | None = None,
    pin_memory: bool = False,
) -> TrainLoader:
    """Pretraining micro-batches (the batch contract + ``text_word_ids``, ``img_cls`` when every store has
    classes, ``pixels`` when ``with_pixels``, and ``image_index``, ``caption_index``, ``dataset_index``) from
    one store or a mixture. See the module docstring for the determinism guarantees. ``pin_memory``: batches in
    page-locked memory (for a CUDA device: ``.to(device, non_blocking=True)`` then overlaps the step)."""
    if isinstance(stores, (Store, str, Path)):
        stores = [stores]
    stores = [s if isinstance(s, Store) else open_store(s) for s in stores]
    if not stores:
        raise ConfigError("no dataset given: pass at least one store (data_dirs)")
    if batch_size < 1 or not 0 <= rank < world_size or start_batch < 0:
        raise ConfigError(
            f"batch_size={batch_size}, rank={rank}, world_size={world_size}, start_batch={start_batch}: invalid"
        )
    dims = {s.meta["feat_dim"] for s in stores}
    if len(dims) > 1:
        raise DataError(
            "the mixture's stores have different feature widths: "
            + ", ".join(f"{s.path} ({s.meta['feat_dim']})" for s in stores)
        )
    classes = {s.meta["n_classes"] for s in stores if s.has_classes}
    if len(classes) > 1:
        raise DataError(
            "the mixture's stores have different class counts: "
            + ", ".join(f"{s.path} ({s.meta['n_classes']})" for s in stores)
        )
    without = [s.path for s in stores if not s.has_pixels]
    if with_pixels and without:
        raise no_pixels_error(", ".join(map(str, without)))
    empty = [str(s.path) for s in stores if len(s) == 0]
    if len(empty) == len(stores):
        raise DataError(f"no (image, caption) pairs in {', '.join(empty)}")
    get_tokenizer(vocab_path)  # fail early on a bad vocabulary
    probs = mixture_probs([len(s) for s in stores], sampling, weights)
    dataset = _Batches(
        stores, probs, seed, batch_size, rank, world_size, max_text_len, max_regions, with_pixels, vocab_path
    )
    return TrainLoader(dataset, start_batch, num_workers, [str(s.path) for s in stores], pin_memory)
