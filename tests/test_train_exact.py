"""Exactness of the trainer: SIGKILL + --resume is bit-identical (CPU, fp32); torchrun with 2 processes
(gloo) follows the 1-process loss curve for the same global batch."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmtlab.cli import main
from mmtlab.train.checkpoint import load_state
from test_train import TINY_ARGS, make_store

# Run in a child process: train with a loss that SIGKILLs the process at step 5 (after the step-3 checkpoint).
KILLED_RUN = """
import os, signal, sys
from mmtlab.config import parse_overrides
from mmtlab.train import PretrainingLoss, make_run_config, train
store, run, *overrides = sys.argv[1:]
cfg = make_run_config("vilbert-2block", scale="tiny", data_dirs=[store], overrides=parse_overrides(overrides))
loss = PretrainingLoss(cfg.loss)
def killing_loss(model, batch, step):
    if step == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return loss(model, batch, step)
train(cfg, run, loss_fn=killing_loss)
"""


def child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}


@contextlib.contextmanager
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def losses(run: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("data") / "coco")


def test_sigkill_then_resume_is_bit_identical(store, tmp_path):
    args = [*TINY_ARGS, "train.steps=8", "train.batch_size=8", "train.micro_batch_size=4", "train.ckpt_every=3",
            "train.log_every=1", "model.dropout=0.1"]  # fmt: skip
    ref = tmp_path / "ref"
    with single_thread():  # as the children (OMP_NUM_THREADS=1)
        assert (
            main(["train", "--preset", "vilbert-2block", "--scale", "tiny", "--data", store, "--out", str(ref), *args])
            == 0
        )

    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, store, str(killed), *args], env=child_env(), capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert load_state(killed / "checkpoint")["step"] == 3 and not (killed / "model.safetensors").exists()
    assert len(losses(killed)) == 5  # logged steps 1-5, two of them past the checkpoint

    with single_thread():
        assert main(["train", "--resume", str(killed)]) == 0
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert losses(killed) == losses(ref)  # the lines past the checkpoint were replaced, not duplicated


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun missing")
def test_ddp_two_processes_match_one(store, tmp_path):
    args = [*TINY_ARGS, "train.steps=4", "train.batch_size=8", "train.micro_batch_size=4", "train.log_every=1",
            "train.device=cpu"]  # fmt: skip
    cmd = ["-m", "mmtlab.cli", "train", "--preset", "vilbert-2block", "--scale", "tiny", "--data", store, *args]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    with single_thread():  # as the children (OMP_NUM_THREADS=1)
        assert main([*cmd[2:], "--out", str(tmp_path / "one")]) == 0
    two = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", *cmd, "--out", str(tmp_path / "two")],
        env=child_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    l1, l2 = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(l1) == len(l2) == 4
    assert l1 == pytest.approx(l2, rel=1e-4)
    a, b = (
        load_file(str(tmp_path / "one" / "model.safetensors")),
        load_file(str(tmp_path / "two" / "model.safetensors")),
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
