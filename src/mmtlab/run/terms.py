"""The loss terms a loss set may weigh (docs/design.md, "Loss terms"): one :class:`LossTerm` per term, which the
config checks (:class:`~mmtlab.run.config.LossConfig`, :func:`~mmtlab.run.config.check_run_config`), the
pretraining loss (:class:`mmtlab.train.losses.PretrainingLoss`, whose ``FUSED_LOSSES`` computes the terms of the
shared forward pass), the trainer's data check and evaluation's scorer check all read. Adding a term is an entry
here and, for a fused term, its function in ``FUSED_LOSSES``. No torch import here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# What a term may need from the batch beyond the batch dict, in words (for the errors that name it).
INPUTS = {
    "text_word_ids": "the word of each piece (text_word_ids), for whole-word masking",
    "img_cls": "region class distributions (img_cls)",
    "img_feats": "region features (img_feats)",
}


@dataclass(frozen=True)
class LossTerm:
    """One loss term: the head it trains (``itm``, ``mlm``, ``mrm`` or ``proj``, the projection embeddings; on an
    all-``U`` model ``trains_dual`` when that differs), whether the shared forward pass over the corrupted batch
    computes it (``fused``; the others run their own passes), which input that pass masks for it (``words`` /
    ``regions``) and the batch keys it reads (:data:`INPUTS`)."""

    name: str
    trains: str
    fused: bool = False
    masks: str | None = None
    needs: tuple[str, ...] = ()
    trains_dual: str | None = None

    def head(self, is_dual: bool) -> str:
        """The head this term trains on a model that is (``is_dual``) or is not an all-``U`` dual encoder."""
        return self.trains_dual if is_dual and self.trains_dual else self.trains


TERMS = {
    t.name: t
    for t in (
        LossTerm("itm", "itm", fused=True),
        LossTerm("mlm", "mlm", fused=True, masks="words", needs=("text_word_ids",)),
        LossTerm("mrm-kl", "mrm", fused=True, masks="regions", needs=("img_feats", "img_cls")),
        LossTerm("mrm-cls", "mrm", fused=True, masks="regions", needs=("img_feats", "img_cls")),
        LossTerm("mrm-reg", "mrm", fused=True, masks="regions", needs=("img_feats",)),
        LossTerm("itm-contrastive", "itm", trains_dual="proj"),  # cross-encoders: over the match logit
        LossTerm("itc", "proj"),  # not in the paper's loss sets: the dual InfoNCE on the unimodal view
    )
}
LOSS_TERMS = tuple(TERMS)
MRM_TERMS = tuple(name for name, t in TERMS.items() if t.masks == "regions")


def needing(key: str, names: Iterable[str] = LOSS_TERMS) -> list[str]:
    """The terms among ``names`` that read batch key ``key``, in :data:`LOSS_TERMS` order."""
    names = set(names)
    return [n for n, t in TERMS.items() if n in names and key in t.needs]


def training(head: str, names: Iterable[str], is_dual: bool) -> list[str]:
    """The terms among ``names`` that train ``head`` on a dual (``is_dual``) or a cross-encoder model."""
    names = set(names)
    return [n for n, t in TERMS.items() if n in names and t.head(is_dual) == head]
