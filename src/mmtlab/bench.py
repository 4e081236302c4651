"""``mmtlab bench``: our models against the implementations people use today, in one process on one device.

Two comparisons (docs/design.md, "Benchmark shape"; issue 7), each at the same width / heads / FFN, batch, text
length and regions:

* ours ``single-stream`` at 12 layers (``M`` x 12, ``shared: true``) vs Hugging Face ``VisualBertForPreTraining``;
* ours two-stream ``U`` x 9 + ``C`` x 5 vs HF ``LxmertForPreTraining`` (9 language + 5 object + 5 cross layers).
  The mapping keeps LXMERT's text depth (9 + 5 = 14 layers) and its per-sample FLOPs: an LXMERT cross layer is
  cross-attention + self-attention + FFN per stream, 16 D^2 per token against our layer's 12 D^2, so its
  9 x 12 x T + 5 x 12 x R + 5 x 16 x (T + R) = 12,560 D^2 per sample (T = 40, R = 36) matches our
  14 x 12 x (T + R) = 12,768 D^2 within 2%. The 9 leading ``U`` layers are the unimodal prefix.

Two workloads, both timed as the median of ``--steps`` iterations after ``--warmup`` untimed ones, with the
contenders of a comparison interleaved iteration by iteration (so a busy shared CPU slows both alike):

* **train**: MLM (15% of the word pieces) + ITM cross-entropy, backward, AdamW step. HF models get the labels
  their API takes (MLM labels -100 except at the masked positions); ours gets ``mlm_mask`` and computes MLM
  logits only there. AdamW is ``fused`` for ours where the device supports it, the default for HF.
* **score**: ITM scoring of a block of caption x image pairs (16 captions x ``batch / 16`` images, as in
  exhaustive retrieval), forward only, no grad. HF models run every pair through ``ForPreTraining`` (their only
  class with the ITM head), inputs pre-gathered per pair outside the timing; ours encodes each caption and image
  once (the unimodal cache: :meth:`~mmtlab.model.MultimodalTransformer.encode_text`) and runs the remaining
  layers per pair (:meth:`~mmtlab.model.MultimodalTransformer.match_logits`).

On CUDA every contender runs under bf16 autocast, on CPU in fp32 unless ``--precision bf16``. MFU (CUDA only)
= model FLOP/s / peak, where the model FLOPs of a training sample are ``6 x sum(parameters of each matmul x
tokens it is applied to)``: the layer stack on the T + R tokens of its stream(s), the region-feature projection
on R, the MLM head on the masked positions only, the ITM head once; attention-score FLOPs (about 2% here) and
embeddings lookups are not counted. The peak is 989 TFLOP/s dense bf16 for H100 SXM and H200
(``--peak-tflops`` overrides).

Scales: ``base`` is the issue's shape (width 768, 12 heads, FFN 3072, 40 word pieces, 36 regions x 2,048-d);
``tiny`` keeps the layer counts at width 128, 4 heads, FFN 512, 16 word pieces, 10 regions x 256-d.

``transformers`` is a benchmark-only extra, imported lazily.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .config import ConfigError
from .cpu import add_threads_option

SHAPES = {
    "base": dict(width=768, heads=12, ffn=3072, text_len=40, regions=36, feat_dim=2048),
    "tiny": dict(width=128, heads=4, ffn=512, text_len=16, regions=10, feat_dim=256),
}
VOCAB = 30522  # bert-base-uncased, for every contender
MLM_FRACTION = 0.15
SCORE_CAPTIONS = 16  # captions per scoring block; images = ceil(batch / 16)
SINGLE_SCHEDULE = "M" * 12
TWO_STREAM_SCHEDULE = "U" * 9 + "C" * 5
COMPARISONS = ("visualbert", "lxmert")
COMPILE_MODES = ("none", "all", "ours")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on CUDA, fp32 on CPU
ABLATIONS = ("mlm", "last-rows", "cache", "fused-adamw")  # levers of ours that --ablate turns off
# dense bf16 peak by device name, the more specific names first (NVIDIA's data sheets)
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H200 NVL": 835e12, "H100": 989e12, "H200": 989e12}


# ------------------------------------------------------------------------------------------------ inputs
def make_inputs(shape: dict, batch: int, device, seed: int = 0) -> dict:
    """Random inputs in the batch contract (docs/design.md, "The batch dict"), plus the MLM positions and ITM labels.

    Every sample has all ``text_len`` word pieces and ``regions`` regions real (no padding), and the same
    number of MLM positions (never ``[CLS]``), so all contenders see identical work.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    B, T, R, F = batch, shape["text_len"], shape["regions"], shape["feat_dim"]
    text_ids = torch.randint(1000, VOCAB, (B, T), generator=g)
    n_mlm = max(1, round(MLM_FRACTION * T))
    pos = torch.rand(B, T - 1, generator=g).argsort(dim=1)[:, :n_mlm] + 1  # (B, n_mlm), never [CLS]
    mlm_mask = torch.zeros(B, T, dtype=torch.bool).scatter_(1, pos, True)
    xy = torch.rand(B, R, 2, generator=g) * 0.5
    wh = torch.rand(B, R, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + wh, (wh[..., :1] * wh[..., 1:])], dim=-1)  # (B, R, 5)
    boxes[:, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])  # the global token
    batch_ = {
        "text_ids": text_ids,
        "text_mask": torch.ones(B, T, dtype=torch.bool),
        "img_feats": torch.randn(B, R, F, generator=g).abs(),
        "img_boxes": boxes,
        "img_mask": torch.ones(B, R, dtype=torch.bool),
        "mlm_mask": mlm_mask,
        "itm_labels": torch.randint(0, 2, (B,), generator=g),
    }
    return {k: v.to(device) for k, v in batch_.items()}


