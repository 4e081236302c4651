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
    assert (
        main(["eval", "retrieval", "--run", str(run), "--data", str(flickr), "--out", str(out), "--no-progress"]) == 0
    )
    printed = capsys.readouterr().out
    assert "text->image" in printed and "zero-shot, scorer exhaustive" in printed
    assert json.loads(out.read_text())["scorer"] == "exhaustive"
    base = make_run(tmp_path / "base", "baseline")
    assert (
        main(["eval", "retrieval", "--run", str(base), "--data", str(flickr), "--out", str(out), "--no-progress"]) == 0
    )
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
    does (the last batch is smaller: one dynamic graph), and the results say so."""
    model = tiny("mixed-modality")
    store = open_store(flickr).split("test")
    eager = evaluate_retrieval(model, store, "exhaustive", batch_size=64, progress=False)
    run = make_run(tmp_path / "run", "mixed-modality", "itm+mlm")
    r = evaluate_run(run, flickr, tmp_path / "c.json", batch_size=64, progress=False, compile=True)
    assert r["text_to_image"] == eager["text_to_image"] and r["image_to_text"] == eager["image_to_text"]
    assert any("compiled" in n for n in r["notes"])
    dual = make_run(tmp_path / "dual", "single-modality")  # no layer per pair: nothing to compile
    r = evaluate_run(dual, flickr, tmp_path / "d.json", batch_size=64, progress=False, compile=True)
    assert not any("compiled" in n for n in r["notes"])


def test_a_store_with_one_split_is_evaluated_on_it(tmp_path):
    """`features extract` writes split `train` only: `eval retrieval` without --split evaluates it, and says so."""
    train_only = synthesize(tmp_path / "photos", style="flickr", n=4, seed=0, feat_dim=FEAT, split="train")
    run = make_run(tmp_path / "run", "merged", "itm+mlm")
    r = evaluate_run(run, train_only, tmp_path / "r.json", batch_size=64, progress=False)
    assert r["split"] == "train" and r["n_images"] == 4 and any("the store's only split" in n for n in r["notes"])
    with pytest.raises(Exception, match="no split 'test'"):
        evaluate_run(run, train_only, split="test", progress=False)


def test_max_images_is_a_seeded_subsample_recorded_in_the_results(tmp_path, flickr):
    run = make_run(tmp_path / "run", "merged", "itm+mlm")
    out = tmp_path / "r.json"
    r = evaluate_run(run, flickr, out, batch_size=64, progress=False, max_images=3, seed=1)
    saved = json.loads(out.read_text())
    assert (
        saved["subsample"]
        == {"max_images": 3, "seed": 1, "images": 3, "captions": 15, "split_images": 6, "split_captions": 30}
        == r["subsample"]
    )
    assert (saved["n_images"], saved["n_captions"], saved["pairs_total"]) == (3, 15, 45)
    assert any("seeded subsample: 3 of the split's 6 images" in n for n in saved["notes"])
    other = evaluate_run(run, flickr, tmp_path / "o.json", batch_size=64, progress=False, max_images=3, seed=2)
    assert other["subsample"]["seed"] == 2  # its own score chunks: another subsample is never read from r.json.scores
    with pytest.raises(EvalError, match="differs in max_images, .*sample_seed"):
        evaluate_run(run, flickr, out, batch_size=64, progress=False)  # the whole split vs the subsample's chunks
    assert evaluate_run(run, flickr, tmp_path / "all.json", batch_size=64, progress=False)["subsample"] is None
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--run",
                str(run),
                "--data",
                str(flickr),
                "--max-images",
                "0",
                "--out",
                str(tmp_path / "x.json"),
            ]
        )
        == 2
    )


def test_identical_captions_of_different_images_cap_r_at_1(tmp_path):
    from mmtlab.eval.metrics import recall_caps, retrieval_metrics

    keys = ["a dog", "a dog", "a cat", "a cat", "a bird", "a dog"]
    images = [0, 1, 1, 2, 2, 0]
    caps = recall_caps(keys, images)
    # "a dog" x3 on images 0, 1, 0: at most image 0's two; "a cat" on 1 and 2: one; "a bird": one -> 4 of 6
    assert caps["text_to_image"] == pytest.approx(100 * 4 / 6) and caps["captions_sharing_text"] == 5
    # image 0 has only "a dog" (shared), image 1 only shared texts, image 2 "a bird" of its own -> 1 of 3
    assert caps["image_to_text"] == pytest.approx(100 / 3) and caps["shared_texts"] == 2
    # the cap is reached by the best scorer there is: each text's winning image first
    winner = {"a dog": 0, "a cat": 1, "a bird": 2}
    best = torch.tensor([[1.0 if winner[k] == i else 0.0 for i in range(3)] for k in keys])
    assert retrieval_metrics(best, torch.tensor(images))["text_to_image"]["R@1"] == pytest.approx(caps["text_to_image"])

    w = StoreWriter(tmp_path / "s", feat_dim=FEAT)
    for i, texts in enumerate(
        [["a dog", "a Dog"], ["a dog ", "a cat"], ["a cat", "a bird"]]
    ):  # case, spaces: same text
        w.add_image(torch.randn(3, FEAT).numpy(), torch.rand(3, 4).numpy(), split="test")
        for t in texts:
            w.add_caption(i, t)
    w.close()
    r = evaluate_retrieval(tiny("merged"), open_store(tmp_path / "s").split("test"), progress=False)
    assert r["r1_cap"]["text_to_image"] == pytest.approx(100 * 4 / 6) and r["text_to_image"]["R@1"] <= 100 * 4 / 6
    assert any("R@1 can be at most 66.67 (text->image)" in n for n in r["notes"])
    from mmtlab.eval.retrieval import results_table

    assert (
        "note: 5 captions share their text with a caption of another image: R@1 can be at most 66.67"
        in results_table(r)
    )


def test_a_pixel_run_on_a_store_without_pixels_names_the_store_and_the_fix(tmp_path, flickr, capsys):
    run = make_run(tmp_path / "run", "merged", "itm+mlm", **{"model.image_input": "pixels"})
    regions = tmp_path / "regions"
    w = StoreWriter(regions, feat_dim=FEAT)
    w.add_caption(w.add_image(torch.randn(3, FEAT).numpy(), torch.rand(3, 4).numpy(), split="test"), "a dog")
    w.close()
    rc = main(["eval", "retrieval", "--run", str(run), "--data", str(regions), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(regions) in err and "--pixels 64" in err and "model.image_input=regions" in err


def test_cpu_scoring_keeps_freed_memory_for_reuse():
    """Without it, every batch of pairs maps its activations afresh (page faults: system time about half the
    computation with 49 regions, docs/evaluation.md "Speed: system time")."""
    import platform
    import sys

    from mmtlab.cpu import keep_freed_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc


def test_each_scorer_is_one_function_behind_the_table():
    from mmtlab.eval import SCORERS
    from mmtlab.eval.retrieval import SCORE_SPLIT

    assert tuple(SCORE_SPLIT) == SCORERS


def test_reading_fewer_regions_than_the_store_has_is_one_warning_with_the_fix(tmp_path, flickr, capsys):
    """A run whose data.max_regions keeps fewer regions than the evaluation store's images have: one warning line
    naming both numbers and the fix; ``regions`` in the results records what was read."""
    most = int(open_store(flickr).region_counts().max())
    assert most > 4
    run = make_run(tmp_path / "cut", "merged", "itm+mlm", **{"data.max_regions": 4})
    out = tmp_path / "r.json"
    argv = ["eval", "retrieval", "--run", str(run), "--data", str(flickr), "--batch-size", "64", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert f"up to {most} regions" in warnings[0] and "reads only the first 4 (data.max_regions=4)" in warnings[0]
    assert f"train with data.max_regions={most}" in warnings[0]
    assert json.loads(out.read_text())["regions"] == {"max_regions": 4, "most_in_store": most, "images_cut": 6}
    pooled = make_run(tmp_path / "pooled", "merged", "itm+mlm", **{"data.max_regions": 1})
    evaluate_run(pooled, flickr, tmp_path / "p.json", batch_size=64, progress=False)
    assert "mmtlab data pool" in capsys.readouterr().err
    whole = make_run(tmp_path / "whole", "merged", "itm+mlm")  # 36 regions: nothing cut, nothing said
    r = evaluate_run(whole, flickr, tmp_path / "w.json", batch_size=64, progress=False)
    assert r["regions"] == {"max_regions": 36, "most_in_store": most, "images_cut": 0}
    assert "warning" not in capsys.readouterr().err
