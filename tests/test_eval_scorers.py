"""Scorers on tiny random models and hand-made tensors: the unimodal cache is exact, rerank and dual agree
with what they should, the exhaustive matrix resumes from its chunks and splits over ranks."""

import pytest
import torch

import mmtlab
from mmtlab.eval import retrieval_metrics
from mmtlab.eval.metrics import EvalError
from mmtlab.eval.scorers import (
    dual_scores,
    embeddings,
    encode_images,
    encode_texts,
    exhaustive_scores,
    rank_chunks,
    rerank_scores,
    shortlists,
)

F, NC, NI = 16, 7, 5


def tiny(preset, **kw):
    torch.manual_seed(0)
    return mmtlab.build_model(preset, scale="tiny", feat_dim=F, vocab_size=100, **kw).eval()


def _inputs():
    """7 captions of 3..9 pieces, 5 images of 2..6 regions (right-padded)."""
    g = torch.Generator().manual_seed(1)
    text_mask = torch.arange(9)[None] < torch.tensor([3, 9, 5, 9, 4, 7, 6])[:, None]
    img_mask = torch.arange(6)[None] < torch.tensor([4, 6, 2, 6, 3])[:, None]
    return {
        "text_ids": torch.randint(5, 100, (NC, 9), generator=g) * text_mask,
        "text_mask": text_mask,
        "img_feats": torch.randn(NI, 6, F, generator=g) * img_mask[..., None],
        "img_boxes": torch.rand(NI, 6, 5, generator=g),
        "img_mask": img_mask,
    }


@pytest.fixture(scope="module")
def data():
    return _inputs()


def text_batches(d, bs=3):
    def gen():
        for s in range(0, NC, bs):
            idx = torch.arange(s, min(s + bs, NC))
            yield idx, d["text_ids"][idx], d["text_mask"][idx]

    return gen


def image_batches(d, bs=2):
    def gen():
        for s in range(0, NI, bs):
            idx = torch.arange(s, min(s + bs, NI))
            yield idx, {k: d[k][idx] for k in ("img_feats", "img_boxes", "img_mask")}

    return gen


@torch.no_grad()
def full_forward_scores(model, d):
    """Reference: every pair through model(batch), no cache, no trimming."""
    ci = torch.arange(NC).repeat_interleave(NI)
    ii = torch.arange(NI).repeat(NC)
    batch = {
        "text_ids": d["text_ids"][ci],
        "text_mask": d["text_mask"][ci],
        "img_feats": d["img_feats"][ii],
        "img_boxes": d["img_boxes"][ii],
        "img_mask": d["img_mask"][ii],
    }
    logits = model(batch)["itm_logits"]
    return (logits[:, 1] - logits[:, 0]).view(NC, NI)


def cached(model, d, n_layers=None):
    return encode_texts(model, text_batches(d), NC, n_layers), encode_images(model, image_batches(d), NI, n_layers)


@pytest.mark.parametrize("preset", ["merged", "mixed-modality", "single-modality", "coattention"])
def test_exhaustive_with_cache_equals_full_forward(preset, data):
    model = tiny(preset)
    t, v = cached(model, data)
    scores, scored = exhaustive_scores(model, t, v, batch_size=8, chunk_size=3)
    assert scored == NC * NI
    torch.testing.assert_close(scores, full_forward_scores(model, data), atol=2e-5, rtol=1e-4)


def test_cache_holds_only_the_unimodal_prefix(data):
    model = tiny("mixed-modality")  # UUUUUM: 5 layers cached, 1 per pair
    t, _ = cached(model, data)
    ref = model.encode_text(data["text_ids"], data["text_mask"], n_layers=5)
    torch.testing.assert_close(t.states[:, :9][data["text_mask"]], ref[data["text_mask"]])
    assert t.extent.tolist() == [3, 9, 5, 9, 4, 7, 6]


