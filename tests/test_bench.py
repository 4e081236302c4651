"""``mmtlab bench`` on a tiny shape on CPU: it runs, the JSON has the fields, the numbers are positive.

No timing is asserted (the CPU is shared); the FLOP counts are checked against hand-computed values.
"""

import json

import pytest
import torch

from mmtlab import bench
from mmtlab.bench.ours import _ours_flops
from mmtlab.cli import main
from mmtlab.config import ConfigError

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    rc = main(
        [
            "bench",
            "--scale",
            "tiny",
            "--device",
            "cpu",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return json.loads(out.read_text())


def test_bench_json_has_fields_and_positive_numbers(results):
    assert results["device"] == "cpu" and results["scale"] == "tiny" and results["batch"] == 2
    for key in ("torch", "transformers", "date", "precision", "shape", "loss"):
        assert results[key]
    assert [r["comparison"] for r in results["comparisons"]] == ["ours vs visualbert", "ours vs lxmert"]
    for row in results["comparisons"]:
        for who in ("ours", "theirs"):
            e = row[who]
            for key in (
                "params",
                "train_samples_per_s",
                "score_pairs_per_s",
                "train_ms",
                "score_ms",
                "train_gflops_per_sample",
            ):
                assert e[key] > 0, (who, key)
            assert e["mfu"] is None  # no peak FLOP/s known on CPU
        assert row["ratio_train"] == pytest.approx(
            row["ours"]["train_samples_per_s"] / row["theirs"]["train_samples_per_s"]
        )
        assert row["ratio_score"] > 0
    assert "HF VisualBertForPreTraining" in results["comparisons"][0]["theirs"]["name"]
    assert bench.TWO_STREAM_SCHEDULE in results["comparisons"][1]["ours"]["name"]


def test_mlm_positions_and_score_block():
    shape = bench.bench_shape("paper")
    inputs = bench.make_inputs(shape, batch=3, device="cpu")
    # 15% of 40 word pieces = 6 per sample, never [CLS]
    assert inputs["mlm_mask"].sum(1).tolist() == [6, 6, 6]
    assert not inputs["mlm_mask"][:, 0].any()
    assert inputs["img_boxes"][:, 0].tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0]] * 3
    cap, img = bench.score_pairs(20, "cpu")  # 16 captions x 2 images (the second one partly)
    assert cap.tolist() == list(range(16)) + [0, 1, 2, 3]
    assert img.tolist() == [0] * 16 + [1] * 4


def test_flop_formula_matches_hand_count():
    """6 x (parameters x tokens they touch): 2 shared layers on T + R tokens, projections on R regions, the MLM
    head on the masked positions only, the ITM head once."""
    from mmtlab.model import build_model

    D, ffn, T, R, F, V, n = 128, 512, 16, 10, 256, bench.VOCAB, 2
    shape = dict(width=D, heads=4, ffn=ffn, text_len=T, regions=R, feat_dim=F)
    m = build_model("merged", "paper", schedule="MM", shared=True, width=D, heads=4, ffn=ffn, feat_dim=F, vocab_size=V)
    layer = (3 * D * D + 3 * D) + (D * D + D) + (D * ffn + ffn) + (ffn * D + D) + 2 * (2 * D)  # qkv, out, ffn, 2 LN
    emb = (F * D + D) + (5 * D + D)  # feature and box projections
    mlm = (D * D + D + 2 * D) + V * D  # transform (dense + LayerNorm) + tied decoder
    itm = 2 * (D * D + D) + (2 * D + 2)  # two poolers + classifier
    assert _ours_flops(m, shape, n) == 6 * (2 * layer * (T + R) + emb * R + mlm * n + itm)


