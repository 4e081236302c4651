"""Zero-shot retrieval on a store: wire the scorers to the data layer and produce the results contract.

:func:`evaluate_retrieval` scores a model on a store (view); :func:`check_scorer` says whether a trained run
can honestly use a scorer (an ITM head that was trained, embeddings that were trained). The command line
(:mod:`mmtlab.eval.cli`) loads runs and writes ``RESULTS.json``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..cpu import keep_freed_memory
from ..files import write_json
from ..model.compile import compile_fn
from ..run.terms import training
from .metrics import EvalError, recall_caps, retrieval_metrics
from .names import PROTOCOLS, SCORERS
from .scorers import (
    dual_scores,
    embeddings,
    encode_images,
    encode_texts,
    exhaustive_scores,
    fingerprint,
    model_device,
    rerank_scores,
)


# ------------------------------------------------------------------------------------ what a run can do
def itm_trained(cfg) -> bool:
    """Whether run config ``cfg`` trained the cross-encoder's ITM head (a loss term that trains ``itm``:
    classification, or the contrastive loss over the cross-encoder's match logit)."""
    return bool(training("itm", cfg.loss.active, cfg.model.is_dual))


def embedding_trained(cfg) -> bool:
    """Whether ``cfg`` trained the projection embeddings (a term that trains ``proj``: ``itc``, a cross-encoder's
    unimodal view, or the contrastive loss of an all-``U`` (dual) model)."""
    return bool(training("proj", cfg.loss.active, cfg.model.is_dual))


def _loss_desc(cfg) -> str:
    return f"preset {cfg.preset}, loss {cfg.loss.name} ({', '.join(cfg.loss.active)})"


def default_scorer(cfg, finetuned: bool = False) -> str:
    """The scorer a run is evaluated with when none is named: the paper's protocol (``exhaustive``, ranking by the
    ITM head) for a run that trained its ITM head, ``dual`` for one that trained only embeddings (``baseline``)."""
    return "dual" if not (itm_trained(cfg) or finetuned) and embedding_trained(cfg) else "exhaustive"


def check_scorer(cfg, scorer: str, shortlist_cfg=None, finetuned: bool = False) -> None:
    """Raise :class:`EvalError` when the run with config ``cfg`` cannot give an honest number with ``scorer``
    (``finetuned``: the run was fine-tuned for retrieval, which trains its ITM head)."""
    if scorer not in SCORERS:
        raise EvalError(f"unknown scorer {scorer!r}; valid: {', '.join(SCORERS)}")
    if scorer in ("exhaustive", "rerank") and not (itm_trained(cfg) or finetuned):
        raise EvalError(
            f"scorer {scorer!r} ranks by the ITM head, but this run never trained it ({_loss_desc(cfg)}); "
            "use --scorer dual" + ("" if embedding_trained(cfg) else " on a run trained with a contrastive loss")
        )
    if scorer == "dual" and not embedding_trained(cfg):
        raise EvalError(
            f"scorer 'dual' needs trained embeddings, but this run has none ({_loss_desc(cfg)}); "
            "use --scorer exhaustive, or train with loss.weights.itc=1 (or a contrastive all-U model)"
        )
    if scorer == "dual" and shortlist_cfg is not None:
        raise EvalError("--shortlist is for --scorer rerank; the dual scorer uses the run's own embeddings")
    if scorer == "rerank":
        if shortlist_cfg is not None and not embedding_trained(shortlist_cfg):
            raise EvalError(
                f"the --shortlist run has no trained embeddings ({_loss_desc(shortlist_cfg)}); "
                "give a dual-encoder run such as preset baseline"
            )
        if shortlist_cfg is None and not embedding_trained(cfg):
            raise EvalError(
                f"rerank needs shortlist embeddings, but this run has none ({_loss_desc(cfg)}); pass "
                "--shortlist RUN2 (a dual-encoder run, e.g. preset baseline) or train with loss.weights.itc=1"
            )


