"""Scorers: a model's (n_captions, n_images) score matrix, three ways (docs/design.md, "Evaluation").

* :func:`exhaustive_scores` - every pair through the cross-encoder's ITM head. The unimodal prefix (embeddings
  and leading ``U`` layers) is computed once per caption and once per image (:func:`encode_texts`,
  :func:`encode_images`); only the remaining layers run per pair. For all-``U`` models nothing but the ITM
  head is left, and it reduces to one matrix product. Chunks of rows are written to a work directory so an
  interrupted run resumes, and ``torchrun`` ranks split the chunks.
* :func:`rerank_scores` - shortlist by pooled-embedding similarity, cross-encode the top ``k`` per query.
* :func:`dual_scores` - embedding similarity only.

A pair's score is the log-odds of the ITM match probability, ``logit[1] - logit[0]``: the same ranking as the
probability, without the ties that a saturated sigmoid would create.

The functions here take tensors and callables returning batches; :mod:`mmtlab.eval.retrieval` wires them
to a store.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..device import autocast
from ..files import write_atomic
from .metrics import EvalError

# (caption indices (B,), text_ids (B, T), text_mask (B, T))
TextBatches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]
# (image indices (B,), image batch dict of the batch contract)
ImageBatches = Callable[[], Iterable[tuple[torch.Tensor, dict]]]
Progress = Callable[[int], None]


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the weights (every 997th value of each tensor, exact bytes): the same on any device."""
    h = hashlib.sha1()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().flatten()[::997].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _extent(mask: torch.Tensor) -> torch.Tensor:
    """(N,) index after the last real position of each row (right padding can be cut there)."""
    n = mask.shape[1]
    last = n - mask.flip(1).long().argmax(1)
    return torch.where(mask.any(1), last, torch.zeros_like(last))


