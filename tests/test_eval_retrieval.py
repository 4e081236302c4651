"""evaluate_retrieval / evaluate_run on tiny synthetic stores, which scorer a run may use, the CLI."""

import json

import pytest
import torch

import mmtlab
from mmtlab.cli import main
from mmtlab.config import save_yaml
from mmtlab.data.store import StoreWriter, open_store
from mmtlab.data.synth import synthesize
from mmtlab.eval.metrics import EvalError
from mmtlab.eval.retrieval import check_scorer, default_scorer, evaluate_retrieval, evaluate_run
from mmtlab.model import build_from_config
from mmtlab.train.checkpoint import save_weights
from mmtlab.train.config import make_run_config

FEAT = 32
CONTRACT = {"protocol", "scorer", "n_images", "n_captions", "text_to_image", "image_to_text", "seconds"}
DIRECTION = {"R@1", "R@5", "R@10", "median_rank", "mean_rank"}


@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data") / "flickr", style="flickr", n=6, seed=0, feat_dim=FEAT)


def make_run(path, preset, loss=None, **overrides):
    """A finished run directory with random weights (what load_run reads), without training."""
    cfg = make_run_config(preset, loss, scale="tiny", overrides={"model.feat_dim": FEAT, **overrides})
    torch.manual_seed(0)
    path.mkdir(parents=True)
    save_yaml(cfg, path / "config.yaml")
    save_weights(build_from_config(cfg.model), path / "model.safetensors")
    return path


def tiny(preset):
    torch.manual_seed(0)
    return mmtlab.build_model(preset, scale="tiny", feat_dim=FEAT).eval()


def test_exhaustive_results_contract(flickr):
    store = open_store(flickr).split("test")
    r = evaluate_retrieval(tiny("mixed-modality"), store, "exhaustive", batch_size=64, progress=False)
    assert CONTRACT <= set(r)
    assert set(r["text_to_image"]) == DIRECTION == set(r["image_to_text"])
    assert (r["protocol"], r["scorer"], r["n_images"], r["n_captions"]) == ("zero-shot", "exhaustive", 6, 30)
    assert r["pairs_scored"] == r["pairs_total"] == 180 and r["pairs_per_second"] > 0
    assert r["notes"] == []  # synthetic flickr has 5 captions per image
    for d in ("text_to_image", "image_to_text"):
        assert 0 <= r[d]["R@1"] <= r[d]["R@5"] <= r[d]["R@10"] <= 100
        assert r[d]["mean_rank"] >= 1


def test_rerank_with_k_above_the_split_equals_exhaustive_and_small_k_scores_less(flickr):
    store = open_store(flickr).split("test")
    model = tiny("mixed-modality")
    ex = evaluate_retrieval(model, store, "exhaustive", batch_size=64, progress=False)
    rr = evaluate_retrieval(model, store, "rerank", k=30, batch_size=64, progress=False)
    for d in ("text_to_image", "image_to_text"):
        assert rr[d] == pytest.approx(ex[d])
    assert rr["shortlist"]["source"] == "this run" and rr["shortlist"]["layers"] == 6
    small = evaluate_retrieval(model, store, "rerank", k=2, batch_size=64, progress=False)
    assert small["pairs_scored"] <= 30 * 2 + 6 * 2 < ex["pairs_scored"]
    assert any("k=2 < 10" in n for n in small["notes"])


def test_dual_scores_nothing_per_pair(flickr):
    r = evaluate_retrieval(tiny("baseline"), open_store(flickr).split("test"), "dual", progress=False)
    assert r["scorer"] == "dual" and r["pairs_scored"] == 0 and r["pairs_per_second"] is None


def test_empty_split_and_uneven_captions(tmp_path):
    w = StoreWriter(tmp_path / "s", feat_dim=FEAT)
    for split, n_caps in (("test", 0), ("train", 2), ("train", 3)):
        i = w.add_image(torch.randn(3, FEAT).numpy(), torch.rand(3, 4).numpy(), split=split)
        for c in range(n_caps):
            w.add_caption(i, f"a red circle number {c}")
    w.close()
    with pytest.raises(EvalError, match="empty split"):
        evaluate_retrieval(tiny("merged"), open_store(tmp_path / "s").split("test"), progress=False)
    r = evaluate_retrieval(tiny("merged"), open_store(tmp_path / "s").split("train"), progress=False)
    assert r["n_captions"] == 5 and any("not 5 captions per image" in n for n in r["notes"])


