"""Training speed beside busy cores, per CPU threading policy (issue 18; docs/performance.md).

For each condition (quiet, one core busy, every core busy: plain Python loops started by this script) runs the
same short `mmtlab train --preset merged --loss itm+mlm --scale tiny` under each policy, the policies alternating
within a condition:

* ``torch default``: one thread per core with libgomp's default wait (spin 300,000 times before sleeping), i.e.
  mmtlab before any policy; reproduced with ``GOMP_SPINCOUNT=300000`` (libgomp's value when nothing is set) and
  ``OMP_NUM_THREADS`` = the cores, which mmtlab leaves alone as a user's choice;
* ``passive, every core``: one thread per core, ``OMP_WAIT_POLICY=PASSIVE`` (mmtlab's policy of sessions 7-13);
* ``mmtlab default``: nothing set: mmtlab looks at the machine (``mmtlab.cpu``: every core idle -> OpenMP's
  defaults; some busy -> one sleeping thread per idle core);
* ``--threads 1``.

samples/s is the mean of the run's ``metrics.jsonl`` windows after the first (warm-up); a run still going after
``--limit`` seconds is stopped and judged on the windows it logged. Prints a Markdown table with the ratios
of mmtlab's default to torch's default and to one thread, in the same condition. Not a test:

    OMP_NUM_THREADS= python scripts/cpu_policy_bench.py --steps 20
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mmtlab.cpu import WAIT_VARIABLES, available_cores
from mmtlab.train.metrics import mean_throughput

CORES = str(available_cores())
POLICIES = {
    "torch default": ({"GOMP_SPINCOUNT": "300000", "OMP_NUM_THREADS": CORES}, []),
    "passive, every core": ({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": CORES}, []),
    "mmtlab default": ({}, []),
    "--threads 1": ({}, ["--threads", "1"]),
}


@contextlib.contextmanager
def busy_cores(n: int):
    """``n`` processes spinning in a Python loop (each keeps one core busy) for the duration of the block."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in loops:
            p.kill()
            p.wait()


def train_speed(data: Path, run: Path, policy: str, steps: int, batch: int, limit: float) -> float | None:
    """samples/s of one short training run under ``policy`` (None when it logged no window after the first)."""
    env_extra, args = POLICIES[policy]
    env = {k: v for k, v in os.environ.items() if k not in (*WAIT_VARIABLES, "OMP_NUM_THREADS")} | env_extra
    cmd = [sys.executable, "-m", "mmtlab.cli", "train", "--preset", "merged", "--loss", "itm+mlm", "--scale", "tiny",
           "--data", str(data), "--out", str(run), *args, f"train.steps={steps}", f"train.batch_size={batch}",
           f"train.log_every={max(1, steps // 5)}", "train.progress=false", f"train.ckpt_every={steps}"]  # fmt: skip
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, timeout=limit, check=False)
    return mean_throughput(run, skip=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--limit", type=float, default=150.0, help="seconds before a run is stopped")
    args = parser.parse_args()
    cores = available_cores()
    conditions = {"quiet": 0, "one core busy": 1, f"all {cores} cores busy": cores}
    speeds: dict[tuple[str, str], float | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "coco"
        subprocess.run([sys.executable, "-m", "mmtlab.cli", "data", "synth", "--style", "coco", "--n", "200",
                        "--out", str(data)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        for condition, n_busy in conditions.items():
            with busy_cores(n_busy):
                for policy in POLICIES:
                    run = Path(tmp) / f"{n_busy}-{policy.replace(' ', '_')}"
                    speeds[condition, policy] = train_speed(data, run, policy, args.steps, args.batch, args.limit)
                    print(f"{condition:>16} | {policy:<14} | {speeds[condition, policy]}", file=sys.stderr)
    print(table(speeds, conditions))


def table(speeds: dict, conditions: dict) -> str:
    """The Markdown table: samples/s per condition and policy, and mmtlab's default against torch's default and
    against one thread."""
    lines = ["| machine | " + " | ".join(POLICIES) + " | mmtlab / torch default | mmtlab / `--threads 1` |",
             "|---" * (len(POLICIES) + 3) + "|"]  # fmt: skip
    for condition in conditions:
        cells = [_number(speeds[condition, p]) for p in POLICIES]
        ours = speeds[condition, "mmtlab default"]
        cells += [_ratio(ours, speeds[condition, "torch default"]), _ratio(ours, speeds[condition, "--threads 1"])]
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


if __name__ == "__main__":
    main()
