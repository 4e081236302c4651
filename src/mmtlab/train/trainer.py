"""The training loop: one process or ``torchrun`` + DistributedDataParallel, resumable exactly.

A step consumes ``train.batch_size`` pairs (all processes together) as ``accum`` micro-batches per process.
Before each micro-batch the torch RNG is seeded from ``(train.seed, global micro-batch index)``, the index
the data loader uses for the same samples; so ITM negatives, masks and dropout depend only on the data
position, not on the number of processes or on where a run was interrupted.

Run directory (``RUN/``): ``config.yaml`` (resolved, written first), ``checkpoint/`` (see
:mod:`mmtlab.train.checkpoint`), ``metrics.jsonl``, ``tb/`` (TensorBoard), ``history.jsonl`` (resumes that
changed a setting: ``train.lr``, ``train.steps``, ...) and, when finished, ``model.safetensors``.

A non-finite loss or gradient norm stops the run before the optimizer step, with the command that continues it
at a lower learning rate; a run stopped (or killed) before its first checkpoint resumes from step 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..config import ConfigError
from ..cpu import keep_freed_memory
from ..data.loader import build_train_loader, training_split
from ..data.store import Store, open_store
from ..data.tokenizer import caption_vocabulary
from ..device import Dist, autocast, init_distributed, pick_device
from ..errors import MmtlabError
from ..files import save_yaml
from ..model import build_from_config, compile_fn
from ..run.config import RESUMABLE_CHANGES, RunConfig, TrainConfig, config_differences, load_run_config
from ..run.load import load_run
from ..run.terms import needing
from .checkpoint import (
    drop_previous,
    latest_checkpoint,
    load_state,
    load_weights,
    save_checkpoint,
    save_weights,
    set_aside_diverged,
)
from .losses import PretrainingLoss
from .masking import itm_negatives
from .optim import build_optimizer, build_scheduler, lr_factor

LossFn = Callable[[nn.Module, dict, int], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class TrainingError(MmtlabError, ValueError):
    """The run cannot go on (a non-finite loss); the message names the step and what to do."""


class Objective(nn.Module):
    """The model and its loss as one module: DDP then sees every pass a step makes (contrastive terms run
    the model more than once)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss_fn(self.model, batch, step)


def use_bf16(device: torch.device, t: TrainConfig) -> bool:
    """bf16 autocast for training and held-out evaluation: on CUDA with ``train.amp``, on CPU with ``train.cpu_amp``."""
    return t.amp if device.type == "cuda" else device.type == "cpu" and t.cpu_amp


def seed_micro_batch(seed: int, index: int) -> None:
    """Seed torch (CPU and CUDA) for global micro-batch ``index`` of a run with seed ``seed``."""
    torch.manual_seed((seed << 32) + index)


def micro_batching(cfg: RunConfig, world: int) -> tuple[int, int]:
    """(micro-batch size per process, accumulation steps) for ``train.batch_size`` over ``world`` processes."""
    t = cfg.train
    micro = t.micro_batch_size or t.batch_size // world
    if micro < 1 or t.batch_size % (micro * world):
        raise ConfigError(
            f"train.batch_size={t.batch_size} is not a multiple of micro-batch {micro} x {world} process(es); "
            "set train.micro_batch_size to a divisor of batch_size / processes"
        )
    return micro, t.batch_size // (micro * world)


def check_data(cfg: RunConfig, stores: list) -> None:
    """The stores fit the model and the losses (one-line errors naming both sides)."""
    m = cfg.model
    reading_cls = needing("img_cls", cfg.loss.active)
    for s in stores:
        if s.meta["feat_dim"] != m.feat_dim and m.image_input == "regions":
            raise ConfigError(
                f"{s.path}: region features have width {s.meta['feat_dim']}, but model.feat_dim={m.feat_dim}"
            )
        if reading_cls and not s.has_classes:
            raise ConfigError(
                f"{s.path}: no region class distributions, needed by {' / '.join(reading_cls)}; use loss.weights.mrm-reg"
            )
        if reading_cls and s.meta["n_classes"] != m.n_region_classes:
            raise ConfigError(
                f"{s.path}: {s.meta['n_classes']} region classes, but model.n_region_classes={m.n_region_classes}"
            )
        if m.image_input == "pixels" and not s.has_pixels:
            raise ConfigError(
                f"{s.path}: no pixels, but model.image_input=pixels; use region features or a store with pixels"
            )


