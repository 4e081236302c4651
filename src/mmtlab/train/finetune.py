"""Retrieval fine-tuning (the paper's ``-ft`` models, ``mmtlab finetune retrieval``): training that continues a
pretrained run with ITM on hard negatives mined in the batch.

For each matched pair ``(t_i, v_i)`` of a batch, the model's own match score (ITM log-odds, no gradient)
picks the hardest other image ``v_j`` for the caption and the hardest other caption ``t_k`` for the image
(UNITER/ALBEF style); the ITM head is then trained on the positive and both negatives
(``3 B`` pairs, labels 1, 0, 0). Pairs showing the same picture (``image_index``) are never negatives.
Mining uses the unimodal cache: ``B`` prefix passes per modality and ``B * (B - 1)`` passes of the remaining
layers, without gradients.

:func:`finetune_retrieval` continues a pretrained run with this loss through the trainer and marks the new
run as fine-tuned (``finetune.json``), so its evaluations say ``"protocol": "fine-tuned"``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..model.inputs import pair_up
from ..run.layout import FINETUNE_FILE
from ..run.load import finetune_info
from .masking import image_ids

# Train settings of a fine-tuning run unless overridden (the pretraining run's other settings are kept).
FINETUNE_DEFAULTS = {
    "train.steps": 300,
    "train.batch_size": 32,
    "train.micro_batch_size": 0,
    "train.lr": 5e-5,
    "train.warmup_steps": 30,
    "train.ckpt_every": 100,
}


@torch.no_grad()
def mine_hard_negatives(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """For each pair ``i`` of the batch, by the model's match score: the other picture that scores highest
    with caption ``i``, and the caption of another picture that scores highest with image ``i``; (B,), (B,)."""
    B = batch["text_ids"].shape[0]
    device = batch["text_ids"].device
    ids = image_ids(batch) if batch.get("image_index") is not None else torch.arange(B, device=device)
    same = ids[:, None] == ids[None, :]  # (B, B) pairs showing the same picture
    if bool(same.all(1).any()):
        raise ConfigError(
            "hard-negative mining needs at least 2 different pictures per micro-batch; raise train.micro_batch_size"
        )
    t = model.encode_text(batch["text_ids"], batch["text_mask"])  # (B, T, D) unimodal prefix, once per caption
    v, img_mask = model.encode_image(batch)  # (B, R, D), once per image
    rows, cols = (~same).nonzero(as_tuple=True)  # caption rows[p] with image cols[p]
    scores = torch.full((B, B), float("-inf"), device=device)  # (captions, images)
    scores[rows, cols] = model.match_score(t[rows], batch["text_mask"][rows], v[cols], img_mask[cols])
    return scores.argmax(1), scores.argmax(0)


class HardNegativeITMLoss:
    """``loss_fn(model, batch, step) -> (total, {"itm-hard": loss, "itm-hard-acc": accuracy})`` for
    :func:`mmtlab.train.train`: ITM cross-entropy over positives and their mined hard negatives.

    ``init_from``: pretrained weights (safetensors) loaded into the model on the first call at step 0, before
    any update (the trainer builds a fresh model; on a resumed run, step > 0, its checkpoint is kept).
    """

    def __init__(self, init_from: str | Path | None = None):
        self.init_from = Path(init_from) if init_from else None
        self.initialised = False

    def __call__(self, model, batch: dict, step: int):
        if self.init_from is not None and not self.initialised and step == 0:
            from ..run.weights import load_weights

            load_weights(model, self.init_from)  # in place: the optimizer keeps its parameter references
        self.initialised = True
        B = batch["text_ids"].shape[0]
        hard_image, hard_caption = mine_hard_negatives(model, batch)
        own = torch.arange(B, device=batch["text_ids"].device)
        txt_rows = torch.cat([own, own, hard_caption])  # (3B,) positive, caption + hard image, hard caption + image
        img_rows = torch.cat([own, hard_image, own])
        pairs = pair_up(batch, txt_rows, img_rows)
        labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(own.device)
        logits = model(pairs, full_states=False)["itm_logits"].float()  # (3B, 2)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean().detach()
        return loss, {"itm-hard": loss.detach(), "itm-hard-acc": acc}


def finetune_retrieval(
    run: str | Path | None,
    data: str | Path | None,
    out: str | Path,
    split: str = "train",
    overrides: dict | None = None,
    resume: bool = False,
    report=None,
) -> Path:
    """Fine-tune the finished run ``run`` for retrieval on store ``data`` (its ``split``) into a new run ``out``.

    The new run keeps the architecture and data settings of ``run``; ``train`` settings default to
    :data:`FINETUNE_DEFAULTS` and take ``overrides`` (``{"train.steps": "300", ...}``). ``resume`` continues an
    interrupted fine-tuning run in ``out``; ``report`` receives the trainer's line on the images it reads.
    """
    from ..data.store import open_store
    from ..run.config import check_run_config, load_run_config
    from ..typed_config import apply_overrides
    from .trainer import train

    out = Path(out)
    if resume:
        info = finetune_info(out)
        if info is None or not (out / "config.yaml").is_file():
            raise ConfigError(f"--resume {out}: not a fine-tuning run (no {FINETUNE_FILE} / config.yaml)")
        cfg = apply_overrides(load_run_config(out), overrides or {})
        return train(cfg, out, resume=True, loss_fn=HardNegativeITMLoss(), report=report)

    run, data = Path(run), Path(data)
    if not (run / "model.safetensors").is_file() or not (run / "config.yaml").is_file():
        raise ConfigError(f"--run {run}: not a finished run (needs config.yaml and model.safetensors)")
    open_store(data).split(split)  # a clear error when the split is missing
    base = load_run_config(run)
    cfg = dataclasses.replace(
        base, data_dirs=[str(data)], val_dir=None, model=dataclasses.replace(base.model, text_init=None),
        data=dataclasses.replace(base.data, split=split),  # only that split's images, whatever else the store holds
    )  # fmt: skip
    cfg = apply_overrides(cfg, {**FINETUNE_DEFAULTS, **(overrides or {})})
    check_run_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "task": "retrieval", "from_run": str(run.resolve()), "data": str(data.resolve()), "split": split,
        "loss": "ITM cross-entropy on each positive, its hardest in-batch image and its hardest in-batch caption "
                "(mined by the model's own match score)",
    }  # fmt: skip
    (out / FINETUNE_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return train(cfg, out, loss_fn=HardNegativeITMLoss(init_from=run / "model.safetensors"), report=report)


__all__ = [
    "HardNegativeITMLoss",
    "mine_hard_negatives",
    "finetune_info",
    "finetune_retrieval",
    "FINETUNE_FILE",
    "FINETUNE_DEFAULTS",
]