@dataclass
class Encoded:
    """One modality's unimodal states for every item: ``states`` (N, L, D), ``mask`` (N, L), ``extent`` (N,)."""

    states: torch.Tensor
    mask: torch.Tensor
    extent: torch.Tensor

    def __len__(self) -> int:
        return self.states.shape[0]

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States and mask of items ``idx``, cut to their longest real extent."""
        n = int(self.extent[idx].max())
        return self.states[idx, :n], self.mask[idx, :n]


def _assemble(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], n: int, dtype: torch.dtype) -> Encoded:
    """Scatter per-batch (indices, states, mask) into one padded :class:`Encoded` of ``n`` items."""
    if not parts:
        raise EvalError("nothing to encode: the split is empty")
    width = max(s.shape[1] for _, s, _ in parts)
    ref = parts[0][1]
    states = torch.zeros(n, width, ref.shape[2], dtype=dtype, device=ref.device)
    mask = torch.zeros(n, width, dtype=torch.bool, device=ref.device)
    seen = torch.zeros(n, dtype=torch.bool, device=ref.device)
    for idx, s, m in parts:
        idx = idx.to(ref.device)
        states[idx, : s.shape[1]] = s.to(dtype)
        mask[idx, : m.shape[1]] = m
        seen[idx] = True
    if not bool(seen.all()):
        raise EvalError(f"{int((~seen).sum())} of {n} items were never encoded (the batches do not cover the split)")
    return Encoded(states, mask, _extent(mask))


def _cache_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _on(x: torch.Tensor | dict, device: torch.device) -> torch.Tensor | dict:
    """A tensor, or the tensors of a batch dict, on ``device``."""
    if isinstance(x, dict):
        return {k: v.to(device) for k, v in x.items() if isinstance(v, torch.Tensor)}
    return x.to(device)


def _encode_all(model, batches: TextBatches | ImageBatches, n: int, encode: Callable, dtype=None) -> Encoded:
    """``encode(*inputs) -> (states (B, L, D), mask (B, L))`` of every batch ``(indices, *inputs)`` under autocast,
    gathered into one :class:`Encoded` of ``n`` items (``dtype`` default: :func:`_cache_dtype`)."""
    device = model_device(model)
    parts = []
    with autocast(device):
        for idx, *inputs in batches():
            states, mask = encode(*(_on(x, device) for x in inputs))
            parts.append((idx, states, mask))
    return _assemble(parts, n, dtype or _cache_dtype(device))


@torch.inference_mode()
def encode_texts(model, batches: TextBatches, n: int, n_layers: int | None = None, first_only: bool = False) -> Encoded:
    """Captions through the embeddings and the unimodal prefix (or ``n_layers`` layers as ``U``); with
    ``first_only`` only the ``[CLS]`` state (the last layer computes it alone)."""

    def encode(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = model.encode_text(ids, mask, n_layers=n_layers, first_only=first_only)  # (B, T or 1, D)
        return t, mask[:, : t.shape[1]]

    return _encode_all(model, batches, n, encode)


@torch.inference_mode()
def encode_images(
    model, batches: ImageBatches, n: int, n_layers: int | None = None, first_only: bool = False
) -> Encoded:
    """Images through the embeddings and the unimodal prefix (or ``n_layers`` layers as ``U``); with
    ``first_only`` only the global token's state."""

    def encode(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        v, mask = model.encode_image(batch, n_layers=n_layers, first_only=first_only)  # (B, R or 1, D), (B, R)
        return v, mask[:, : v.shape[1]]

    return _encode_all(model, batches, n, encode)


@torch.inference_mode()
def embeddings(
    model, texts: TextBatches, images: ImageBatches, n_captions: int, n_images: int, n_layers: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unimodal embeddings of every caption and image, (n_captions, P), (n_images, P) float32
    (:meth:`~mmtlab.model.MultimodalTransformer.text_vector` / ``image_vector`` with ``n_layers`` layers, default
    all; exact for all-``U`` models)."""

    def as_states(vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return vec[:, None], torch.ones(vec.shape[0], 1, dtype=torch.bool, device=vec.device)  # (B, 1, P), (B, 1)

    def text(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return as_states(model.text_vector(ids, mask, n_layers))

    def image(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return as_states(model.image_vector(batch, n_layers))

    t = _encode_all(model, texts, n_captions, text, torch.float32)  # (Nc, 1, P)
    v = _encode_all(model, images, n_images, image, torch.float32)
    return t.states[:, 0], v.states[:, 0]


def dual_scores(text_vec: torch.Tensor, img_vec: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of L2-normalised unimodal embeddings (:func:`embeddings`): (Nc, P) x (Ni, P) -> (Nc, Ni)."""
    return text_vec.float() @ img_vec.float().T


@torch.inference_mode()
def score_pairs(
    model,
    texts: Encoded,
    images: Encoded,
    cap_idx: torch.Tensor,
    img_idx: torch.Tensor,
    batch_size: int,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Match log-odds (P,) of the pairs ``(cap_idx[p], img_idx[p])``, ``batch_size`` pairs per forward.
    Order pairs by caption length for little padding."""
    device = model_device(model)
    out = torch.empty(len(cap_idx), dtype=torch.float32)
    with autocast(device):
        for s in range(0, len(cap_idx), batch_size):
            ci, ii = cap_idx[s : s + batch_size].to(device), img_idx[s : s + batch_size].to(device)
            t, tm = texts.take(ci)  # (B, T, D), (B, T)
            v, vm = images.take(ii)  # (B, R, D), (B, R)
            out[s : s + len(ci)] = model.match_score(t, tm, v, vm).cpu()  # (B,)
            if progress:
                progress(len(ci))
    return out


def length_order(texts: Encoded) -> torch.Tensor:
    """Caption indices sorted by length (longest first), so a batch of pairs shares a length."""
    return torch.argsort(texts.extent.cpu(), descending=True, stable=True)


# ------------------------------------------------------------------------------------------- exhaustive
def rank_chunks(n_chunks: int, rank: int, world_size: int) -> list[int]:
    """The chunks rank ``rank`` of ``world_size`` scores: every ``world_size``-th, from ``rank``."""
    if not 0 <= rank < world_size:
        raise EvalError(f"rank {rank} outside 0..{world_size - 1}")
    return list(range(rank, n_chunks, world_size))


class ChunkDir:
    """Score chunks under a work directory: ``meta.json`` (what is being scored) and ``chunk_{j}.pt``
    (``{"captions": (n,), "scores": (n, Ni)}``), each written atomically."""

    def __init__(self, path: Path, meta: dict):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        meta_file = self.path / "meta.json"
        if meta_file.exists():
            old = json.loads(meta_file.read_text())
            if old != meta:
                diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
                raise EvalError(
                    f"{self.path} holds scores of a different evaluation (differs in {', '.join(diff)}); "
                    "delete it or write the results elsewhere"
                )
        else:
            write_atomic(meta_file, lambda f: f.write(json.dumps(meta, indent=1).encode()))

    def file(self, j: int) -> Path:
        return self.path / f"chunk_{j:06d}.pt"

    def has(self, j: int) -> bool:
        return self.file(j).exists()

    def save(self, j: int, captions: torch.Tensor, scores: torch.Tensor) -> None:
        write_atomic(self.file(j), lambda f: torch.save({"captions": captions, "scores": scores}, f))

    def load(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk ``j``; a damaged chunk (a truncated file, not written by mmtlab) is an EvalError naming it."""
        path = self.file(j)
        try:
            d = torch.load(path, weights_only=True)
            return d["captions"], d["scores"]
        except (RuntimeError, EOFError, OSError, KeyError, TypeError, pickle.UnpicklingError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise EvalError(f"{path}: damaged score chunk ({why}); rerun with --fresh to score again") from None


@torch.inference_mode()
def exhaustive_scores(
    model,
    texts: Encoded,
    images: Encoded,
    batch_size: int,
    chunk_size: int = 256,
    work_dir: Path | None = None,
    meta: dict | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress=None,
    barrier: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """The full (Nc, Ni) match log-odds matrix (float32, CPU) and the number of pairs this call scored.

    Captions, sorted by length, are cut into chunks of ``chunk_size``; rank ``r`` scores chunks
    :func:`rank_chunks`. With ``work_dir`` each finished chunk is saved and a rerun skips it (``meta`` identifies
    the evaluation; a work dir holding another one is an error). With several ranks ``work_dir`` is required
    (a shared filesystem), ``barrier`` is called once all chunks of this rank are written, and every rank
    then assembles the matrix. ``progress`` is a tqdm-like bar: ``reset(total=pairs to score)``, ``update(n)``.
    """
    nc, ni = len(texts), len(images)
    order = length_order(texts)
    n_chunks = -(-nc // chunk_size)
    if world_size > 1 and work_dir is None:
        raise EvalError("scoring on several ranks needs a work directory shared by all ranks")
    chunks = None
    if work_dir is not None:
        chunks = ChunkDir(work_dir, {**(meta or {}), "n_captions": nc, "n_images": ni, "chunk_size": chunk_size})
    dual = model.config.is_dual
    scores = torch.empty(nc, ni, dtype=torch.float32)
    device = model_device(model)
    todo = [j for j in rank_chunks(n_chunks, rank, world_size) if not (chunks and chunks.has(j))]
    chunk_captions = [order[j * chunk_size : (j + 1) * chunk_size] for j in range(n_chunks)]
    n_scored = sum(len(chunk_captions[j]) for j in todo) * ni
    if progress is not None:
        progress.reset(total=n_scored)
    update = progress.update if progress is not None else None
    for j in todo:
        caps = chunk_captions[j]
        if dual:  # nothing left per pair but the ITM head: one matrix product per chunk
            with autocast(device):
                t_cls = texts.states[caps.to(device), 0]  # (n, D)
                block = model.itm[-1].match_score_matrix(t_cls, images.states[:, 0]).float().cpu()  # (n, Ni)
            if update:
                update(len(caps) * ni)
        else:
            cap_idx = caps.repeat_interleave(ni)  # caption-major: neighbouring pairs share a length
            img_idx = torch.arange(ni).repeat(len(caps))
            block = score_pairs(model, texts, images, cap_idx, img_idx, batch_size, update).view(len(caps), ni)
        if chunks:
            chunks.save(j, caps, block)
        else:
            scores[caps] = block
    if chunks is None:
        return scores, n_scored
    if barrier:
        barrier()
    missing = [j for j in range(n_chunks) if not chunks.has(j)]
    if missing:
        raise EvalError(f"{len(missing)} score chunk(s) missing in {chunks.path} after scoring (first: {missing[0]})")
    for j in range(n_chunks):
        caps, block = chunks.load(j)
        scores[caps] = block
    return scores, n_scored


# ----------------------------------------------------------------------------------------------- rerank
@dataclass
class Reranked:
    """Rerank results: one score matrix per direction (the shortlists differ) and the pairs cross-encoded."""

    text_to_image: torch.Tensor  # (Nc, Ni): per caption, its shortlist above the rest
    image_to_text: torch.Tensor  # (Nc, Ni): per image (column), its shortlist above the rest
    pairs_scored: int


def shortlists(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (Nc, Ni) masks: each caption's top-``k`` images, each image's top-``k`` captions by ``sim``."""
    nc, ni = sim.shape
    t2i = torch.zeros_like(sim, dtype=torch.bool).scatter_(1, sim.topk(min(k, ni), dim=1).indices, True)
    i2t = torch.zeros_like(sim, dtype=torch.bool).scatter_(0, sim.topk(min(k, nc), dim=0).indices, True)
    return t2i, i2t


@torch.inference_mode()
def rerank_scores(
    model, texts: Encoded, images: Encoded, sim: torch.Tensor, k: int, batch_size: int, progress=None
) -> Reranked:
    """Cross-encode each caption's top-``k`` images and each image's top-``k`` captions by ``sim`` (Nc, Ni).

    In each direction the shortlisted items rank by their match log-odds above all other items, which keep
    their ``sim`` order (so ranks past ``k`` stay meaningful). Pairs in both shortlists are scored once.
    ``progress``: a tqdm-like bar (``reset(total=)``, ``update(n)``).
    """
    if k < 1:
        raise EvalError(f"rerank needs k >= 1, got {k}")
    sim = sim.float().cpu()
    t2i_sel, i2t_sel = shortlists(sim, k)
    cap_idx, img_idx = (t2i_sel | i2t_sel).nonzero(as_tuple=True)
    position_of = torch.empty(len(texts), dtype=torch.long)
    position_of[length_order(texts)] = torch.arange(len(texts))
    by_length = torch.argsort(position_of[cap_idx], stable=True)  # pairs in caption-length order
    cap_idx, img_idx = cap_idx[by_length], img_idx[by_length]
    if progress is not None:
        progress.reset(total=len(cap_idx))
    ce = score_pairs(
        model, texts, images, cap_idx, img_idx, batch_size, progress.update if progress is not None else None
    )
    cross = torch.full_like(sim, float("nan"))
    cross[cap_idx, img_idx] = ce
    lift = float(sim.max() - ce.min()) + 1.0  # puts every cross-encoded score above every similarity
    return Reranked(
        text_to_image=torch.where(t2i_sel, cross + lift, sim),
        image_to_text=torch.where(i2t_sel, cross + lift, sim),
        pairs_scored=len(ce),
    )


__all__ = [
    "Encoded",
    "encode_texts",
    "encode_images",
    "embeddings",
    "dual_scores",
    "score_pairs",
    "exhaustive_scores",
    "rank_chunks",
    "ChunkDir",
    "shortlists",
    "rerank_scores",
    "Reranked",
    "length_order",
]