def test_bf16_check_on_cpu():
    from mmtlab.model import build_model

    shape = bench.bench_shape("tiny")
    m = build_model("single-stream", "tiny", feat_dim=shape["feat_dim"])
    check = bench.check_bf16(m, bench.make_inputs(shape, 2, "cpu"), torch.device("cpu"))
    assert check["ok"] and 0 < check["states_rel_err"] < 0.05 and 0 < check["itm_logits_rel_err"] < 0.05

    class Drifting(torch.nn.Module):  # ITM logits 20% off under autocast: a mismatch
        def __init__(self):
            super().__init__()
            self.inner = m

        def forward(self, batch):
            out = dict(self.inner(batch))
            if torch.is_autocast_enabled("cpu"):
                out["itm_logits"] = out["itm_logits"] * 1.2
            return out

    bad = bench.check_bf16(Drifting(), bench.make_inputs(shape, 2, "cpu"), torch.device("cpu"))
    assert not bad["ok"] and bad["itm_logits_rel_err"] == pytest.approx(0.2, abs=0.02)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scale="huge"), "valid scales are paper, tiny, base"),
        (dict(compare=("vilbert",)), "valid comparisons are visualbert, lxmert"),
        (dict(ablate=("nothing",)), "valid levers"),
        (dict(batch=0), "--batch"),
        (dict(score_batch=0), "--score-batch"),
        (dict(precision="fp8"), "valid values are auto, fp32, bf16"),
        (dict(compile="yes"), "valid modes are none, all, ours"),
        (dict(device="tpu"), "valid devices are cpu, cuda"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        bench.run_bench(**kwargs)


def test_cli_bad_scale_is_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:  # argparse choices
        main(["bench", "--scale", "huge"])
    assert e.value.code == 2
    assert main(["bench", "--compare", "vilbert", "--steps", "1"]) == 2
    assert "valid comparisons" in capsys.readouterr().err


def test_profile_lists_top_operators():
    results = bench.run_bench(
        scale="tiny", batch=2, steps=1, warmup=0, compare=("visualbert",), peers=False, profile=True
    )
    row = results["comparisons"][0]
    assert "theirs" not in row and "ratio_train" not in row
    for task in ("train", "score"):
        ops = row["ours_profile"][task]
        assert 0 < len(ops) <= 8 and all(o["calls"] > 0 and 0 <= o["share"] <= 1 for o in ops)
        assert sum(o["share"] for o in ops) <= 1 + 1e-9
    assert "profile of ours" in bench.format_table(results)


def test_score_batch_sets_the_scoring_block():
    """--score-batch 40: 16 captions x 3 images (the last partly), timed separately from the training batch."""
    results = bench.run_bench(scale="tiny", batch=2, score_batch=40, steps=1, warmup=0, compare=("lxmert",))
    assert results["batch"] == 2 and results["score_batch"] == 40 and results["shape"]["score_block"] == [16, 3]
    row = results["comparisons"][0]
    for who in ("ours", "theirs"):
        assert row[who]["score_pairs_per_s"] == pytest.approx(40 / (row[who]["score_ms"] / 1e3))
        assert row[who]["train_samples_per_s"] == pytest.approx(2 / (row[who]["train_ms"] / 1e3))
    assert "(scoring 40)" in bench.format_table(results)


def test_bf16_on_cpu_runs_every_contender_under_autocast():
    results = bench.run_bench(scale="tiny", batch=2, steps=1, warmup=0, compare=("visualbert",), precision="bf16")
    assert results["precision"] == "bf16 autocast" and results["bf16_check"]["ok"]
    assert results["comparisons"][0]["ratio_train"] > 0
    assert (
        bench.run_bench(scale="tiny", batch=2, steps=1, warmup=0, compare=("visualbert",), peers=False)["precision"]
        == "fp32"
    )


def test_ablations_run_and_are_recorded():
    results = bench.run_bench(
        scale="tiny", batch=2, steps=1, warmup=0, compare=("lxmert",), peers=False, ablate=("last-rows", "cache", "mlm")
    )
    assert results["ablate"] == ["last-rows", "cache", "mlm"]
    assert results["comparisons"][0]["ours"]["train_samples_per_s"] > 0
    assert "ablated: last-rows, cache, mlm" in bench.format_table(results)


def test_results_are_reported_after_each_comparison():
    """--out is rewritten after every comparison, so a stage killed midway keeps what it measured."""
    seen = []
    bench.run_bench(
        scale="tiny",
        batch=2,
        steps=1,
        warmup=0,
        peers=False,
        on_row=lambda r: seen.append([row["comparison"] for row in r["comparisons"]]),
    )
    assert seen == [["ours vs visualbert"], ["ours vs visualbert", "ours vs lxmert"]]


def test_peak_flops_by_card_name():
    assert bench.peak_for_name("NVIDIA H100 80GB HBM3") == 989e12 and bench.peak_for_name("NVIDIA H200") == 989e12
    assert bench.peak_for_name("NVIDIA H100 PCIe") == 756e12 and bench.peak_for_name("NVIDIA H100 NVL") == 835e12
    assert bench.peak_for_name("NVIDIA A100-SXM4-80GB") is None  # unknown: MFU needs --peak-tflops


def test_shapes_come_from_the_model_configs_and_base_is_paper():
    from mmtlab.presets import model_config

    for scale in ("paper", "tiny"):
        cfg = model_config("merged", scale)
        shape = bench.bench_shape(scale)
        assert (shape["width"], shape["heads"], shape["ffn"]) == (cfg.width, cfg.heads, cfg.ffn)
    assert bench.bench_shape("base") == bench.bench_shape("paper") and bench.bench_scale("base") == "paper"
    assert bench.bench_shape("paper") == dict(width=768, heads=12, ffn=3072, text_len=40, regions=36, feat_dim=2048)
