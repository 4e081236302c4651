"""The batch contract (docs/design.md, "The batch dict") and its checks.

=============  =====================  =============================================================
key            shape, dtype           meaning
=============  =====================  =============================================================
``text_ids``   (B, T) long            word-piece ids, ``[CLS] ... [SEP]``, right-padded
``text_mask``  (B, T) bool            True = real token
``img_feats``  (B, R, F) float        region features; index 0 is the global token
``img_boxes``  (B, R, 5) float        x1, y1, x2, y2 in [0, 1], area fraction; global = (0, 0, 1, 1, 1)
``img_mask``   (B, R) bool            True = real region
``pixels``     (B, 3, H, W) float     instead of the three ``img_*`` keys when ``image_input: pixels``
``mlm_mask``   (B, T) bool, optional  positions where MLM logits are computed
``mrm_mask``   (B, R) bool, optional  regions where MRM predictions are computed
=============  =====================  =============================================================

A pair is one caption and one image: :func:`pair_up` makes pairs of one sample's caption with another's image
(ITM negatives, the contrastive and fine-tuning losses), by the keys that describe each side.
"""

from __future__ import annotations

import torch

from ..config import ModelConfig

FLOAT = "float"
# The keys that describe a pair's image / its caption (the training loader adds ``image_index`` /
# ``caption_index`` and the collators ``img_cls`` / ``text_word_ids``): swapped together when pairs are remade.
IMAGE_KEYS = ("img_feats", "img_boxes", "img_mask", "img_cls", "pixels", "image_index")
TEXT_KEYS = ("text_ids", "text_mask", "text_word_ids", "caption_index")


def pair_up(batch: dict, caption_rows: torch.Tensor, image_rows: torch.Tensor) -> dict:
    """Pairs of caption ``caption_rows[p]`` with image ``image_rows[p]`` of ``batch``: the :data:`TEXT_KEYS` taken
    at ``caption_rows`` (N,), the :data:`IMAGE_KEYS` at ``image_rows`` (N,), those the batch has; no other key."""
    pairs = {k: batch[k][caption_rows] for k in TEXT_KEYS if batch.get(k) is not None}
    return pairs | {k: batch[k][image_rows] for k in IMAGE_KEYS if batch.get(k) is not None}


def _check(batch: dict, key: str, shape: tuple, dtype: str | torch.dtype, what: str) -> torch.Tensor:
    """``shape`` holds ints (exact) or names (bound on first use, stored in ``batch['__dims']``)."""
    if key not in batch or batch[key] is None:
        raise ValueError(f"batch is missing key {key!r}: expected {what} of shape {_fmt(shape)}")
    x = batch[key]
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"batch[{key!r}] must be a torch.Tensor of shape {_fmt(shape)}, got {type(x).__name__}")
    dims: dict = batch["__dims"]
    ok = x.dim() == len(shape)
    if ok:
        for want, got in zip(shape, x.shape):
            if isinstance(want, int):
                ok &= want == got
            elif want in dims:
                ok &= dims[want] == got
            else:
                dims[want] = got
    if not ok:
        bound = ", ".join(f"{k}={v}" for k, v in dims.items() if k in shape)
        raise ValueError(
            f"batch[{key!r}] has shape {tuple(x.shape)}; expected {what} of shape {_fmt(shape)}"
            + (f" with {bound}" if bound else "")
        )
    if dtype == FLOAT:
        if not x.is_floating_point():
            raise ValueError(f"batch[{key!r}] must be a float tensor, got {x.dtype}")
    elif x.dtype != dtype:
        raise ValueError(f"batch[{key!r}] must have dtype {dtype}, got {x.dtype}")
    return x


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def validate_batch(batch: dict, cfg: ModelConfig) -> None:
    """Raise ``ValueError`` naming the key and the expected shape when ``batch`` breaks the contract."""
    if not isinstance(batch, dict):
        raise ValueError(f"the model takes a dict batch, got {type(batch).__name__}")
    b = dict(batch)
    b["__dims"] = {}
    _check(b, "text_ids", ("B", "T"), torch.long, "word-piece ids")
    _check(b, "text_mask", ("B", "T"), torch.bool, "the text mask")
    if cfg.image_input == "pixels":
        _check(b, "pixels", ("B", 3, cfg.image_size, cfg.image_size), FLOAT, "RGB pixels")
        b["__dims"]["R"] = 1 + (cfg.image_size // cfg.patch_size) ** 2
    else:
        _check(b, "img_feats", ("B", "R", cfg.feat_dim), FLOAT, f"region features (model.feat_dim={cfg.feat_dim})")
        _check(b, "img_boxes", ("B", "R", cfg.box_dim), FLOAT, "region boxes")
        _check(b, "img_mask", ("B", "R"), torch.bool, "the region mask")
    if b.get("mlm_mask") is not None:
        _check(b, "mlm_mask", ("B", "T"), torch.bool, "the MLM position mask")
    if b.get("mrm_mask") is not None:
        _check(b, "mrm_mask", ("B", "R"), torch.bool, "the MRM region mask")
    T = b["__dims"]["T"]
    if T > cfg.max_positions:
        raise ValueError(
            f"batch['text_ids'] has {T} tokens; the model allows at most model.max_positions={cfg.max_positions}"
        )
    if T == 0 or b["__dims"]["R"] == 0:
        raise ValueError("batch has an empty text or image stream: expected at least [CLS] and the global token")
    ids = b["text_ids"]
    if ids.device.type == "cpu" and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size):
        raise ValueError(f"batch['text_ids'] holds ids outside [0, model.vocab_size={cfg.vocab_size})")
