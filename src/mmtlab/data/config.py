"""The ``data`` section of a run config: how pretraining batches are drawn and shaped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import ConfigError

SAMPLING = ("instance", "dataset")


VOCABULARIES = ("full", "train")

# data.split: which images of each training store are read, besides a split name (docs/data.md, "Loading")
SPLIT_MODES = ("auto", "all")


@dataclass
class DataConfig:
    """Loading options (docs/design.md, "Loading batches"). ``weights`` re-weights the datasets of a mixture (one
    per data dir)."""

    max_text_len: int = 40  # word pieces, [CLS] and [SEP] included
    max_regions: int = 36  # regions per image, the global token excluded (the paper used up to 100)
    sampling: str = "instance"  # "instance": uniform over all pairs; "dataset": uniform over datasets, then pairs
    weights: list[float] | None = None  # optional per-dataset weights of the mixture
    num_workers: int = 0  # DataLoader worker processes (the stream is the same for any number)
    # "full": a word embedding (and MLM output) for every WordPiece id; "train": only for the pieces of the
    # training captions and the special tokens, recorded in model.vocab_ids (others read [UNK])
    vocab: str = "full"
    # which images of each store: "auto" = split `train` of a store holding several splits (`mmtlab data split`),
    # the whole of a store holding one; "all" = every image whatever its split; a name = that split of every store
    split: str = "auto"

    # no longer fields, still in the config.yaml of older runs: `mmtlab data import --max-bad-fraction` is the option
    RETIRED_KEYS: ClassVar[tuple[str, ...]] = ("max_bad_fraction",)

    def __post_init__(self) -> None:
        if self.max_text_len < 3:
            raise ConfigError(
                f"data.max_text_len: {self.max_text_len}; needs room for [CLS], one piece and [SEP] (>= 3)"
            )
        if self.max_regions < 1:
            raise ConfigError(f"data.max_regions: {self.max_regions}; must be >= 1")
        if self.sampling not in SAMPLING:
            raise ConfigError(f"data.sampling: {self.sampling!r}; valid: {', '.join(SAMPLING)}")
        if self.weights is not None and (
            not self.weights or any(w < 0 for w in self.weights) or sum(self.weights) <= 0
        ):
            raise ConfigError(f"data.weights: {self.weights}; give one non-negative weight per dataset, not all zero")
        if self.vocab not in VOCABULARIES:
            raise ConfigError(f"data.vocab: {self.vocab!r}; valid: {', '.join(VOCABULARIES)}")
        if not self.split or self.split != self.split.strip() or any(c in self.split for c in "\n\r\t"):
            raise ConfigError(
                f"data.split: {self.split!r}; valid: {', '.join(SPLIT_MODES)} or the name of a split of the stores"
            )
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers: {self.num_workers}; must be >= 0")