def test_which_scorer_a_run_may_use():
    itm = make_run_config("merged", "itm+mlm", scale="tiny")
    itc = make_run_config("merged", "itm+mlm", scale="tiny", overrides={"loss.weights.itc": 1})
    base = make_run_config("baseline", scale="tiny")  # all U, contrastive on embeddings: no ITM head trained
    single = make_run_config("single-modality", scale="tiny")  # all U, ITM trained, embeddings not
    check_scorer(itm, "exhaustive")
    check_scorer(itc, "rerank")
    check_scorer(itm, "rerank", shortlist_cfg=base)
    check_scorer(base, "dual")
    check_scorer(single, "exhaustive")
    check_scorer(base, "exhaustive", finetuned=True)  # fine-tuning trains the ITM head
    # with no --scorer: the paper's protocol where the ITM head was trained, cosine similarity for a dual encoder
    assert [default_scorer(c) for c in (itm, itc, single, base)] == ["exhaustive", "exhaustive", "exhaustive", "dual"]
    assert default_scorer(base, finetuned=True) == "exhaustive"
    for cfg, scorer, short, match in [
        (base, "exhaustive", None, "never trained it.*use --scorer dual"),
        (base, "rerank", None, "never trained it"),
        (itm, "dual", None, "needs trained embeddings"),
        (single, "dual", None, "needs trained embeddings"),
        (itm, "rerank", None, "--shortlist RUN2"),
        (itm, "rerank", itm, "the --shortlist run has no trained embeddings"),
        (itm, "magic", None, "valid: exhaustive, rerank, dual"),
    ]:
        with pytest.raises(EvalError, match=match):
            check_scorer(cfg, scorer, short)


def test_evaluate_run_writes_json_and_resumes(tmp_path, flickr):
    run = make_run(tmp_path / "run", "merged", "itm+mlm")
    out = tmp_path / "res" / "RESULTS.json"
    r = evaluate_run(run, flickr, out, batch_size=64, progress=False)
    saved = json.loads(out.read_text())
    assert saved == r and saved["run"] == str(run) and saved["preset"] == "merged" and saved["split"] == "test"
    assert (tmp_path / "res" / "RESULTS.json.scores" / "meta.json").is_file()
    again = evaluate_run(run, flickr, out, batch_size=64, progress=False)  # every chunk is on disk
    assert again["text_to_image"] == r["text_to_image"] and any("resumed: 180 of 180" in n for n in again["notes"])


def test_cli_eval_and_errors(tmp_path, flickr, capsys):
    run = make_run(tmp_path / "run", "single-modality")
    out = tmp_path / "r.json"
    assert main(["eval", "retrieval", "--run", str(run), "--data", str(flickr), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "text->image" in printed and "zero-shot, scorer exhaustive" in printed
    assert json.loads(out.read_text())["scorer"] == "exhaustive"
    base = make_run(tmp_path / "base", "baseline")
    assert main(["eval", "retrieval", "--run", str(base), "--data", str(flickr), "--out", str(out), "--no-progress"]) == 0
    assert "scorer dual" in capsys.readouterr().out and json.loads(out.read_text())["scorer"] == "dual"
    for args, match in [
        (["--run", str(base), "--scorer", "exhaustive"], "never trained it"),
        (["--run", str(run), "--scorer", "dual"], "needs trained embeddings"),
        (["--run", str(run), "--split", "val"], "no split 'val'"),
        (["--run", str(tmp_path / "nope")], "not a run directory"),
        (["--run", str(run), "--k", "0", "--scorer", "rerank"], "--k 0"),
    ]:
        rc = main(["eval", "retrieval", "--data", str(flickr), "--out", str(tmp_path / "x.json"), *args])
        err = capsys.readouterr().err
        assert rc == 2 and match in err and "Traceback" not in err and err.count("\n") == 1


def test_compiled_scoring_gives_the_same_results(tmp_path, flickr):
    """``--compile``: the per-pair layers through torch.compile with frozen weights score every pair as eager
    does (different batch sizes: one dynamic graph), and the results say so."""
    from mmtlab.model.compile import compile_fn

    model = tiny("mixed-modality")
    store = open_store(flickr).split("test")
    eager = evaluate_retrieval(model, store, "exhaustive", batch_size=64, progress=False)
    match = model.match_logits
    fast = compile_fn(match, dynamic=True, freeze=True)
    with torch.no_grad():
        t = model.encode_text(torch.randint(1000, 2000, (5, 7)), torch.ones(5, 7, dtype=torch.bool))
        v, vm = model.encode_image({"img_feats": torch.randn(5, 4, FEAT), "img_boxes": torch.rand(5, 4, 5),
                                    "img_mask": torch.ones(5, 4, dtype=torch.bool)})
        for n in (5, 3):
            args = (t[:n], torch.ones(n, 7, dtype=torch.bool), v[:n], vm[:n])
            torch.testing.assert_close(fast(*args), match(*args), atol=1e-4, rtol=1e-4)

    run = make_run(tmp_path / "run", "mixed-modality", "itm+mlm")
    r = evaluate_run(run, flickr, tmp_path / "c.json", batch_size=64, progress=False, compile=True)
    assert r["text_to_image"] == eager["text_to_image"] and r["image_to_text"] == eager["image_to_text"]
    assert any("compiled" in n for n in r["notes"])
    dual = make_run(tmp_path / "dual", "single-modality")  # no layer per pair: nothing to compile
    r = evaluate_run(dual, flickr, tmp_path / "d.json", batch_size=64, progress=False, compile=True)
    assert not any("compiled" in n for n in r["notes"])