# ------------------------------------------------------------------------------------------- batches
def _text_batches(captions: list[str], encodings: list, tokenizer, batch_size: int, max_text_len: int):
    """A callable yielding (indices, text_ids, text_mask), captions sorted by token length (little padding)."""
    from ..data.collate import collate_texts

    lengths = torch.tensor([len(e.ids) for e in encodings])
    order = torch.argsort(lengths, descending=True, stable=True)

    def batches():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            b = collate_texts(tokenizer, [captions[i] for i in idx.tolist()], max_text_len)
            yield idx, b["text_ids"], b["text_mask"]

    return batches


def _model_text(ids: list[int], max_text_len: int) -> tuple[int, ...]:
    """The word pieces the model reads of a caption (cut as :func:`~mmtlab.data.collate.collate_texts` cuts)."""
    return tuple(ids) if len(ids) <= max_text_len else tuple(ids[: max_text_len - 1])


def _image_batches(store, batch_size: int, max_regions: int, pixels: bool):
    from ..data.collate import collate_images

    def batches():
        for s in range(0, store.n_images, batch_size):
            idx = torch.arange(s, min(s + batch_size, store.n_images))
            b = collate_images(store, idx.tolist(), max_regions, with_pixels=pixels)
            yield idx, {k: v for k, v in b.items() if k != "img_cls"}

    return batches


def _progress_bar(total: int, enabled: bool):
    from ..progress import progress_bar

    return progress_bar(
        total=total, unit="pair", unit_scale=True, desc="scoring", disable=not enabled, dynamic_ncols=True
    )


def _dist() -> tuple[int, int, Any]:
    """(rank, world size, barrier) of the default process group, or (0, 1, None)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size(), torch.distributed.barrier
    return 0, 1, None


# ---------------------------------------------------------------------------------------------- scorers
@dataclass
class Split:
    """What every scorer reads: the model, the split's caption and image batches and its size, and the options."""

    model: Any
    texts: Any  # :data:`~mmtlab.eval.scorers.TextBatches`
    images: Any  # :data:`~mmtlab.eval.scorers.ImageBatches`
    nc: int
    ni: int
    caption_image: torch.Tensor  # (nc,)
    batch_size: int
    k: int
    shortlist_model: Any
    embed_layers: int | None
    chunk_size: int
    work_dir: Path | None
    work_meta: dict  # what must match to reuse saved chunks
    bar: bool  # show a progress bar (rank 0 only)


@dataclass
class Scored:
    """A scorer's metrics, what it adds to the results (``score``, ``k``, ...), its notes, and the pairs it sent
    through the cross-encoder (``pairs``, all ranks) and scored here (``scored``, for the pairs/s rate)."""

    metrics: dict
    info: dict
    notes: list[str] = field(default_factory=list)
    pairs: int = 0
    scored: int = 0


def score_exhaustive(split: Split) -> Scored:
    """Every pair through the ITM head, score chunks kept in ``work_dir``; captions split over ``torchrun`` ranks."""
    model, nc, ni = split.model, split.nc, split.ni
    rank, world, barrier = _dist()
    t, v = encode_texts(model, split.texts, nc), encode_images(model, split.images, ni)
    with _progress_bar(nc * ni, split.bar) as bar:
        scores, scored = exhaustive_scores(
            model, t, v, split.batch_size, chunk_size=split.chunk_size, work_dir=split.work_dir,
            meta=split.work_meta, rank=rank, world_size=world, progress=bar, barrier=barrier,
        )  # fmt: skip
    pairs, notes = nc * ni, []
    if world == 1 and scored < pairs:
        notes.append(f"resumed: {pairs - scored} of {pairs} pairs read from {split.work_dir}")
    if world > 1:
        notes.append(f"captions split over {world} ranks (pairs/s estimated from rank 0)")
        scored *= world
    metrics = retrieval_metrics(scores, split.caption_image)
    return Scored(metrics, {"score": "ITM match log-odds, every pair"}, notes, pairs, scored)


