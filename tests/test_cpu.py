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
from mmtlab.cpu import WAIT_VARIABLES, apply_cpu_policy, idle_cores

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


STAT = """cpu  {a} 0 {b} {c} 0 0 0 0 0 0
cpu0 {a0} 0 0 {i0} 0 0 0 0 0 0
cpu1 {a1} 0 0 {i1} 5 0 0 0 0 0
intr 12345
"""


def test_idle_cores_counts_the_busy_time_of_the_allowed_cpus(monkeypatch, tmp_path):
    """From two reads of /proc/stat: cpu0 busy 90% of the interval, cpu1 idle (iowait counts as idle) -> 1 idle;
    only the CPUs this process may run on count; an unreadable file gives None."""
    stat = tmp_path / "stat"
    reads = iter([dict(a0=100, i0=1000, a1=50, i1=2000), dict(a0=190, i0=1010, a1=50, i1=2100)])

    def sleep(_):  # the second read sees the counters after the interval
        stat.write_text(STAT.format(a=0, b=0, c=0, **next(reads)))

    sleep(0)
    monkeypatch.setattr("mmtlab.cpu.time.sleep", sleep)
    monkeypatch.setattr("mmtlab.cpu._allowed_cpus", lambda: {0, 1})
    assert idle_cores(stat=str(stat)) == 1
    reads = iter([dict(a0=100, i0=1000, a1=50, i1=2000), dict(a0=190, i0=1010, a1=50, i1=2100)])
    sleep(0)
    monkeypatch.setattr("mmtlab.cpu._allowed_cpus", lambda: {0})  # taskset to the busy CPU
    assert idle_cores(stat=str(stat)) == 0
    assert idle_cores(stat=str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    "free, user, expected_wait, expected_threads",
    [
        (2, {}, None, None),  # quiet: OpenMP's defaults, every core, spinning
        (1, {}, "PASSIVE", "1"),  # one core busy: one thread, sleeping at once
        (0, {}, "PASSIVE", "1"),  # every core busy: still one thread
        (None, {}, "PASSIVE", None),  # the machine cannot be read: as before the probe
        (1, {"OMP_NUM_THREADS": "2"}, "PASSIVE", "2"),  # the user's thread count is kept
        (1, {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE", "1"),  # and the user's wait policy
        (2, {"OMP_NUM_THREADS": "4"}, "PASSIVE", "4"),  # more threads than idle cores: they must not spin
    ],
)
def test_the_probe_chooses_threads_and_wait_from_the_idle_cores(monkeypatch, free, user, expected_wait,
                                                                expected_threads):  # fmt: skip
    for name in (*WAIT_VARIABLES, "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "")  # so that monkeypatch restores the variable as it was
        monkeypatch.delenv(name)
    for name, value in user.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("mmtlab.cpu.available_cores", lambda: 2)
    monkeypatch.setattr("mmtlab.cpu.idle_cores", lambda: free)
    before = torch.get_num_threads()
    try:
        apply_cpu_policy(probe=True)
        assert os.environ.get("OMP_WAIT_POLICY") == expected_wait
        assert os.environ.get("OMP_NUM_THREADS") == expected_threads
    finally:
        torch.set_num_threads(before)


def test_one_thread_asked_for_needs_no_probe(monkeypatch):
    monkeypatch.setattr("mmtlab.cpu.idle_cores", lambda: pytest.fail("probed"))
    for name in WAIT_VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    apply_cpu_policy(probe=True)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