def score_pairs(batch: int, device) -> tuple:
    """Caption and image index of each scored pair: ``SCORE_CAPTIONS`` captions x ceil(batch / that) images."""
    import torch

    n_cap = min(SCORE_CAPTIONS, batch)
    i = torch.arange(batch, device=device)
    return i % n_cap, i // n_cap  # (batch,), (batch,)


# ------------------------------------------------------------------------------------------------ contenders
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

    from .device import autocast
    from .model import build_model, compile_fn
    from .train.losses import itm_loss, mlm_loss

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


def _hf(kind: str, shape: dict, inputs: dict, score_inputs: dict, device, compile: bool, bf16: bool) -> Contender:
    import torch

    from .device import autocast
    from .model import compile_fn

    try:
        import transformers
    except ImportError as e:
        raise ConfigError(
            "mmtlab bench needs the benchmark-only extra 'transformers' for the peers; install it with "
            "`pip install 'mmtlab[bench]'` (or transformers>=4.40)"
        ) from e

    R = shape["regions"]
    common = dict(
        vocab_size=VOCAB, hidden_size=shape["width"], num_attention_heads=shape["heads"], intermediate_size=shape["ffn"]
    )
    B = inputs["text_ids"].shape[0]
    mlm_labels = torch.where(inputs["mlm_mask"], inputs["text_ids"], -100)  # (B, T)
    ids, tmask = inputs["text_ids"], inputs["text_mask"].long()
    feats, vmask = inputs["img_feats"], inputs["img_mask"].long()
    if kind == "visualbert":
        cfg = transformers.VisualBertConfig(num_hidden_layers=12, visual_embedding_dim=shape["feat_dim"], **common)
        model = transformers.VisualBertForPreTraining(cfg)
        ignore = torch.full((B, R), -100, dtype=torch.long, device=device)

        def forward(ids, tmask, feats, boxes, vmask, labels=None, itm=None):
            out = model(
                input_ids=ids,
                attention_mask=tmask,
                visual_embeds=feats,
                visual_attention_mask=vmask,
                labels=labels,
                sentence_image_labels=itm,
            )
            return out.loss if labels is not None else out.seq_relationship_logits

        labels = torch.cat([mlm_labels, ignore], dim=1)  # VisualBERT's labels cover the T + R positions
    else:
        cfg = transformers.LxmertConfig(
            l_layers=9,
            x_layers=5,
            r_layers=5,
            visual_feat_dim=shape["feat_dim"],
            visual_pos_dim=4,
            task_obj_predict=False,
            task_qa=False,
            **common,
        )
        model = transformers.LxmertForPreTraining(cfg)

        def forward(ids, tmask, feats, boxes, vmask, labels=None, itm=None):
            out = model(
                input_ids=ids,
                attention_mask=tmask,
                visual_feats=feats,
                visual_pos=boxes[..., :4],
                visual_attention_mask=vmask,
                labels=labels,
                matched_label=itm,
            )
            return out.loss if labels is not None else out.cross_relationship_score

        labels = mlm_labels
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    boxes = inputs["img_boxes"]

    def loss_fn() -> torch.Tensor:
        with autocast(device, bf16):
            return forward(ids, tmask, feats, boxes, vmask, labels, inputs["itm_labels"])

    cap, img = score_pairs(score_inputs["text_ids"].shape[0], device)
    pool = (
        score_inputs["text_ids"],
        score_inputs["text_mask"].long(),
        score_inputs["img_feats"],
        score_inputs["img_boxes"],
        score_inputs["img_mask"].long(),
    )
    pairs = tuple(x[i] for x, i in zip(pool, (cap, cap, img, img, img)))  # pre-gathered, outside the timing

    def score_fn() -> torch.Tensor:
        with autocast(device, bf16):
            return forward(*pairs)

    if compile:
        loss_fn, score_fn = compile_fn(loss_fn), compile_fn(score_fn, freeze=True)
    return Contender(
        name=f"HF {type(model).__name__} (transformers {transformers.__version__}, "
        f"attn={getattr(model.config, '_attn_implementation', None)})",
        model=model,
        params=_n(model),
        train=_in_mode(model, True, _train_step(loss_fn, optimizer)),
        score=_in_mode(model, False, _no_grad(score_fn)),
        train_flops=_hf_flops(kind, model, shape, int(inputs["mlm_mask"][0].sum())),
    )