def _similarity(split: Split) -> tuple[torch.Tensor, dict]:
    """The (nc, ni) embedding cosine and what made it (the ``embedding`` / ``shortlist`` results entry)."""
    emb_model = split.shortlist_model if split.shortlist_model is not None else split.model
    emb_model.eval()
    n_layers = None if split.shortlist_model is not None else split.embed_layers
    if not emb_model.config.is_dual and n_layers is None:
        n_layers = emb_model.config.layers
    text_vec, img_vec = embeddings(emb_model, split.texts, split.images, split.nc, split.ni, n_layers=n_layers)
    embedding = {
        "source": "shortlist run" if split.shortlist_model is not None else "this run",
        "schedule": emb_model.config.schedule,
        "layers": n_layers if n_layers is not None else emb_model.config.layers,
        "what": "cosine of proj.embed_text([CLS]) and proj.embed_image(global token)"
        + ("" if emb_model.config.is_dual else " on the unimodal view (layers run as U)"),
    }
    return dual_scores(text_vec, img_vec), embedding  # (nc, ni)


def score_dual(split: Split) -> Scored:
    """Embedding cosine only."""
    sim, embedding = _similarity(split)
    return Scored(retrieval_metrics(sim, split.caption_image), {"score": "embedding cosine", "embedding": embedding})


def score_rerank(split: Split) -> Scored:
    """A shortlist of ``k`` per query by embedding cosine, then the ITM head on it."""
    sim, embedding = _similarity(split)
    model, nc, ni, k = split.model, split.nc, split.ni, split.k
    t, v = encode_texts(model, split.texts, nc), encode_images(model, split.images, ni)
    with _progress_bar(nc * min(k, ni) + ni * min(k, nc), split.bar) as bar:
        rr = rerank_scores(model, t, v, sim, k, split.batch_size, progress=bar)
    m_t2i = retrieval_metrics(rr.text_to_image, split.caption_image)
    m_i2t = retrieval_metrics(rr.image_to_text, split.caption_image)
    metrics = {**m_t2i, "image_to_text": m_i2t["image_to_text"]}
    info = {"k": k, "shortlist": embedding, "score": f"ITM match log-odds of the top {k} by embedding cosine"}
    notes = [f"k={k} < 10: ranks beyond {k} come from the embedding similarity alone"] if k < 10 else []
    return Scored(metrics, info, notes, rr.pairs_scored, rr.pairs_scored)


SCORE_SPLIT = {"exhaustive": score_exhaustive, "rerank": score_rerank, "dual": score_dual}  # keys: SCORERS


