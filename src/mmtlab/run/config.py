"""A run's configuration (docs/design.md, "Run configuration"): :class:`RunConfig`, its ``loss`` and ``train``
sections, the checks across sections, and reading, comparing a saved ``RUN/config.yaml``.

Training resolves a new run (:func:`mmtlab.train.config.make_run_config`); evaluation, fine-tuning and studies
read saved ones. No torch import here (the CLI stays fast).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, ModelConfig
from ..data.config import DataConfig
from ..files import load_yaml
from ..typed_config import from_dict
from .terms import INPUTS, LOSS_TERMS, needing

ITM_SWAP = ("image", "caption", "either")
ITM_NEGATIVES = ("random", "similar", "itc")
ITM_INPUTS = ("masked", "clean")
MLM_WORDS = ("uniform", "idf")
SCHEDULES = ("linear", "cosine")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class LossConfig:
    """Which losses, their weights and their options. ``name`` is the loss set it came from."""

    name: str = "itm+mlm+mrm"
    weights: dict[str, float] = field(default_factory=lambda: {"itm": 1.0, "mlm": 1.0, "mrm-kl": 1.0})
    itm_neg_ratio: float = 0.5  # fraction of pairs turned into ITM negatives
    itm_swap: str = "image"  # what a negative swaps in from another sample: image, caption or either
    itm_negatives: str = "random"  # which other sample: random (the paper), similar (caption) or itc (embeddings)
    itm_inputs: str = "masked"  # masked: ITM, MLM, MRM share one pass (ViLBERT); clean: ITM in its own pass (UNITER)
    contrastive_k: int = 32  # cross-encoders: negatives per caption for itm-contrastive
    start: dict[str, int] = field(default_factory=dict)  # term -> first step it counts (default 0), e.g. {mlm: 200}
    mlm_prob: float = 0.15  # fraction of whole words masked (at least one per matched caption)
    mlm_words: str = "uniform"  # which words: uniform (BERT, the paper) or idf (rarer words of the batch more often)
    mrm_prob: float = 0.15  # fraction of real regions masked (at least one per matched image)
    mask_token_id: int = 103  # [MASK] in bert-base-uncased

    def __post_init__(self) -> None:
        bad = sorted(set(self.weights) - set(LOSS_TERMS))
        if bad:
            raise ConfigError(f"loss.weights: unknown loss term(s) {bad}; valid terms: {', '.join(LOSS_TERMS)}")
        for term, w in self.weights.items():
            if w < 0:
                raise ConfigError(f"loss.weights.{term}: {w}; weights must be >= 0")
        if not any(self.weights.values()):
            raise ConfigError(f"loss.weights: all zero; give at least one of {', '.join(LOSS_TERMS)} a positive weight")
        for name in ("itm_neg_ratio", "mlm_prob", "mrm_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"loss.{name}: {getattr(self, name)}; must be in [0, 1]")
        if self.itm_swap not in ITM_SWAP:
            raise ConfigError(f"loss.itm_swap: {self.itm_swap!r}; valid: {', '.join(ITM_SWAP)}")
        if self.itm_negatives not in ITM_NEGATIVES:
            raise ConfigError(f"loss.itm_negatives: {self.itm_negatives!r}; valid: {', '.join(ITM_NEGATIVES)}")
        if self.itm_inputs not in ITM_INPUTS:
            raise ConfigError(f"loss.itm_inputs: {self.itm_inputs!r}; valid: {', '.join(ITM_INPUTS)}")
        if self.mlm_words not in MLM_WORDS:
            raise ConfigError(f"loss.mlm_words: {self.mlm_words!r}; valid: {', '.join(MLM_WORDS)}")
        if self.itm_negatives == "itc" and not self.weight("itc"):
            raise ConfigError(
                "loss.itm_negatives=itc mines negatives with the itc embeddings; give itc a weight (loss.weights.itc=...)"
            )
        bad = sorted(set(self.start) - set(self.weights))
        if bad:
            raise ConfigError(
                f"loss.start: term(s) {bad} are not in this loss set; its terms: {', '.join(self.weights)}"
            )
        for term, step in self.start.items():
            if step < 0:
                raise ConfigError(f"loss.start.{term}: {step}; must be >= 0")
        if self.contrastive_k < 1:
            raise ConfigError(f"loss.contrastive_k: {self.contrastive_k}; must be >= 1")

    def weight(self, term: str) -> float:
        return float(self.weights.get(term, 0.0))

    def weight_at(self, term: str, step: int) -> float:
        """The term's weight at optimizer step ``step``: 0 before ``start[term]``."""
        return self.weight(term) if step >= self.start.get(term, 0) else 0.0

    @property
    def active(self) -> list[str]:
        """Terms with a positive weight, in :data:`LOSS_TERMS` order."""
        return [t for t in LOSS_TERMS if self.weight(t) > 0]


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpoints and logging."""

    steps: int = 10000  # optimizer steps
    batch_size: int = 64  # global batch (pairs per optimizer step, all processes together)
    micro_batch_size: int = 0  # pairs per forward pass and process; 0 = batch_size / world size
    lr: float = 1e-4
    warmup_steps: int | None = None  # linear warm-up; None = 10% of steps
    schedule: str = "linear"  # decay after warm-up to min_lr_ratio * lr: linear or cosine
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01  # AdamW; never on biases, norms and scalars
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    seed: int = 0
    ckpt_every: int = 1000  # steps between checkpoints (one is always written at the end)
    log_every: int = 10  # steps between metrics.jsonl / TensorBoard lines
    eval_every: int = 0  # steps between held-out ITM evaluations; 0 = only at the end (when there is held-out data)
    val_pairs: int = 512  # held-out pairs for the ITM accuracy (each scored as a match and a mismatch)
    holdout_images: int = 0  # without a val_dir: hold out the last N images of the first data dir for it
    device: str = "auto"  # auto: CUDA when available, else CPU
    amp: bool = True  # bf16 autocast on CUDA
    cpu_amp: bool = False  # bf16 autocast on CPU too (fast on CPUs with AVX-512 BF16 or AMX; opt-in)
    compile: bool = False  # torch.compile the model
    progress: bool = True  # progress bar on rank 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: {getattr(self, name)}; must be >= 1")
        for name in ("micro_batch_size", "eval_every", "val_pairs", "holdout_images"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: {getattr(self, name)}; must be >= 0")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: {self.lr}; must be > 0")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps: {self.warmup_steps}; must be >= 0 (or none for 10% of steps)")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule: {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.device not in DEVICES:
            raise ConfigError(f"train.device: {self.device!r}; valid: {', '.join(DEVICES)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas: {self.betas}; give two numbers in [0, 1), e.g. [0.9, 0.999]")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio: {self.min_lr_ratio}; must be in [0, 1]")

    @property
    def warmup(self) -> int:
        return self.steps // 10 if self.warmup_steps is None else self.warmup_steps


@dataclass
class RunConfig:
    """Everything a run needs: written to ``RUN/config.yaml`` and read back by :func:`mmtlab.train.load_run`."""

    preset: str = "merged"
    scale: str = "paper"
    data_dirs: list[str] = field(default_factory=list)
    val_dir: str | None = None  # held-out store for the ITM accuracy (or see train.holdout_images)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)


# Keys that may change when a run is resumed (they do not change what the finished run computes,
# except `train.steps`, which extends or shortens it).
RESUMABLE_CHANGES = (
    "train.steps", "train.micro_batch_size", "train.ckpt_every", "train.log_every", "train.eval_every",
    "train.device", "train.compile", "train.progress", "data.num_workers",
    "train.lr", "train.warmup_steps", "train.grad_clip",  # the way out of a diverged run (RUN/history.jsonl)
)  # fmt: skip


def check_run_config(cfg: RunConfig) -> None:
    """Cross-section checks that no single section can make."""
    reading_feats = needing("img_feats", cfg.loss.active)
    if cfg.model.image_input == "pixels" and reading_feats:
        raise ConfigError(
            f"{' / '.join(reading_feats)} need {INPUTS['img_feats']}, but model.image_input=pixels; "
            f"use --loss itm+mlm (or set loss.weights.{reading_feats[0]} and the others to 0)"
        )
    if cfg.val_dir and cfg.train.holdout_images:
        raise ConfigError("give either --val DIR or train.holdout_images, not both")
    if cfg.data.weights is not None and cfg.data_dirs and len(cfg.data.weights) != len(cfg.data_dirs):
        raise ConfigError(f"data.weights has {len(cfg.data.weights)} entries for {len(cfg.data_dirs)} data dirs")


def run_config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Read back a saved ``config.yaml``."""
    return from_dict(RunConfig, values)


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config (``config.yaml``) of the run directory ``run_dir``, written by ``mmtlab train``."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: not a run directory (no config.yaml); give a directory written by `mmtlab train`"
        )
    return run_config_from_dict(load_yaml(path))


def config_differences(old: RunConfig, new: RunConfig) -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two run configs: ``[(key, old, new), ...]``."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict) and not prefix.endswith("weights"):  # a weights dict is one value
            out = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}.{k}" if prefix else k))
            return out
        return {prefix: d}

    a, b = flat(dataclasses.asdict(old)), flat(dataclasses.asdict(new))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
