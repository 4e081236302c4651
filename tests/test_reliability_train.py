"""Reliability of training (issue 16): a diverged run can be continued as advised, a run killed before its first
checkpoint resumes, damaged checkpoints and a full disk are one-line errors (exit 2), bugs keep their traceback."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_faults import Payload, one_line_error
from mmtlab.cli import main
from mmtlab.config import ConfigError
from mmtlab.data.synth import synthesize
from mmtlab.errors import MmtlabError
from mmtlab.train import make_run_config, train
from mmtlab.train.checkpoint import latest_checkpoint, load_state
from mmtlab.train.losses import PretrainingLoss
from mmtlab.train.trainer import TrainingError

FEAT = 24
TINY = {"model.width": "32", "model.heads": "2", "model.ffn": "64", "train.progress": "false", "train.batch_size": "4"}
TINY_ARGS = [f"{k}={v}" for k, v in TINY.items()]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "coco"
    synthesize(path, style="coco", n=40, seed=0, feat_dim=FEAT)
    return str(path)


def tiny_cfg(store: str, **overrides):
    return make_run_config("vilbert-2block", "itm", scale="tiny", data_dirs=[store], overrides={**TINY, **overrides})


def train_args(store: str, run: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "vilbert-2block", "--loss", "itm", "--scale", "tiny", "--data", store, "--out", str(run),
            *TINY_ARGS, *extra]  # fmt: skip


def finite_weights(path: Path) -> bool:
    return all(torch.isfinite(v).all() for v in load_file(str(path)).values())


# ------------------------------------------------------------------------------------ non-finite loss
def test_diverged_run_continues_as_the_error_advises(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            train_args(
                store,
                run,
                "train.steps=6",
                "train.ckpt_every=1",
                "train.log_every=1",
                "train.lr=1e30",
                "train.warmup_steps=0",
            )
        )
        == 2
    )
    err = one_line_error(capsys)
    assert "non-finite loss in itm at step 2" in err and f"--resume {run} train.lr=" in err
    # the checkpoint of step 1 already holds the diverged weights: it is set aside, not offered
    assert latest_checkpoint(run) is None and (run / "checkpoint.diverged").is_dir()
    assert main(["train", "--resume", str(run), "train.lr=1e-4", "train.warmup_steps=2"]) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[0]["step"] == 0 and history[0]["resumed_with"]["train.lr"] == [1e30, 1e-4]
    assert finite_weights(run / "model.safetensors")
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)


def test_a_checkpoint_that_diverges_at_once_is_replaced_by_the_previous_one(store, tmp_path):
    loss = PretrainingLoss(tiny_cfg(store).loss)

    def nan_at_step_2(model, batch, step):
        total, terms = loss(model, batch, step)
        return (total * float("nan"), terms) if step == 2 else (total, terms)

    cfg = tiny_cfg(store, **{"train.steps": "4", "train.ckpt_every": "1"})
    with pytest.raises(TrainingError, match=r"at step 3; stopped \(the run resumes from .*checkpoint\)"):
        train(cfg, tmp_path / "run", loss_fn=nan_at_step_2)
    assert load_state(latest_checkpoint(tmp_path / "run"))["step"] == 1
    assert load_state(tmp_path / "run" / "checkpoint.diverged")["step"] == 2
    assert not (tmp_path / "run" / "checkpoint.prev").exists()


def test_resume_with_a_lower_lr_uses_it(store, tmp_path):
    decay = {"train.warmup_steps": "0", "train.log_every": "1", "train.min_lr_ratio": "0"}  # linear decay to 0
    cfg = tiny_cfg(store, **{"train.steps": "2", "train.lr": "1e-4", **decay})
    train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.prev").exists()  # a finished run keeps one checkpoint
    resumed = tiny_cfg(store, **{"train.steps": "4", "train.lr": "5e-5", **decay})
    train(resumed, tmp_path / "run", resume=True)
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())]
    assert lrs[:2] == pytest.approx([1e-4, 0.5e-4]) and lrs[2:] == pytest.approx([5e-5 * 0.5, 5e-5 * 0.25])


def test_overflowing_gradient_stops_the_run(store, tmp_path):
    loss = PretrainingLoss(tiny_cfg(store).loss)

    def infinite_gradient(model, batch, step):
        total, terms = loss(model, batch, step)
        w = next(model.parameters()).flatten()[0]
        return total + torch.sqrt(w - w.detach()), terms  # value + 0, gradient +inf

    with pytest.raises(TrainingError, match=r"non-finite gradient norm \(inf\) at step 1"):
        train(tiny_cfg(store, **{"train.steps": "3"}), tmp_path / "run", loss_fn=infinite_gradient)


def test_an_overflowing_loss_weight_is_named(store, tmp_path):
    cfg = tiny_cfg(store, **{"train.steps": "2", "loss.weights.itm": "1e39"})
    with pytest.raises(TrainingError, match=r"non-finite loss in itm \(loss.weights.itm=1e\+39 overflows\) at step 1"):
        train(cfg, tmp_path / "run")


# --------------------------------------------------------------------------- killed before a checkpoint
def test_run_killed_before_its_first_checkpoint_resumes_from_step_0(store, tmp_path, capsys):
    loss = PretrainingLoss(tiny_cfg(store).loss)

    def killed_at_step_1(model, batch, step):
        if step == 1:
            raise KeyboardInterrupt
        return loss(model, batch, step)

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(store, **{"train.steps": "3"}), run, loss_fn=killed_at_step_1)
    assert (run / "config.yaml").is_file() and latest_checkpoint(run) is None
    assert main(train_args(store, run, "train.steps=3")) == 2
    assert f"start it again with --resume {run}" in one_line_error(capsys)
    assert main(["train", "--resume", str(run)]) == 0
    assert main(train_args(store, tmp_path / "fresh", "train.steps=3")) == 0
    a, b = load_file(str(run / "model.safetensors")), load_file(str(tmp_path / "fresh" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # exactly the run that was never interrupted
    assert not (run / "history.jsonl").exists()  # nothing changed


# --------------------------------------------------------------------------------- one-line errors
@pytest.fixture()
def finished(store, tmp_path) -> Path:
    run = tmp_path / "run"
    assert main(train_args(store, run, "train.steps=2")) == 0
    return run


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt"])
def test_truncated_checkpoint_file_is_named(finished, name, capsys):
    f = finished / "checkpoint" / name
    f.write_bytes(f.read_bytes()[:100])
    capsys.readouterr()
    assert main(["train", "--resume", str(finished), "train.steps=3"]) == 2
    err = one_line_error(capsys)
    assert str(f) in err and "move" in err and "--resume" in err


def test_pickle_payload_in_state_pt_is_refused_in_one_line(finished, tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"x": Payload(str(marker))}, finished / "checkpoint" / "state.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(finished), "train.steps=3"]) == 2
    assert "state.pt: damaged or not written by mmtlab" in one_line_error(capsys) and not marker.exists()


def test_yaml_syntax_error_names_the_file_and_line(finished, tmp_path, capsys):
    (finished / "config.yaml").write_text("model:\n  width: [32\ntrain: {}\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(finished)]) == 2
    err = one_line_error(capsys)
    assert f"{finished / 'config.yaml'}: line" in err and "not valid YAML" in err and "<unicode string>" not in err
    grid = tmp_path / "grid.yaml"
    grid.write_text("data: [coco\nattention: [merged]\n")
    assert main(["study", "--grid", str(grid), "--out", str(tmp_path / "s")]) == 2
    assert f"{grid}: line" in one_line_error(capsys)


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(finished, monkeypatch, capsys):
    import mmtlab.train.checkpoint as ck

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full)
    capsys.readouterr()
    assert main(["train", "--resume", str(finished), "train.steps=3"]) == 2
    err = one_line_error(capsys)
    assert "checkpoint.tmp: cannot write (No space left on device)" in err and f"--resume {finished}" in err
    assert load_state(latest_checkpoint(finished))["step"] == 2 and not (finished / "checkpoint.tmp").exists()


def test_errors_are_one_family_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import mmtlab.model.catalog
    from mmtlab.data.store import DataError
    from mmtlab.eval.metrics import EvalError

    assert all(
        issubclass(c, MmtlabError) and issubclass(c, ValueError)
        for c in (ConfigError, DataError, EvalError, TrainingError)
    )
    monkeypatch.setattr(mmtlab.model.catalog, "preset_table", lambda markdown: [][1])
    with pytest.raises(IndexError):  # a bug: not turned into one line
        main(["presets"])

    def bug(markdown):
        raise ValueError("a bug")

    monkeypatch.setattr(mmtlab.model.catalog, "preset_table", bug)
    with pytest.raises(ValueError, match="a bug"):
        main(["presets"])

    def denied(markdown):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/out")

    monkeypatch.setattr(mmtlab.model.catalog, "preset_table", denied)  # about the machine, not the code: one line
    assert main(["presets"]) == 2
    assert "Permission denied" in one_line_error(capsys)


def test_yaml_python_tags_are_refused_in_one_line(tmp_path, capsys):
    marker = tmp_path / "ran"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "config.yaml: line 1: not valid YAML" in one_line_error(capsys) and not marker.exists()