# ---------------------------------------------------------------------------------------------- evaluate
@torch.inference_mode()
def evaluate_retrieval(
    model,
    store,
    scorer: str = "exhaustive",
    k: int = 128,
    *,
    shortlist_model=None,
    embed_layers: int | None = None,
    tokenizer=None,
    batch_size: int | None = None,
    encode_batch_size: int = 256,
    chunk_size: int = 256,
    max_text_len: int = 40,
    max_regions: int = 36,
    work_dir: str | Path | None = None,
    work_meta: dict | None = None,
    protocol: str = "zero-shot",
    progress: bool = True,
) -> dict:
    """Retrieval results (docs/design.md, "Results files") of ``model`` on ``store`` (a split view).

    ``scorer``: ``exhaustive`` (every pair, ITM match log-odds), ``rerank`` (shortlist of ``k`` by embedding
    cosine, then the ITM head) or ``dual`` (embedding cosine): one function each in :data:`SCORE_SPLIT`.
    Embeddings come from ``shortlist_model`` when given (a dual encoder), else from ``model``'s projection head on
    its unimodal view with ``embed_layers`` layers (default: all). ``batch_size`` is pairs per forward (default
    4096 on CUDA, 512 on CPU). ``work_dir`` keeps exhaustive score chunks so an interrupted run resumes; they are
    reused only for the same weights (a fingerprint), split size and input limits, plus whatever ``work_meta``
    adds. Under ``torchrun`` (an initialised process group) the exhaustive scorer splits the captions over ranks.
    This function does not check that the model's heads were trained: see :func:`check_scorer`.
    """
    if scorer not in SCORERS:
        raise EvalError(f"unknown scorer {scorer!r}; valid: {', '.join(SCORERS)}")
    if protocol not in PROTOCOLS:
        raise EvalError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    nc, ni = len(store), store.n_images
    if nc == 0 or ni == 0:
        raise EvalError(f"empty split: {nc} captions, {ni} images in {store!r}")
    if tokenizer is None:
        from ..data.tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
    model.eval()
    device = model_device(model)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults per batch of pairs
    captions = list(store.captions)
    encodings = tokenizer.encode_batch(captions)
    caps = recall_caps([_model_text(e.ids, max_text_len) for e in encodings], store.caption_image)
    split = Split(
        model=model, texts=_text_batches(captions, encodings, tokenizer, encode_batch_size, max_text_len),
        images=_image_batches(store, encode_batch_size, max_regions, model.config.image_input == "pixels"),
        nc=nc, ni=ni, caption_image=torch.as_tensor(store.caption_image),
        batch_size=batch_size or (4096 if device.type == "cuda" else 512), k=k, shortlist_model=shortlist_model,
        embed_layers=embed_layers, chunk_size=chunk_size, work_dir=Path(work_dir) if work_dir else None,
        work_meta={**(work_meta or {}), "weights": fingerprint(model), "max_text_len": max_text_len,
                   "max_regions": max_regions, "device_type": device.type} if scorer == "exhaustive" else {},
        bar=progress and _dist()[0] == 0,
    )  # fmt: skip

    start = time.perf_counter()
    scored = SCORE_SPLIT[scorer](split)
    seconds = time.perf_counter() - start
    metrics = dict(scored.metrics)
    notes = metrics.pop("notes") + scored.notes
    if caps["captions_sharing_text"]:
        notes.append(
            f"{caps['captions_sharing_text']} captions share their text with a caption of another image: R@1 can be at "
            f"most {caps['text_to_image']:.2f} (text->image) and {caps['image_to_text']:.2f} (image->text) "
            "under the pessimistic tie rule (r1_cap)"
        )
    return {
        "protocol": protocol,
        "scorer": scorer,
        **scored.info,
        "n_images": metrics.pop("n_images"),
        "n_captions": metrics.pop("n_captions"),
        **metrics,
        "r1_cap": caps,
        "seconds": round(seconds, 3),
        "pairs_scored": scored.pairs,
        "pairs_total": nc * ni,
        "pairs_per_second": round(scored.scored / seconds, 1) if scored.scored else None,
        "device": str(device),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------------- a run
RESULTS_KEYS = ("protocol", "scorer", "text_to_image", "image_to_text")  # what marks an mmtlab results file


def check_results_path(out: str | Path) -> Path:
    """Refuse, before any work, an ``--out`` that is a directory or an existing file other than an mmtlab
    results file (a run's ``config.yaml`` or weights are never overwritten), and an ``OUT.scores`` that holds
    anything but score chunks (``--fresh`` deletes it)."""
    out = Path(out)
    if out.is_dir():
        raise EvalError(f"--out {out}: is a directory; give a results file, e.g. --out {out / 'results.json'}")
    if out.exists() and not _is_results_file(out):
        raise EvalError(
            f"--out {out}: exists and is not an mmtlab results file, so it is not overwritten; give another --out"
        )
    scores = Path(str(out) + ".scores")
    if scores.exists() and not (scores.is_dir() and all(_is_chunk_file(p) for p in scores.iterdir())):
        raise EvalError(f"--out {out}: {scores} exists and does not hold score chunks; give another --out or move it")
    return out


def _is_results_file(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size > 1 << 20:  # results files are a few KB
        return False
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and all(k in data for k in RESULTS_KEYS)


def _is_chunk_file(path: Path) -> bool:
    return path.is_file() and (path.name in ("meta.json", "meta.json.tmp") or path.name.startswith("chunk_"))


def pick_split(store, split: str | None) -> str:
    """The split to evaluate: ``split`` when given, else the store's only split, else ``test``."""
    if split is not None:
        return split
    names = store.meta["split_names"]
    return names[0] if len(names) == 1 else "test"


def check_store_fits(model, store, name: str) -> None:
    """Raise :class:`EvalError` naming the store and the fix when ``model`` (run ``name``) cannot read it."""
    from ..data.store import no_pixels_error

    m = model.config
    if m.image_input == "regions" and m.feat_dim != store.meta["feat_dim"]:
        raise EvalError(
            f"{store.path}: region features of width {store.meta['feat_dim']}, but run {name} has "
            f"model.feat_dim={m.feat_dim}; evaluate it on a store of {m.feat_dim}-d features"
        )
    if m.image_input == "pixels" and not store.has_pixels:
        raise EvalError(f"run {name}: {no_pixels_error(store.path)}")
    if m.image_input == "pixels" and tuple(store.meta["pixels_shape"][1:]) != (m.image_size, m.image_size):
        raise EvalError(
            f"{store.path}: pixels of {store.meta['pixels_shape'][1]}x{store.meta['pixels_shape'][2]}, but run "
            f"{name} reads {m.image_size}x{m.image_size} (model.image_size); write the store with "
            f"`--pixels {m.image_size}`"
        )


def regions_read(store, max_regions: int) -> dict:
    """How many regions per image the evaluation reads of ``store`` (a split view): ``max_regions`` (the run's
    ``data.max_regions``), ``most_in_store`` (the most regions of one of its images) and ``images_cut`` (images
    with more regions than are read; the collator keeps the first ``max_regions``)."""
    counts = store.region_counts()
    return {
        "max_regions": max_regions,
        "most_in_store": int(counts.max()) if len(counts) else 0,
        "images_cut": int((counts > max_regions).sum()),
    }


def regions_warning(regions: dict, data, run, n_images: int) -> str | None:
    """One line when the run reads fewer regions per image than the store has, with the fix; else None."""
    kept, most, cut = regions["max_regions"], regions["most_in_store"], regions["images_cut"]
    if not cut:
        return None
    fix = (
        f"a model trained on pooled stores reads one region: evaluate it on `mmtlab data pool {data} --out DIR`"
        if kept == 1
        else f"to read them all, train with data.max_regions={most}"
    )
    return (
        f"warning: {data} has up to {most} regions per image ({cut} of {n_images} images have more than {kept}), "
        f"but run {run} reads only the first {kept} (data.max_regions={kept}); {fix}"
    )


def evaluate_run(
    run: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    split: str | None = None,
    scorer: str | None = None,
    k: int = 128,
    shortlist: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    progress: bool = True,
    compile: bool = False,
    max_images: int | None = None,
    seed: int = 0,
) -> dict:
    """``mmtlab eval retrieval``: evaluate the finished run ``run`` on split ``split`` of store ``data``
    (default: :func:`pick_split`); ``max_images``: on a subsample of that many of its images drawn with
    ``seed``, with all their captions (recorded as ``subsample`` in the results).

    ``scorer`` None: :func:`default_scorer`. Checks that the run can honestly use it (:func:`check_scorer`),
    writes the results JSON to ``out`` (rank 0) with the run, preset, data and split added, and keeps the
    exhaustive score chunks in ``OUT.scores/`` (an interrupted evaluation resumes from them); ``out`` is checked
    first (:func:`check_results_path`). ``compile``: the
    per-pair layers (:meth:`match_logits`) run through :func:`~mmtlab.model.compile.compile_fn` with frozen
    weights (all-``U`` models have none: ignored).
    Returns the results.
    """
    from ..data.store import open_store
    from ..device import init_distributed, pick_device
    from ..run.load import finetune_info, load_run

    run = Path(run)
    if out is not None:
        check_results_path(out)
    if max_images is not None and max_images < 1:
        raise EvalError(f"--max-images {max_images}: must be >= 1")
    d = init_distributed("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        dev = pick_device(device, d.local_rank)
        model, cfg = load_run(run, map_location=dev)
        tuned = finetune_info(run)
        short_model = short_cfg = None
        if shortlist is not None:
            short_model, short_cfg = load_run(shortlist, map_location=dev)
        scorer = scorer or default_scorer(cfg, finetuned=tuned is not None)
        check_scorer(cfg, scorer, short_cfg, finetuned=tuned is not None)
        compile = compile and not model.config.is_dual  # an all-U model runs no layer per pair
        if compile:  # an instance attribute: every scorer calls model.match_logits
            model.match_logits = compile_fn(model.match_logits, dynamic=True, freeze=True)
        whole = open_store(data)
        given_split, split = split, pick_split(whole, split)
        store = whole.split(split)
        for m, name in ((model, str(run)), (short_model, str(shortlist))):
            if m is not None:
                check_store_fits(m, store, name)
        work_dir = Path(str(out) + ".scores") if out is not None and scorer == "exhaustive" else None
        work_meta = {"run": str(run.resolve()), "data": str(Path(data).resolve()), "split": split}
        subsample = None
        if max_images is not None:
            full = store
            store = store.sample_images(max_images, seed)
            subsample = {
                "max_images": max_images,
                "seed": seed,
                "images": store.n_images,
                "captions": len(store),
                "split_images": full.n_images,
                "split_captions": len(full),
            }
            work_meta.update(max_images=max_images, sample_seed=seed)  # other images: other score chunks
        regions = regions_read(store, cfg.data.max_regions) if model.config.image_input == "regions" else None
        warning = regions and regions_warning(regions, data, run, store.n_images)
        if warning and d.rank == 0:
            print(warning, file=sys.stderr, flush=True)
        result = evaluate_retrieval(
            model, store, scorer, k, shortlist_model=short_model, batch_size=batch_size,
            max_text_len=cfg.data.max_text_len, max_regions=cfg.data.max_regions, work_dir=work_dir,
            work_meta=work_meta, protocol="fine-tuned" if tuned else "zero-shot", progress=progress,
        )  # fmt: skip
    finally:
        if d.owned:
            torch.distributed.destroy_process_group()
    header = {
        "run": str(run),
        "preset": cfg.preset,
        "scale": cfg.scale,
        "schedule": cfg.model.schedule,
        "loss": cfg.loss.name,
        "data": str(data),
        "split": split,
        "subsample": subsample,
        "regions": regions,
    }
    if given_split is None and split != "test":
        result["notes"].append(f"split {split!r}: the store's only split (no --split given)")
    if subsample is not None and subsample["images"] < subsample["split_images"]:
        result["notes"].append(
            f"a seeded subsample: {subsample['images']} of the split's {subsample['split_images']} images (seed "
            f"{seed}) with their {subsample['captions']} captions; fewer distractors than the whole split, so R@K is "
            "higher than on all of it"
        )
    if shortlist is not None:
        header["shortlist_run"] = str(shortlist)
    if tuned:
        header["finetuned_from"] = tuned["from_run"]
    if compile:
        result["notes"].append("per-pair layers compiled (torch.compile, Inductor freezing)")
    if any(Path(p).resolve() == Path(data).resolve() for p in cfg.data_dirs):
        result["notes"].append(f"{data} is one of this run's training stores: the evaluated split may have been seen")
    result = {**{k: result[k] for k in ("protocol", "scorer")}, **header, **result}
    if out is not None and d.rank == 0:
        write_json(result, Path(out))
    return result


def results_table(result: dict) -> str:
    """The results as a small plain-text table (what ``mmtlab eval retrieval`` prints)."""
    cols = ("R@1", "R@5", "R@10", "median_rank", "mean_rank")
    lines = [f"{'direction':<14}" + "".join(f"{c:>12}" for c in cols)]
    for key, name in (("text_to_image", "text->image"), ("image_to_text", "image->text")):
        lines.append(f"{name:<14}" + "".join(f"{result[key][c]:>12.2f}" for c in cols))
    pairs = f"{result['pairs_scored']:,} of {result['pairs_total']:,} pairs cross-encoded"
    rate = f", {result['pairs_per_second']:,.0f} pairs/s" if result.get("pairs_per_second") else ""
    lines.append(
        f"{result['protocol']}, scorer {result['scorer']}: {result['n_captions']} captions x "
        f"{result['n_images']} images, {pairs}, {result['seconds']:.1f} s{rate}"
    )
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


__all__ = [
    "SCORERS",
    "evaluate_retrieval",
    "evaluate_run",
    "check_results_path",
    "check_scorer",
    "check_store_fits",
    "default_scorer",
    "itm_trained",
    "embedding_trained",
    "pick_split",
    "results_table",
]