def hold_out(store: Store, n_images: int) -> tuple[Store, Store]:
    """Split a store into (training view, the last ``n_images`` images and their captions)."""
    if not 0 < n_images < store.n_images:
        raise ConfigError(f"train.holdout_images={n_images}: {store.path} has {store.n_images} images; hold out fewer")
    images = np.arange(store.n_images)
    return store.subset(images[:-n_images], "train"), store.subset(images[-n_images:], "held-out")


def training_stores(cfg: RunConfig) -> tuple[list[Store], Store | None, str]:
    """The views of ``cfg.data_dirs`` that training reads (``data.split``; ``train.holdout_images`` taken from the
    first), the held-out store (``--val`` or the hold-out) and one line saying which images of which split."""
    if not cfg.data_dirs:
        raise ConfigError("no training data: give at least one --data DIR (an mmtlab store)")
    whole = [open_store(p) for p in cfg.data_dirs]
    check_data(cfg, whole)
    picked = [training_split(s, cfg.data.split) for s in whole]
    stores = [view for view, _ in picked]
    parts = [f"{s.path}: {what}" for s, (_, what) in zip(whole, picked)]
    val_store = open_store(cfg.val_dir) if cfg.val_dir else None
    if cfg.train.holdout_images:
        stores[0], val_store = hold_out(stores[0], cfg.train.holdout_images)
        parts[0] += f", the last {val_store.n_images} held out (train.holdout_images): {stores[0].n_images} trained on"
    return stores, val_store, f"training images (data.split={cfg.data.split}): " + "; ".join(parts)


class HeldOut:
    """ITM accuracy on fixed held-out pairs: each pair is scored as it is (a match) and with another
    image swapped in (a mismatch); chance is 50%."""

    def __init__(self, cfg: RunConfig, store, micro: int, device: torch.device):
        loader = build_train_loader(
            [store], batch_size=micro, seed=cfg.train.seed + 1, max_text_len=cfg.data.max_text_len,
            max_regions=cfg.data.max_regions, with_pixels=cfg.model.image_input == "pixels",
        )  # fmt: skip
        self.batches = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            for _ in range(math.ceil(cfg.train.val_pairs / micro)):
                batch = next(loader)
                neg, labels = itm_negatives(batch, ratio=1.0)
                self.batches += [(batch, torch.ones_like(labels)), (neg, labels)]
        self.device = device
        self.amp = use_bf16(device, cfg.train)
        self.n_pairs = len(self.batches) // 2 * micro

    @torch.no_grad()
    def itm_accuracy(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        correct = total = 0
        for batch, labels in self.batches:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with autocast(self.device, self.amp):
                pred = model(batch, full_states=False)["itm_logits"].argmax(-1).cpu()
            correct += int((pred == labels).sum())
            total += len(labels)
        model.train(was_training)
        return correct / total


class Logger:
    """``metrics.jsonl`` + TensorBoard (rank 0 only); on resume, lines past the checkpoint (or all of them, for a
    run resumed from step 0) are dropped."""

    def __init__(self, out: Path, start_step: int, enabled: bool, resume: bool = False):
        self.enabled = enabled
        if not enabled:
            return
        self.path = out / "metrics.jsonl"
        if self.path.exists():
            keep = [
                ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= start_step
            ]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if resume else None)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.tb.close()


def prepare_run_dir(cfg: RunConfig, out: Path, resume: bool) -> tuple[Path | None, dict[str, list]]:
    """Check ``out`` for a fresh start or a compatible resume. Returns the checkpoint to resume from (None: step
    0, also for a run stopped before its first checkpoint) and the resumable settings that change
    (``{key: [old, new]}``)."""
    ckpt = latest_checkpoint(out)
    if not resume:
        if ckpt is not None:
            raise ConfigError(f"{out} already holds a run; continue it with --resume {out} or choose a new --out")
        if (out / "config.yaml").exists():
            raise ConfigError(
                f"{out} holds a run that stopped before its first checkpoint; start it again with --resume {out} "
                "(from step 0, with its own settings) or choose a new --out"
            )
        return None, {}
    if not (out / "config.yaml").is_file():
        raise ConfigError(f"{out}: no run to resume (no config.yaml); give a run directory written by `mmtlab train`")
    saved = load_run_config(out)
    changes = {}
    for key, old, new in config_differences(saved, cfg):
        if key not in RESUMABLE_CHANGES:
            raise ConfigError(
                f"cannot resume {out}: its checkpoint has {key}={old!r}, this run {key}={new!r}; "
                f"only {', '.join(RESUMABLE_CHANGES)} may change on resume"
            )
        changes[key] = [old, new]
    return ckpt, changes