def _hf_flops(kind: str, model, shape: dict, n_mlm: int) -> float:
    T, R = shape["text_len"], shape["regions"]
    head = (_n(model.cls.predictions.transform) + VOCAB * shape["width"]) * n_mlm
    if kind == "visualbert":
        vb = model.visual_bert
        per_pass = _n(vb.encoder) * (T + R) + _n(vb.embeddings.visual_projection) * R + _n(vb.pooler) + head
    else:
        enc = model.lxmert.encoder
        per_pass = _n(enc.layer) * T + _n(enc.r_layers) * R + _n(enc.visn_fc) * R + _n(model.lxmert.pooler) + head
        for x in enc.x_layers:
            per_pass += _n(x.visual_attention) * (T + R)
            per_pass += sum(
                _n(getattr(x, f"lang_{m}")) * T + _n(getattr(x, f"visn_{m}")) * R
                for m in ("self_att", "inter", "output")
            )
    return 6.0 * (per_pass + _n(model.cls.seq_relationship))


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


# ------------------------------------------------------------------------------------------------ timing
def time_interleaved(fns: dict[str, Callable[[], None]], steps: int, warmup: int, device) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn (ours, theirs, ours, ...)."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def check_bf16(model, inputs: dict, device) -> dict:
    """Our model's forward under bf16 autocast vs fp32 (eval mode, same inputs): relative error (norm of the
    difference / norm of the fp32 values) of the final states and of the ITM logits, and the largest ITM-logit
    difference. ``ok`` when both relative errors are below 5%."""
    import torch

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b).norm() / b.norm())

    batch = {k: inputs[k] for k in ("text_ids", "text_mask", "img_feats", "img_boxes", "img_mask")}
    model.eval()
    with torch.no_grad():
        ref = model(batch)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model(batch)
    states = max(rel(low[k], ref[k]) for k in ("text_states", "img_states"))
    itm = rel(low["itm_logits"], ref["itm_logits"])
    diff = float((low["itm_logits"].float() - ref["itm_logits"]).abs().max())
    return {
        "states_rel_err": states,
        "itm_logits_rel_err": itm,
        "itm_logits_max_abs_diff": diff,
        "ok": states < 0.05 and itm < 0.05,
    }


def profile_ops(fn: Callable[[], None], device, top: int = 8) -> list[dict]:
    """The ``top`` operators of one call of ``fn`` by self time (torch.profiler; device time on CUDA), with their
    share of the total."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    fn()  # warm
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        fn()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: -getattr(e, key))
    total = sum(getattr(e, key) for e in events) or 1
    return [{"op": e.key, "share": getattr(e, key) / total, "calls": e.count} for e in events[:top]]


def peak_flops(device, override_tflops: float | None) -> float | None:
    import torch

    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device))


def peak_for_name(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of the GPU called ``name`` (e.g. "NVIDIA H100 80GB HBM3"), None if unknown."""
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


