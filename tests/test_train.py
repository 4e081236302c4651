"""The trainer: config resolution, optimizer and schedule, the loop, checkpoints, load_run, CLI errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmtlab.cli import main
from mmtlab.config import ConfigError
from mmtlab.data.synth import synthesize
from mmtlab.train import TrainConfig, load_run, make_run_config, train
from mmtlab.train.checkpoint import latest_checkpoint, load_state
from mmtlab.train.optim import lr_factor, param_groups
from mmtlab.train.trainer import TrainingError, micro_batching

FEAT = 24
# a tiny model: bert-base-uncased vocabulary (30522), width 32, 2 layers
TINY = {"model.width": "32", "model.heads": "2", "model.ffn": "64", "train.progress": "false"}
TINY_ARGS = [f"{k}={v}" for k, v in TINY.items()]


def make_store(path: Path, n: int = 60, seed: int = 0, feat_dim: int = FEAT) -> str:
    synthesize(path, style="coco", n=n, seed=seed, feat_dim=feat_dim)
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("data") / "coco")


def tiny_cfg(store: str, preset: str = "vilbert-2block", **overrides):
    return make_run_config(preset, scale="tiny", data_dirs=[store], overrides={**TINY, **overrides})


def run_cli(*argv: str, capsys=None) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err if capsys else ""
    return code, err


# --------------------------------------------------------------------------------------------- config
def test_run_config_defaults_and_overrides(store):
    assert make_run_config("baseline").loss.name == "contrastive1024"  # the preset's default loss set
    cfg = make_run_config(
        "merged", "itm+mlm", "tiny", [store], {"loss.weights.mlm": "0.5", "loss.itm_neg_ratio": "0.3"}
    )
    assert cfg.loss.weights == {"itm": 1.0, "mlm": 0.5} and cfg.loss.itm_neg_ratio == 0.3
    cfg = make_run_config(
        "merged", "itm+mlm", "tiny", [store], {"loss.start.mlm": "200", "loss.itm_negatives": "similar"}
    )
    assert cfg.loss.start == {"mlm": 200} and cfg.loss.itm_negatives == "similar"
    with pytest.raises(ConfigError, match="unknown loss term"):
        make_run_config("merged", "itm+mlm", "tiny", [store], {"loss.start.mlmm": "200"})
    assert cfg.model.feat_dim == FEAT and cfg.model.n_region_classes == 68  # from the store's meta
    assert cfg.model.width == 128 and cfg.model.schedule == "MMMMMM"
    assert Path(cfg.data_dirs[0]).is_absolute()  # resumable and evaluable from any working directory
    cfg = make_run_config("merged", data_dirs=[store], overrides={"loss.weights.itc": "0.2"})
    assert cfg.loss.weights == {"itm": 1.0, "mlm": 1.0, "mrm-kl": 1.0, "itc": 0.2}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preset": "nope"}, "valid presets"),
        ({"preset": "merged", "loss": "nope"}, "valid loss sets"),
        ({"preset": "merged", "overrides": {"train.stepz": "3"}}, "unknown key 'train.stepz'"),
        ({"preset": "merged", "overrides": {"loss.weights.foo": "1"}}, "valid terms"),
        ({"preset": "merged", "overrides": {"model.image_input": "pixels"}}, "itm\\+mlm"),
        ({"preset": "merged", "overrides": {"train.lr": "-1"}}, "train.lr"),
    ],
)
def test_run_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_run_config(**kwargs)


def test_feat_dim_mismatch_names_both_numbers(store):
    with pytest.raises(ConfigError, match=f"model.feat_dim=99 .*feat_dim={FEAT}"):
        make_run_config("merged", data_dirs=[store], overrides={"model.feat_dim": "99"})


def test_lr_schedule_hand_values():
    lin = TrainConfig(steps=10, warmup_steps=2, lr=1.0)
    assert [lr_factor(s, lin) for s in range(4)] == [0.5, 1.0, 1.0, pytest.approx(7 / 8)]
    assert lr_factor(9, lin) == pytest.approx(1 / 8)
    cos = TrainConfig(steps=10, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(6, cos) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert TrainConfig(steps=50).warmup == 5


def test_no_weight_decay_on_biases_and_norms():
    lin, norm = torch.nn.Linear(3, 3), torch.nn.LayerNorm(3)
    decay, no_decay = param_groups(torch.nn.Sequential(lin, norm), 0.01)
    assert decay["params"] == [lin.weight] and decay["weight_decay"] == 0.01
    assert {id(p) for p in no_decay["params"]} == {id(lin.bias), id(norm.weight), id(norm.bias)}
    assert no_decay["weight_decay"] == 0.0


def test_micro_batching(store):
    cfg = tiny_cfg(store, **{"train.batch_size": "64"})
    assert micro_batching(cfg, 1) == (64, 1) and micro_batching(cfg, 2) == (32, 1)
    cfg = tiny_cfg(store, **{"train.batch_size": "64", "train.micro_batch_size": "16"})
    assert micro_batching(cfg, 1) == (16, 4) and micro_batching(cfg, 2) == (16, 2)
    with pytest.raises(ConfigError, match="not a multiple"):
        micro_batching(tiny_cfg(store, **{"train.batch_size": "10", "train.micro_batch_size": "4"}), 1)


# --------------------------------------------------------------------------------------------- the loop
def test_train_writes_a_self_describing_run(store, tmp_path):
    val = make_store(tmp_path / "val", n=20, seed=1)
    cfg = tiny_cfg(store, **{"train.steps": "6", "train.batch_size": "8", "train.micro_batch_size": "4",
                             "train.log_every": "2", "train.ckpt_every": "4", "train.val_pairs": "8"})  # fmt: skip
    cfg.val_dir = val
    run = train(cfg, tmp_path / "run")
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "model.safetensors", "checkpoint", "metrics.jsonl", "tb"}
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [ln for ln in lines if "loss" in ln]
    assert [ln["step"] for ln in train_lines] == [2, 4, 6]
    for ln in train_lines:  # every term separately, and the total is their weighted sum
        assert {"itm", "mlm", "mrm-kl", "lr", "samples_per_s"} <= set(ln)
        assert ln["loss"] == pytest.approx(ln["itm"] + ln["mlm"] + ln["mrm-kl"], rel=1e-5)
    (val_line,) = [ln for ln in lines if "val_itm_acc" in ln]
    assert val_line["step"] == 6 and 0.0 <= val_line["val_itm_acc"] <= 1.0 and val_line["val_pairs"] == 8
    assert list((run / "tb").iterdir())
    # checkpoint: plain state (weights_only), the final step, weights equal to the final model
    state = load_state(run / "checkpoint")
    assert state["step"] == 6 and "state" in state["optimizer"] and state["scheduler"]["last_epoch"] == 6
    meta = json.loads((run / "checkpoint" / "meta.json").read_text())
    assert meta["samples"] == 48 and meta["code"]["mmtlab"]
    final = load_file(str(run / "model.safetensors"))
    ckpt = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert final.keys() == ckpt.keys() and all(torch.equal(final[k], ckpt[k]) for k in final)
    # a crash between the two renames of the next checkpoint leaves checkpoint.old/, which resume finds
    (run / "checkpoint").rename(run / "checkpoint.old")
    assert latest_checkpoint(run) == run / "checkpoint.old"
    # load_run needs only the directory
    model, cfg2 = load_run(run)
    assert cfg2 == cfg and not model.training
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())


def test_loss_fn_hook_and_nan_stop(store, tmp_path):
    calls = []

    def loss_fn(model, batch, step):
        calls.append(step)
        out = model(batch)
        loss = out["itm_logits"].float().logsumexp(-1).mean()
        bad = loss * float("nan") if step == 3 else loss
        return bad, {"custom": bad}

    cfg = tiny_cfg(
        store, **{"train.steps": "5", "train.batch_size": "4", "train.ckpt_every": "2", "train.log_every": "1"}
    )
    with pytest.raises(TrainingError, match=r"in custom at step 4.*resumes from .*checkpoint"):
        train(cfg, tmp_path / "run", loss_fn=loss_fn)
    assert calls == [0, 1, 2, 3]
    assert load_state(tmp_path / "run" / "checkpoint")["step"] == 2  # the last good checkpoint is kept
    assert not (tmp_path / "run" / "model.safetensors").exists()
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3] and all(math.isfinite(ln["custom"]) for ln in lines)


def test_cpu_amp_trains_under_bf16_autocast(store, tmp_path):
    dtypes = {}

    def loss_fn(model, batch, step):
        out = model(batch)
        dtypes[step] = out["itm_logits"].dtype
        loss = out["itm_logits"].float().logsumexp(-1).mean()
        return loss, {"itm": loss}

    for flag, want in (("true", torch.bfloat16), ("false", torch.float32)):
        cfg = tiny_cfg(
            store, **{"train.steps": "2", "train.batch_size": "4", "train.cpu_amp": flag, "train.device": "cpu"}
        )
        train(cfg, tmp_path / flag, loss_fn=loss_fn)
        assert set(dtypes.values()) == {want}, flag
        dtypes.clear()


# --------------------------------------------------------------------------------------------- CLI
def test_cli_bad_input_is_one_line(store, tmp_path, capsys):
    other = make_store(tmp_path / "wide", n=4, feat_dim=FEAT + 8)
    base = ["train", "--data", store, "--scale", "tiny", "--out", str(tmp_path / "r")]
    cases = [
        (["--preset", "nope"], "valid presets"),
        (["--loss", "nope"], "valid loss sets"),
        (["train.stepz=1"], "unknown key 'train.stepz'"),
        (["--data", str(tmp_path)], "not an mmtlab store"),
        (["--data", other], "disagree on feat_dim"),
        ([f"model.feat_dim={FEAT + 1}"], f"model.feat_dim={FEAT + 1} does not match"),
    ]
    for extra, message in cases:
        code, err = run_cli(*base, *extra, capsys=capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "r").exists()
    code, err = run_cli("train", "--resume", str(tmp_path), capsys=capsys)
    assert code == 2 and "not a run directory" in err


def test_cli_train_resume_rules(store, tmp_path, capsys):
    run = str(tmp_path / "run")
    args = ["train", "--preset", "vilbert-2block", "--scale", "tiny", "--data", store, "--out", run, *TINY_ARGS]
    code, _ = run_cli(*args, "train.steps=2", "train.batch_size=4", capsys=capsys)
    assert code == 0 and (Path(run) / "model.safetensors").is_file()
    code, err = run_cli(*args, "train.steps=2", capsys=capsys)  # the run exists
    assert code == 2 and "--resume" in err
    code, err = run_cli("train", "--resume", run, "model.width=64", capsys=capsys)
    assert code == 2 and "cannot resume" in err and "model.width=32" in err and "model.width=64" in err
    code, err = run_cli("train", "--resume", run, "--preset", "merged", capsys=capsys)
    assert code == 2 and "drop --preset" in err
    code, _ = run_cli("train", "--resume", run, "train.steps=3", capsys=capsys)  # extending is allowed
    assert code == 0 and load_state(Path(run) / "checkpoint")["step"] == 3


def test_cli_mixture_as_a_list_of_stores_and_override_groups(store, tmp_path, capsys):
    """`--data A B key=value` and `--data A --data B` are the same mixture; the overrides after the list apply;
    key=value overrides may come in several groups between options."""
    other = make_store(tmp_path / "other", n=20, seed=2)
    for name, data in [("list", ["--data", store, other]), ("repeated", ["--data", store, "--data", other])]:
        run = tmp_path / name
        code, err = run_cli(
            "train",
            "--scale",
            "tiny",
            *data,
            "data.sampling=dataset",
            "train.steps=1",
            "train.batch_size=4",
            *TINY_ARGS,
            "--out",
            str(run),
            capsys=capsys,
        )
        assert code == 0, err
        cfg = load_run(run)[1]
        assert (
            cfg.data_dirs == [str(Path(store).resolve()), str(Path(other).resolve())] and cfg.data.sampling == "dataset"
        )
        assert cfg.train.steps == 1
    # overrides in two groups around other options
    run = tmp_path / "groups"
    code, err = run_cli(
        "train",
        "train.steps=1",
        "--scale",
        "tiny",
        "--data",
        store,
        "train.batch_size=4",
        *TINY_ARGS,
        "--out",
        str(run),
        "train.lr=2e-4",
        capsys=capsys,
    )
    assert code == 0, err
    cfg = load_run(run)[1]
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.lr, cfg.model.width) == (1, 4, 2e-4, 32)
    with pytest.raises(SystemExit):  # an unknown option is still an error
        run_cli("train", "--scale", "tiny", "--data", store, "--bogus", "--out", str(tmp_path / "x"), capsys=capsys)
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_hold_out_slice(store):
    from mmtlab.data.store import open_store
    from mmtlab.train.trainer import hold_out

    full = open_store(store)
    train_view, held = hold_out(full, 10)
    assert (train_view.n_images, held.n_images) == (50, 10)
    assert len(train_view) + len(held) == len(full)
    held_captions = {full.captions[i] for i in range(len(full)) if full.caption_image[i] >= 50}
    assert set(held.captions) == held_captions
    assert (held.caption_image < 10).all()
    with pytest.raises(ConfigError, match="hold out fewer"):
        hold_out(full, 60)
    with pytest.raises(ConfigError, match="not both"):
        make_run_config("merged", data_dirs=[store], overrides={"train.holdout_images": "5"}, val_dir=store)


def test_training_vocabulary_is_recorded_and_resumes(store, tmp_path, capsys):
    """``data.vocab=train``: the run's config.yaml holds the pieces of its training captions plus the special
    tokens as model.vocab_ids (the model's word rows), a resume rebuilds the same model, and eval-time loading
    needs nothing else."""
    from mmtlab.data.store import open_store
    from mmtlab.data.tokenizer import caption_vocabulary

    run = tmp_path / "run"
    args = ["train", "--preset", "vilbert-2block", "--scale", "tiny", "--data", store, "--out", str(run), *TINY_ARGS]
    assert run_cli(*args, "train.steps=2", "train.batch_size=4", "data.vocab=train", capsys=capsys)[0] == 0
    model, cfg = load_run(run)
    want = caption_vocabulary(open_store(store).captions)
    assert cfg.model.vocab_ids == want and {0, 100, 101, 102, 103} <= set(want) and len(want) < 1000
    assert model.text_embed.word.weight.shape[0] == len(want)
    code, _ = run_cli("train", "--resume", str(run), "train.steps=3", capsys=capsys)
    assert code == 0 and load_state(run / "checkpoint")["step"] == 3
    with pytest.raises(ConfigError, match="data.vocab"):
        tiny_cfg(store, **{"data.vocab": "tiny"})


def test_metrics_reader_keeps_training_lines_and_averages_throughput(tmp_path):
    """``mmtlab.train.metrics``: lines without a loss (e.g. an evaluation) are not training lines; the mean
    samples/s skips the warm-up windows asked for; a run without a log has neither."""
    from mmtlab.train.metrics import mean_throughput, training_lines

    lines = [
        {"step": 10, "loss": 3.0, "samples_per_s": 10.0},
        {"step": 10, "val_R@1": 5.0},
        {"step": 20, "loss": 2.0, "samples_per_s": 30.0},
        {"step": 30, "loss": 1.0, "samples_per_s": 50.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")
    assert [x["step"] for x in training_lines(tmp_path)] == [10, 20, 30]
    assert mean_throughput(tmp_path) == 30.0 and mean_throughput(tmp_path, skip=1) == 40.0
    assert training_lines(tmp_path / "none") == [] and mean_throughput(tmp_path / "none") is None
