"""Our contenders: a model of the family at the benchmark's shape, its training step, its scoring block (the
unimodal cache) and its model FLOPs per training sample."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .inputs import VOCAB, score_pairs

SINGLE_SCHEDULE = "M" * 12
TWO_STREAM_SCHEDULE = "U" * 9 + "C" * 5
ABLATIONS = ("mlm", "last-rows", "cache", "fused-adamw")  # levers of ours that --ablate turns off


@dataclass
class Contender:
    """One implementation ready to time: ``train()`` runs one optimizer step, ``score()`` one scoring block."""

    name: str
    model: object
    params: int
    train: Callable[[], None]
    score: Callable[[], None]
    train_flops: float  # model FLOPs of one training sample (see the module docstring)


def _n(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _train_step(loss_fn: Callable, optimizer) -> Callable[[], None]:
    """One training step, with no host synchronisation."""

    def step() -> None:
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _ours(
    schedule: str,
    shared: bool,
    shape: dict,
    inputs: dict,
    score_inputs: dict,
    device,
    compile: bool,
    ablate: tuple,
    bf16: bool,
) -> Contender:
    import torch

    from ..device import autocast
    from ..model import build_model, compile_fn
    from ..train.losses import itm_loss, mlm_loss

    model = build_model(
        "merged",
        "paper",
        schedule=schedule,
        shared=shared,
        width=shape["width"],
        heads=shape["heads"],
        ffn=shape["ffn"],
        feat_dim=shape["feat_dim"],
        vocab_size=VOCAB,
    ).to(device)
    fused = "fused-adamw" not in ablate
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None, foreach=None if fused else True)
    batch = {k: inputs[k] for k in ("text_ids", "text_mask", "img_feats", "img_boxes", "img_mask")}
    mlm_mask = inputs["text_mask"] if "mlm" in ablate else inputs["mlm_mask"]
    mlm_labels = torch.where(inputs["mlm_mask"], inputs["text_ids"], -100)[mlm_mask]  # (N,)
    itm_labels = inputs["itm_labels"]

    def loss_fn() -> torch.Tensor:
        with autocast(device, bf16):
            out = model({**batch, "mlm_mask": mlm_mask}, full_states="last-rows" in ablate)
            return mlm_loss(out["mlm_logits"], mlm_labels) + itm_loss(out, itm_labels)

    cap, img = score_pairs(score_inputs["text_ids"].shape[0], device)
    n_cap, n_img = int(cap.max()) + 1, int(img.max()) + 1
    pool = {k: score_inputs[k] for k in ("text_ids", "text_mask", "img_feats", "img_boxes", "img_mask")}
    pair_batch = {
        "text_ids": pool["text_ids"][cap],
        "text_mask": pool["text_mask"][cap],
        **{k: pool[k][img] for k in ("img_feats", "img_boxes", "img_mask")},
    }

    def score_fn() -> torch.Tensor:
        with autocast(device, bf16):
            if "cache" in ablate:
                return model(pair_batch)["itm_logits"]
            t = model.encode_text(pool["text_ids"][:n_cap], pool["text_mask"][:n_cap])  # (n_cap, T, D)
            v, v_mask = model.encode_image({k: pool[k][:n_img] for k in ("img_feats", "img_boxes", "img_mask")})
            return model.match_logits(t[cap], pool["text_mask"][cap], v[img], v_mask[img])  # (B, 2)

    if compile:
        loss_fn, score_fn = compile_fn(loss_fn), compile_fn(score_fn, freeze=True)
    return Contender(
        name=f"mmtlab {'single-stream' if shared else 'two-stream'} {schedule}",
        model=model,
        params=_n(model),
        train=_in_mode(model, True, _train_step(loss_fn, optimizer)),
        score=_in_mode(model, False, _no_grad(score_fn)),
        train_flops=_ours_flops(model, shape, int(inputs["mlm_mask"][0].sum())),
    )


def _ours_flops(model, shape: dict, n_mlm: int) -> float:
    T, R = shape["text_len"], shape["regions"]
    per_pass = 0
    for layer in model.layers:
        if len(layer.streams) == 1:
            per_pass += _n(layer.streams[0]) * (T + R)
        else:
            per_pass += _n(layer.streams[0]) * T + _n(layer.streams[1]) * R
    emb = model.image_embed
    per_pass += (_n(emb.feat) + _n(emb.box)) * R
    per_pass += (_n(model.mlm.transform) + VOCAB * shape["width"]) * n_mlm + _n(model.itm[-1])
    return 6.0 * per_pass


def _in_mode(model, training: bool, fn: Callable) -> Callable[[], None]:
    def run() -> None:
        model.train(training)
        fn()

    return run


def _no_grad(fn: Callable) -> Callable[[], None]:
    import torch

    def run() -> None:
        with torch.no_grad():
            fn()

    return run
