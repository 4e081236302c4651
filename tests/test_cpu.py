"""The CPU threading policy (mmtlab.cpu): idle OpenMP threads sleep unless the user chose otherwise, set before
torch loads OpenMP, and ``--threads`` on every command that runs models (not a timing test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mmtlab.cli import build_parser, main
from mmtlab.cpu import WAIT_VARIABLES, apply_cpu_policy

BENCH = [
    "bench",
    "--scale",
    "tiny",
    "--no-peers",
    "--steps",
    "1",
    "--warmup",
    "0",
    "--batch",
    "2",
    "--score-batch",
    "2",
]


def _openmp_settings(args: list[str], tmp_path, **env: str) -> tuple[dict[str, str], dict]:
    """Run ``mmtlab ARGS --out FILE`` with libgomp's OMP_DISPLAY_ENV: the settings OpenMP started with, and FILE."""
    clean = {k: v for k, v in os.environ.items() if k not in (*WAIT_VARIABLES, "OMP_NUM_THREADS")}
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "mmtlab.cli", *args, "--out", str(out)], capture_output=True,
                          text=True, env={**clean, "OMP_DISPLAY_ENV": "VERBOSE", **env}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = {}
    for line in done.stderr.splitlines():  # "  OMP_WAIT_POLICY = 'PASSIVE'"
        name, sep, value = line.strip().partition(" = ")
        if sep:
            shown[name] = value.strip("'")
    return shown, json.loads(out.read_text())


def test_openmp_starts_with_the_passive_wait_policy_and_the_threads_asked_for(tmp_path):
    shown, result = _openmp_settings([*BENCH, "--threads", "1"], tmp_path)
    assert shown["OMP_WAIT_POLICY"] == "PASSIVE" and shown["GOMP_SPINCOUNT"] == "0"  # unset would spin 300000
    assert shown["OMP_NUM_THREADS"] == "1" and result["cpu_threads"] == 1 and result["omp_wait_policy"] == "PASSIVE"


def test_a_wait_policy_the_user_set_is_kept(tmp_path):
    shown, result = _openmp_settings(BENCH, tmp_path, OMP_WAIT_POLICY="ACTIVE")
    assert shown["OMP_WAIT_POLICY"] == "ACTIVE" and result["omp_wait_policy"] == "ACTIVE"


@pytest.mark.parametrize("env, expected", [({}, "PASSIVE"), ({"GOMP_SPINCOUNT": "10000"}, None),
                                           ({"OMP_WAIT_POLICY": "active"}, "active")])  # fmt: skip
def test_policy_leaves_a_users_wait_setting_alone(monkeypatch, env, expected):
    for name in WAIT_VARIABLES:
        monkeypatch.setenv(name, "")  # so that monkeypatch restores the variable as it was
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    apply_cpu_policy()
    assert os.environ.get("OMP_WAIT_POLICY") == expected


def test_threads_in_a_process_that_already_runs_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))
    try:
        apply_cpu_policy(threads=1)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", [
    ["train", "--data", "d", "--out", "r"],
    ["eval", "retrieval", "--run", "r", "--data", "d", "--out", "o.json"],
    ["finetune", "retrieval", "--run", "r"],
    ["study", "paper-small", "--out", "s"],
    ["demo"],
    ["bench"],
])  # fmt: skip
def test_every_command_that_runs_models_takes_threads(command):
    assert build_parser().parse_args([*command, "--threads", "3"]).threads == 3


def test_a_bad_thread_count_is_one_line(capsys):
    assert main(["bench", "--threads", "0"]) == 2
    assert "--threads 0: give a positive number of threads" in capsys.readouterr().err