# ------------------------------------------------------------------------------------------------ the run
def run_bench(
    scale: str = "tiny",
    device: str = "cpu",
    batch: int = 8,
    score_batch: int | None = None,
    precision: str = "auto",
    steps: int = 5,
    warmup: int = 2,
    compile: str = "none",
    compare: tuple[str, ...] = COMPARISONS,
    peers: bool = True,
    ablate: tuple[str, ...] = (),
    peak_tflops: float | None = None,
    threads: int | None = None,
    profile: bool = False,
    log: Callable[[str], None] = lambda s: None,
    on_row: Callable[[dict], None] = lambda results: None,
) -> dict:
    """Run the benchmark and return the results dict (what ``--out`` writes). ``on_row(results)`` is called after
    each finished comparison (``--out`` is rewritten then, so a run killed midway keeps what it measured)."""
    import torch

    if scale not in SHAPES:
        raise ConfigError(f"--scale {scale!r}: valid scales are {', '.join(SHAPES)}")
    score_batch = batch if score_batch is None else score_batch
    if min(batch, score_batch, steps) < 1 or warmup < 0:
        raise ConfigError(
            f"--batch, --score-batch and --steps must be >= 1 and --warmup >= 0 "
            f"(got {batch}, {score_batch}, {steps}, {warmup})"
        )
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: valid values are {', '.join(PRECISIONS)}")
    if compile not in COMPILE_MODES:
        raise ConfigError(f"--compile {compile!r}: valid modes are {', '.join(COMPILE_MODES)}")
    for name in compare:
        if name not in COMPARISONS:
            raise ConfigError(f"--compare {name!r}: valid comparisons are {', '.join(COMPARISONS)}")
    for name in ablate:
        if name not in ABLATIONS:
            raise ConfigError(f"--ablate {name!r}: valid levers are {', '.join(ABLATIONS)}")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: valid devices are cpu, cuda")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible; use --device cpu")

    if threads:
        torch.set_num_threads(threads)
    bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    shape = SHAPES[scale]
    peak = peak_flops(dev, peak_tflops)
    inputs = make_inputs(shape, batch, dev)
    score_inputs = inputs if score_batch == batch else make_inputs(shape, score_batch, dev, seed=1)
    results = {
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # mmtlab.cpu: PASSIVE unless the user set one
        "torch": torch.__version__,
        "transformers": _transformers_version(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scale": scale,
        "shape": {
            **shape,
            "vocab": VOCAB,
            "mlm_positions": int(inputs["mlm_mask"][0].sum()),
            "score_block": [min(SCORE_CAPTIONS, score_batch), math.ceil(score_batch / SCORE_CAPTIONS)],
        },
        "batch": batch,
        "score_batch": score_batch,
        "steps": steps,
        "warmup": warmup,
        "compile": compile,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "loss": "ours: mmtlab.train.losses mlm_loss + itm_loss; HF: the model's own loss (labels, ITM label)",
        "ablate": list(ablate),
        "peak_flops": peak,
        "comparisons": [],
    }
    ours_spec = {"visualbert": (SINGLE_SCHEDULE, True), "lxmert": (TWO_STREAM_SCHEDULE, False)}
    for name in compare:
        torch.manual_seed(0)
        ours = _ours(*ours_spec[name], shape, inputs, score_inputs, dev, compile != "none", tuple(ablate), bf16)
        if "bf16_check" not in results and bf16:
            results["bf16_check"] = check_bf16(ours.model, inputs, dev)
        contenders = {"ours": ours}
        if peers:
            contenders["theirs"] = _hf(name, shape, inputs, score_inputs, dev, compile == "all", bf16)
        row: dict = {"comparison": f"ours vs {name}"}
        if profile:
            row["ours_profile"] = {task: profile_ops(getattr(ours, task), dev) for task in ("train", "score")}
        for task, key, n in (("train", "train_samples_per_s", batch), ("score", "score_pairs_per_s", score_batch)):
            log(f"{row['comparison']}: timing {task} ({', '.join(c.name for c in contenders.values())})")
            secs = time_interleaved({k: getattr(c, task) for k, c in contenders.items()}, steps, warmup, dev)
            for k, c in contenders.items():
                entry = row.setdefault(
                    k, {"name": c.name, "params": c.params, "train_gflops_per_sample": c.train_flops / 1e9}
                )
                entry[f"{task}_ms"] = secs[k] * 1e3
                entry[key] = n / secs[k]
        for k in contenders:
            e = row[k]
            e["mfu"] = e["train_samples_per_s"] * e["train_gflops_per_sample"] * 1e9 / peak if peak else None
        if peers:
            row["ratio_train"] = row["ours"]["train_samples_per_s"] / row["theirs"]["train_samples_per_s"]
            row["ratio_score"] = row["ours"]["score_pairs_per_s"] / row["theirs"]["score_pairs_per_s"]
        results["comparisons"].append(row)
        on_row(results)
        del contenders, ours
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return results


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def format_table(results: dict) -> str:
    """The printed summary: one line per contender, then the ratios ours / theirs."""
    head = f"{'contender':<64} {'train samples/s':>16} {'score pairs/s':>14} {'MFU':>6}"
    lines = [
        f"mmtlab bench: {results['device_name']} ({results['device']}), torch {results['torch']}, "
        f"transformers {results['transformers']}, scale {results['scale']}, batch {results['batch']} "
        f"(scoring {results['score_batch']}), "
        f"{results['precision']}, torch.compile: {results['compile']}"
        + (f", ablated: {', '.join(results['ablate'])}" if results["ablate"] else ""),
        head,
        "-" * len(head),
    ]
    for row in results["comparisons"]:
        for k in ("ours", "theirs"):
            if k in row:
                e = row[k]
                mfu = f"{100 * e['mfu']:5.1f}%" if e["mfu"] is not None else "   n/a"
                lines.append(
                    f"{e['name'][:64]:<64} {e['train_samples_per_s']:>16,.1f} {e['score_pairs_per_s']:>14,.1f} {mfu:>6}"
                )
        if "ratio_train" in row:
            lines.append(
                f"{'  ratio ours/theirs (' + row['comparison'] + ')':<64} {row['ratio_train']:>15.2f}x {row['ratio_score']:>13.2f}x"
            )
    for row in results["comparisons"]:
        for task, ops in row.get("ours_profile", {}).items():
            lines.append(
                f"profile of ours ({row['comparison']}, {task}): "
                + ", ".join(f"{o['op']} {100 * o['share']:.1f}%" for o in ops)
            )
    if "bf16_check" in results:
        c = results["bf16_check"]
        lines.append(
            f"bf16 autocast vs fp32 (ours): states rel. err {c['states_rel_err']:.2e}, "
            f"ITM logits rel. err {c['itm_logits_rel_err']:.2e} (max diff {c['itm_logits_max_abs_diff']:.2e}) "
            f"-> {'ok' if c['ok'] else 'MISMATCH'}"
        )
    return "\n".join(lines)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _cmd_bench(args: argparse.Namespace) -> int:
    import sys

    from .files import write_json

    out = Path(args.out) if args.out else None

    def write(results: dict) -> None:
        if out:
            write_json(results, out)

    results = run_bench(
        scale=args.scale, device=args.device, batch=args.batch, score_batch=args.score_batch,
        precision=args.precision, steps=args.steps, warmup=args.warmup,
        compile=args.compile, compare=_csv(args.compare), peers=not args.no_peers, ablate=_csv(args.ablate),
        peak_tflops=args.peak_tflops, threads=args.threads, profile=args.profile,
        log=lambda s: print(s, file=sys.stderr, flush=True), on_row=write,
    )  # fmt: skip
    print(format_table(results))
    write(results)
    if out:
        print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    """Add ``mmtlab bench`` to the ``mmtlab`` parser."""
    p = subparsers.add_parser(
        "bench",
        help="speed against the peers (HF VisualBERT, LXMERT), same machine, same run",
        description="Time our models against HF VisualBERT and LXMERT (train step and ITM scoring), in one process "
        "on one device, interleaved; see docs/performance.md.",
    )
    p.add_argument("--scale", default="tiny", choices=sorted(SHAPES), help="model and input shape (default: tiny)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch", type=int, default=8, help="samples per training step (default 8)")
    p.add_argument(
        "--score-batch",
        type=int,
        default=None,
        help="pairs per scoring call: 16 captions x score-batch/16 images (default: --batch)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="bf16: every contender under bf16 autocast (auto: on CUDA only; fp32 on CPU)",
    )
    p.add_argument("--steps", type=int, default=5, help="timed iterations (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument(
        "--compile",
        nargs="?",
        const="all",
        default="none",
        choices=COMPILE_MODES,
        help="torch.compile every contender (all, the default with no value) or only ours",
    )
    p.add_argument("--compare", default=",".join(COMPARISONS), help="comma-separated: " + ", ".join(COMPARISONS))
    p.add_argument("--no-peers", action="store_true", help="time only our models (e.g. for MFU at a large batch)")
    p.add_argument("--ablate", default="", help="turn off levers of ours (comma-separated): " + ", ".join(ABLATIONS))
    p.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s for MFU (default: 989 on H100/H200)")
    add_threads_option(p)
    p.add_argument("--profile", action="store_true", help="also print and save the top operators of our models' steps")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.set_defaults(func=_cmd_bench)