def record_history(out: Path, step: int, changes: dict[str, list]) -> None:
    """Append a resume that changed settings to ``RUN/history.jsonl`` (config.yaml holds only the newest ones)."""
    if changes:
        with open(out / "history.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), "resumed_with": changes}) + "\n")


def apply_lr_settings(optimizer: torch.optim.Optimizer, scheduler, step: int, t: TrainConfig) -> None:
    """After loading a checkpoint: the schedule of ``t`` (``train.lr``, warm-up, steps may have changed on
    resume) at ``step``; with unchanged settings every value is the one the checkpoint holds."""
    factor = lr_factor(step, t)
    for group in optimizer.param_groups:
        group["initial_lr"] = t.lr
        group["lr"] = t.lr * factor
    scheduler.base_lrs = [t.lr] * len(optimizer.param_groups)


def train(
    cfg: RunConfig,
    out: str | Path,
    resume: bool = False,
    loss_fn: LossFn | None = None,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Train ``cfg`` into run directory ``out`` (continue its checkpoint if ``resume``); returns ``out``.

    ``loss_fn(model, batch, step) -> (total, {term: loss})`` replaces the loss set (fine-tuning). ``report``
    (rank 0) receives one line saying which images of which split the run reads (:func:`training_stores`). Works
    the same under ``torchrun`` (each process trains its share of every global batch).
    """
    out = Path(out)
    d = init_distributed("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        return _train(cfg, out, resume, loss_fn, d, report)
    finally:
        if d.owned:
            dist.destroy_process_group()


def _train(
    cfg: RunConfig, out: Path, resume: bool, loss_fn: LossFn | None, d: Dist, report: Callable[[str], None] | None
) -> Path:
    t = cfg.train
    device = pick_device(t.device, d.local_rank)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for the activations every step frees and allocates again
    micro, accum = micro_batching(cfg, d.world)
    stores, val_store, data_line = training_stores(cfg)
    if cfg.data.vocab == "train" and cfg.model.vocab_ids is None:  # before the run directory compares configs
        vocab_ids = caption_vocabulary(c for s in stores for c in s.captions)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_ids=vocab_ids))
    ckpt, changes = prepare_run_dir(cfg, out, resume)
    if d.world > 1:
        dist.barrier()  # every process has checked the run directory before rank 0 writes into it
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")

    torch.manual_seed(t.seed)
    model_cfg = dataclasses.replace(cfg.model, text_init=None) if ckpt else cfg.model  # weights come from ckpt
    model = build_from_config(model_cfg).to(device)
    if ckpt:
        load_weights(model, ckpt / "model.safetensors")
    objective = Objective(model, loss_fn or PretrainingLoss(cfg.loss))
    if t.compile:  # the forward only: masking and losses stay eager (their RNG streams stay the eager ones)
        model.forward = compile_fn(model.forward, dynamic=True)
    runner: nn.Module = objective
    if d.world > 1:
        runner = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    step = 0
    if ckpt:
        state = load_state(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        apply_lr_settings(optimizer, scheduler, step, t)
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    if d.main:
        record_history(out, step, changes)
        if report is not None:
            report(data_line)

    loader = build_train_loader(
        stores, batch_size=micro, seed=t.seed, sampling=cfg.data.sampling, weights=cfg.data.weights,
        rank=d.rank, world_size=d.world, start_batch=step * accum, max_text_len=cfg.data.max_text_len,
        max_regions=cfg.data.max_regions, num_workers=cfg.data.num_workers,
        with_pixels=cfg.model.image_input == "pixels", pin_memory=device.type == "cuda",
    )  # fmt: skip
    held_out = HeldOut(cfg, val_store, micro, device) if val_store is not None and t.val_pairs and d.main else None
    logger = Logger(out, step, d.main, resume)
    amp = use_bf16(device, t)
    bar = _progress(t.steps, step, enabled=d.main and t.progress)
    window_start, window_steps, window = time.perf_counter(), 0, {}  # log lines average their window
    unconfirmed = ckpt is not None  # the newest checkpoint has not yet trained a finite step in this process
    model.train()
    try:
        while step < t.steps:
            terms: dict[str, torch.Tensor] = {}
            total = torch.zeros((), device=device)
            for a in range(accum):
                batch = {k: v.to(device, non_blocking=True) for k, v in next(loader).items()}
                seed_micro_batch(t.seed, (step * accum + a) * d.world + d.rank)
                sync = runner.no_sync() if d.world > 1 and a < accum - 1 else contextlib.nullcontext()
                with sync:
                    with autocast(device, amp):
                        loss, parts = runner(batch, step)
                    (loss / accum).backward()
                total += loss.detach().float() / accum
                for k, v in parts.items():
                    terms[k] = terms.get(k, 0.0) + v.detach().float() / accum
            total, terms = _mean_over_ranks(total, terms, d)
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
            _stop_if_diverged(step, total, terms, grad_norm, cfg, out, d.main)
            if unconfirmed and d.main:
                drop_previous(out)
            unconfirmed = False
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_steps += 1
            bar.update(1)
            for k, v in {"loss": total, **terms}.items():
                window[k] = window.get(k, 0.0) + v
            if step % t.log_every == 0 or step == t.steps:
                sps = window_steps * t.batch_size / (time.perf_counter() - window_start)
                record = {"step": step, "samples": step * t.batch_size}
                record |= {k: v.item() / window_steps for k, v in window.items()}
                record |= {"lr": lr, "grad_norm": float(grad_norm), "samples_per_s": sps}
                logger.log(record)
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}", samples_s=f"{sps:.0f}", refresh=False
                )  # drawn at the next redraw
                window_start, window_steps, window = time.perf_counter(), 0, {}
            pause = time.perf_counter()  # evaluation and checkpoints do not count against samples/s
            if held_out and ((t.eval_every and step % t.eval_every == 0) or step == t.steps):
                logger.log({"step": step, "val_itm_acc": held_out.itm_accuracy(model), "val_pairs": held_out.n_pairs})
            if step % t.ckpt_every == 0 or step == t.steps:
                _checkpoint(out, model, optimizer, scheduler, step, t.batch_size, device, d)
                unconfirmed = True
            window_start += time.perf_counter() - pause
        if d.main:
            save_weights(model, out / "model.safetensors")
    finally:
        bar.close()
        logger.close()
    return out


def _progress(total: int, initial: int, enabled: bool):
    from ..progress import progress_bar

    return progress_bar(
        total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, desc="train"
    )


def _mean_over_ranks(total: torch.Tensor, terms: dict, d: Dist) -> tuple[torch.Tensor, dict]:
    """Average the step's loss and terms over processes (for logging and the finiteness check)."""
    if d.world == 1:
        return total, terms
    names = sorted(terms)
    flat = torch.stack([total, *(terms[k] for k in names)])
    dist.all_reduce(flat)
    flat /= d.world
    return flat[0], dict(zip(names, flat[1:]))


def _stop_if_diverged(
    step: int, total: torch.Tensor, terms: dict, grad_norm: torch.Tensor, cfg: RunConfig, out: Path, main: bool
) -> None:
    """Stop before the optimizer step when the loss or the gradient norm is not finite. A checkpoint of the
    weights that just failed (taken right before this step) cannot help and is set aside (rank 0)."""
    if torch.isfinite(total) and torch.isfinite(grad_norm):
        return
    if not torch.isfinite(total):
        what = f"non-finite loss in {', '.join(_non_finite_terms(total, terms, cfg))}"
    else:
        what = f"non-finite gradient norm ({float(grad_norm)})"
    kept = latest_checkpoint(out)
    if kept is not None and main and int(json.loads((kept / "meta.json").read_text())["step"]) == step:
        kept = set_aside_diverged(out)
    t = cfg.train
    where = f"the run resumes from {kept}" if kept is not None else "the run resumes from step 0"
    advice = f"train.lr={t.lr / 10:g} train.warmup_steps={min(t.steps, max(100, 2 * t.warmup))}"
    advice += "" if t.grad_clip > 0 else " train.grad_clip=1.0"
    raise TrainingError(
        f"{what} at step {step + 1}; stopped ({where}). Lower the learning rate or warm up longer, e.g. "
        f"`mmtlab train --resume {out} {advice}`; a loss weight can change only in a new run (--out)"
    )


def _non_finite_terms(total: torch.Tensor, terms: dict, cfg: RunConfig) -> list[str]:
    """The terms that are not finite, or whose weighted value overflows (a huge ``loss.weights.<term>``)."""
    bad = [k for k, v in terms.items() if not torch.isfinite(v)]
    if bad:
        return bad
    overflow = [
        f"{k} (loss.weights.{k}={w:g} overflows)" for k, w in cfg.loss.weights.items()
        if k in terms and not torch.isfinite(torch.tensor(w, dtype=total.dtype) * terms[k])
    ]  # fmt: skip
    return overflow or ["the total"]


def _checkpoint(
    out: Path, model, optimizer, scheduler, step: int, batch_size: int, device: torch.device, d: Dist
) -> None:
    if d.main:
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step, "rng": rng}
        save_checkpoint(out, model, state, {"step": step, "samples": step * batch_size, "world_size": d.world})
    if d.world > 1:
        dist.barrier()


__all__ = ["train", "load_run", "Objective", "TrainingError", "HeldOut", "micro_batching", "seed_micro_batch"]
