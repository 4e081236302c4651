"""The model section of a run config, :class:`ModelConfig`, and the layer codes (docs/design.md, "The model").

A run (:class:`mmtlab.run.config.RunConfig`) has one section per concern (``model``, ``loss``, ``train``,
``data``); each is a dataclass, built and overridden through :mod:`mmtlab.typed_config` and read and written
through :mod:`mmtlab.files`. Those modules' names and :class:`~mmtlab.errors.ConfigError` are re-exported
here, where most of the package imports them from.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .files import load_yaml, parse_yaml, save_yaml, write_json
from .typed_config import apply_overrides, from_dict, parse_overrides, replace, to_dict

LAYER_CODES = "MCLIU"
UNK_ID = 100  # [UNK] in bert-base-uncased: the row of every word piece outside model.vocab_ids
CROSS_CODES = "MCLI"  # codes in which at least one stream sees the other


@dataclass
class ModelConfig:
    """Architecture of one multimodal transformer (docs/design.md, "The model")."""

    schedule: str = "MMMMMM"  # one layer code per layer: M C L I U
    shared: bool = False  # single stream: one set of layer weights for text and image
    width: int = 768
    heads: int = 12
    ffn: int = 3072
    feat_dim: int = 2048  # region feature width
    box_dim: int = 5  # x1, y1, x2, y2, area
    vocab_size: int = 30522  # bert-base-uncased WordPiece
    # The word-piece ids with their own embedding row and MLM output, sorted (None: every id below vocab_size);
    # any other id reads the [UNK] row. Written by the trainer with data.vocab=train.
    vocab_ids: list[int] | None = None
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attn_dropout: float = 0.1
    n_region_classes: int = 1601  # detector classes for MRM (VG: 1600 + background)
    proj_dim: int = 256  # contrastive / dual-encoder embedding width
    hloss: bool = False  # an ITM head after every layer (read it as .itm_every_layer; the key is the paper's tag)
    text_init: str | None = None  # local Hugging Face BERT directory for the text stream
    image_input: str = "regions"  # "regions" (features + boxes) or "pixels" (ViLT-style patches)
    image_size: int = 64  # pixel path: input resolution
    patch_size: int = 8  # pixel path: patch side
    ln_eps: float = 1e-12
    init_std: float = 0.02  # std of the normal init of every weight matrix and embedding (BERT's 0.02)
    norm_first: bool = False  # pre-LN layers (LayerNorm before attention and FFN, one more at the top); BERT is post-LN

    def __post_init__(self) -> None:
        self.schedule = str(self.schedule).upper()
        if not self.schedule:
            raise ConfigError("model.schedule: empty; give one layer code per layer, e.g. 'MMMMMM'")
        bad = sorted(set(self.schedule) - set(LAYER_CODES))
        if bad:
            raise ConfigError(
                f"model.schedule: unknown layer code(s) {bad} in {self.schedule!r}; valid codes: "
                + ", ".join(LAYER_CODES)
            )
        for name in ("width", "heads", "ffn", "feat_dim", "vocab_size", "max_positions", "proj_dim", "init_std"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}: must be positive, got {getattr(self, name)}")
        if self.vocab_ids is not None:
            ids = self.vocab_ids
            if ids != sorted(set(ids)) or not ids or ids[0] < 0 or ids[-1] >= self.vocab_size or UNK_ID not in ids:
                raise ConfigError(
                    f"model.vocab_ids: give sorted, distinct word-piece ids in [0, {self.vocab_size}) that include "
                    f"[UNK] ({UNK_ID}); got {len(ids)} ids"
                )
        if self.width % self.heads:
            raise ConfigError(f"model.width={self.width} is not divisible by model.heads={self.heads}")
        if self.image_input not in ("regions", "pixels"):
            raise ConfigError(f"model.image_input: {self.image_input!r}; valid: 'regions', 'pixels'")
        if self.norm_first and self.text_init:
            raise ConfigError(
                "model.norm_first=true with model.text_init: BERT checkpoints are post-LN; drop one of them"
            )
        if self.image_input == "pixels" and self.image_size % self.patch_size:
            raise ConfigError(f"model.image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")

    @property
    def n_words(self) -> int:
        """Rows of the word embeddings and outputs of the MLM head."""
        return self.vocab_size if self.vocab_ids is None else len(self.vocab_ids)

    @property
    def layers(self) -> int:
        return len(self.schedule)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def n_unimodal_prefix(self) -> int:
        """Number of leading layers in which neither stream sees the other (``U`` codes)."""
        for i, code in enumerate(self.schedule):
            if code != "U":
                return i
        return len(self.schedule)

    @property
    def is_dual(self) -> bool:
        """True when no layer mixes the modalities (all ``U``): a dual encoder."""
        return self.n_unimodal_prefix == len(self.schedule)

    @property
    def itm_every_layer(self) -> bool:
        """An ITM head after every layer, the ITM loss averaged over them (the paper's "hloss" release; the
        config key stays ``model.hloss``)."""
        return self.hloss


__all__ = [
    "ConfigError",
    "LAYER_CODES",
    "CROSS_CODES",
    "UNK_ID",
    "ModelConfig",
    "from_dict",
    "to_dict",
    "replace",
    "parse_overrides",
    "apply_overrides",
    "load_yaml",
    "parse_yaml",
    "save_yaml",
    "write_json",
]