def test_rerank_with_full_shortlists_equals_exhaustive(data):
    model = tiny("merged")
    t, v = cached(model, data)
    ex, _ = exhaustive_scores(model, t, v, batch_size=16)
    sim = torch.randn(NC, NI)
    rr = rerank_scores(model, t, v, sim, k=max(NC, NI), batch_size=16)
    assert rr.pairs_scored == NC * NI
    ci = torch.tensor([0, 0, 1, 2, 3, 4, 4])
    want = retrieval_metrics(ex, ci)
    assert retrieval_metrics(rr.text_to_image, ci)["text_to_image"] == want["text_to_image"]
    assert retrieval_metrics(rr.image_to_text, ci)["image_to_text"] == want["image_to_text"]


def test_rerank_k1_keeps_the_shortlist_order_and_scores_few_pairs(data):
    model = tiny("merged")
    t, v = cached(model, data)
    sim = torch.randn(NC, NI, generator=torch.Generator().manual_seed(3))
    rr = rerank_scores(model, t, v, sim, k=1, batch_size=16)
    t2i, i2t = shortlists(sim, 1)
    assert rr.pairs_scored == int((t2i | i2t).sum()) <= NC + NI
    # with k = 1 the cross-encoder cannot reorder anything: the top item is the embedding's top item
    assert torch.equal(rr.text_to_image.argmax(1), sim.argmax(1))
    assert torch.equal(rr.image_to_text.argmax(0), sim.argmax(0))
    # below the shortlist the similarity order is kept
    rest = ~t2i
    assert torch.equal(rr.text_to_image[rest], sim[rest])
    with pytest.raises(EvalError, match="k >= 1"):
        rerank_scores(model, t, v, sim, k=0, batch_size=16)


def test_shortlists_hand_computed():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
    t2i, i2t = shortlists(sim, 2)
    assert t2i.tolist() == [[True, False, True], [False, True, True]]
    assert i2t.tolist() == [[True, True, True], [True, True, True]]  # k capped at the 2 captions
    t2i, i2t = shortlists(sim, 1)
    assert i2t.tolist() == [[True, False, False], [False, True, True]]


def test_dual_embeddings_match_forward(data):
    model = tiny("baseline")  # all U: the embeddings of a full forward are those of the unimodal encoders
    te, ie = embeddings(model, text_batches(data), image_batches(data), NC, NI)
    with torch.no_grad():
        out = model(
            {k: data[k][:NI] for k in ("text_ids", "text_mask")}
            | {k: data[k] for k in ("img_feats", "img_boxes", "img_mask")}
        )
    torch.testing.assert_close(te[:NI], out["text_emb"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ie, out["img_emb"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dual_scores(te, ie)[2, 3], (out["text_emb"][2] * out["img_emb"][3]).sum())


def test_unimodal_view_embeddings_of_a_cross_encoder(data):
    """A cross-encoder's unimodal view (every layer run as U), computed for the first token only, equals the
    projection of the full unimodal pass."""
    model = tiny("merged")
    L = model.config.layers
    te, ie = embeddings(model, text_batches(data), image_batches(data), NC, NI, n_layers=L)
    with torch.no_grad():
        t = model.encode_text(data["text_ids"], data["text_mask"], n_layers=L)
        v, _ = model.encode_image({k: data[k] for k in ("img_feats", "img_boxes", "img_mask")}, n_layers=L)
    torch.testing.assert_close(te, model.proj.embed_text(t[:, 0]).detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ie, model.proj.embed_image(v[:, 0]).detach(), atol=1e-5, rtol=1e-4)


class Interrupt(Exception):
    pass


class Bar:
    """A tqdm stand-in that counts pairs and can interrupt after ``stop_after`` pairs."""

    def __init__(self, stop_after=None):
        self.n, self.total, self.stop_after = 0, None, stop_after

    def reset(self, total):
        self.total = total

    def update(self, n):
        self.n += n
        if self.stop_after is not None and self.n >= self.stop_after:
            raise Interrupt


def test_interrupted_exhaustive_resumes(tmp_path, data):
    model = tiny("mixed-modality")
    t, v = cached(model, data)
    want, _ = exhaustive_scores(model, t, v, batch_size=5, chunk_size=2)
    work = tmp_path / "RESULTS.json.scores"
    bar = Bar(stop_after=2 * NI)  # dies when the first chunk's last batch is scored, before it is saved
    with pytest.raises(Interrupt):
        exhaustive_scores(model, t, v, batch_size=5, chunk_size=2, work_dir=work, meta={"run": "r"}, progress=bar)
    bar = Bar(stop_after=4 * NI + 1)  # the second try saves 2 chunks, then dies
    with pytest.raises(Interrupt):
        exhaustive_scores(model, t, v, batch_size=5, chunk_size=2, work_dir=work, meta={"run": "r"}, progress=bar)
    assert sorted(p.name for p in work.glob("chunk_*.pt")) == ["chunk_000000.pt", "chunk_000001.pt"]
    bar = Bar()
    got, scored = exhaustive_scores(
        model, t, v, batch_size=5, chunk_size=2, work_dir=work, meta={"run": "r"}, progress=bar
    )
    assert scored == bar.total == bar.n == (NC - 4) * NI  # only the 2 missing chunks (3 captions) were scored
    torch.testing.assert_close(got, want)
    with pytest.raises(EvalError, match="different evaluation.*run"):
        exhaustive_scores(model, t, v, batch_size=5, chunk_size=2, work_dir=work, meta={"run": "other"})


def test_rank_chunks_partition():
    parts = [rank_chunks(10, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(parts, [])) == list(range(10))
    with pytest.raises(EvalError):
        rank_chunks(10, 3, 3)


def test_two_ranks_split_the_captions(tmp_path, data):
    """Rank 0 and rank 1 share a work dir; rank 1 runs inside rank 0's barrier (as if in parallel)."""
    model = tiny("mixed-modality")
    t, v = cached(model, data)
    want, _ = exhaustive_scores(model, t, v, batch_size=8, chunk_size=2)
    work = tmp_path / "w"
    results = {}

    def barrier():
        results[1] = exhaustive_scores(
            model, t, v, 8, chunk_size=2, work_dir=work, rank=1, world_size=2, barrier=lambda: None
        )

    results[0] = exhaustive_scores(model, t, v, 8, chunk_size=2, work_dir=work, rank=0, world_size=2, barrier=barrier)
    # 7 captions in chunks of 2 -> chunks 0..3; rank 0 scores 0, 2 (4 captions), rank 1 scores 1, 3 (3 captions)
    assert results[0][1] == 4 * NI and results[1][1] == 3 * NI
    torch.testing.assert_close(results[0][0], want)
    torch.testing.assert_close(results[1][0], want)
    with pytest.raises(EvalError, match="work directory"):
        exhaustive_scores(model, t, v, 8, rank=0, world_size=2)


def _gloo_rank(rank: int, world: int, init: str, work: str, queue) -> None:
    import torch.distributed as dist

    from mmtlab.eval.retrieval import _dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        r, w, barrier = _dist()
        model = tiny("mixed-modality")
        t, v = cached(model, _inputs())
        scores, scored = exhaustive_scores(
            model, t, v, 8, chunk_size=2, work_dir=work, rank=r, world_size=w, barrier=barrier
        )
        queue.put((rank, scores.numpy(), scored))  # numpy pickles by value (a tensor would be shared memory)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes: 17-47 s measured on the shared 2-core machine
def test_gloo_processes_split_the_captions(tmp_path):
    """Two real processes in a gloo group (what torchrun gives on CPU) share the exhaustive matrix."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_gloo_rank, args=(r, 2, init, str(tmp_path / "w"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = {r: (torch.from_numpy(s), n) for r, s, n in (queue.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    model = tiny("mixed-modality")
    t, v = cached(model, _inputs())
    want, _ = exhaustive_scores(model, t, v, 8, chunk_size=2)
    assert got[0][1] == 4 * NI and got[1][1] == 3 * NI  # rank 0: chunks 0, 2; rank 1: chunks 1, 3
    torch.testing.assert_close(got[0][0], want)
    torch.testing.assert_close(got[1][0], want)
