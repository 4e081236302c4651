"""`mmtlab study --jobs N`: cells in parallel worker processes give the serial run's results, and a killed
study resumes with the same command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from mmtlab.study.grid import parse_grid
from mmtlab.study.runner import _claim, run_study

GRID = {
    "scale": "tiny", "data": ["coco"], "attention": ["merged", "single-modality"], "loss": ["itm"], "seeds": [0],
    "datasets": {"coco": {"style": "coco", "n": 20}, "test": {"style": "flickr", "n": 6},
                 "held": {"style": "coco", "n": 5, "split": "test"}},
    "eval": {"data": "test", "also": ["held"]},  # held-out coco-style images, scored beside the test set
    "overrides": {"model.width": 32, "model.heads": 2, "model.ffn": 64, "train.steps": 4, "train.batch_size": 4,
                  "train.log_every": 1},
}  # fmt: skip


@pytest.fixture
def one_thread():
    """The serial run in this process with one torch thread, as each job has with ``threads=1``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _losses(root, key):
    lines = (root / "cells" / key / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def test_jobs_give_the_records_of_a_serial_run(tmp_path, one_thread):
    grid = parse_grid(GRID)
    serial = run_study(grid, tmp_path / "serial", progress=False, log=lambda s: None)
    lines = []
    parallel = run_study(grid, tmp_path / "jobs", progress=False, log=lines.append, jobs=2, threads=1)
    assert sorted(parallel) == sorted(serial) == sorted(c.key for c in grid.cells)
    for key, rec in parallel.items():
        for direction in ("text_to_image", "image_to_text"):
            assert rec["results"][direction] == serial[key]["results"][direction], key
            assert rec["also"]["held"][direction] == serial[key]["also"]["held"][direction], key
        assert (rec["results"]["n_images"], rec["also"]["held"]["n_images"]) == (6, 5)
        assert not list((tmp_path / "jobs" / "cells" / key).glob("*.scores"))  # score chunks removed
        assert _losses(tmp_path / "jobs", key) == _losses(tmp_path / "serial", key)
    # the jobs generated the data and ran the cells; one display line per event, naming the job
    assert sum("generating dataset" in line and "(job " in line for line in lines) == 3
    assert sum("training + evaluation  (job " in line for line in lines) == 2
    assert sum(", on held " in line for line in lines) == 2  # each cell's line gives both R@1s
    assert "T→I R@1 on `held`" in (tmp_path / "jobs" / "results.md").read_text()
    # run again: every cell is finished, no job is started
    again = []
    run_study(grid, tmp_path / "jobs", progress=False, log=again.append, jobs=2)
    assert sum("done, skipped" in line for line in again) == 2 and not any("job" in line for line in again)


def test_a_held_out_set_added_later_is_scored_without_training_again(tmp_path, one_thread):
    """A finished study whose grid gains an ``eval.also`` set: the same command scores each finished cell on it
    (nothing retrained, the test set's results kept), then treats the cells as finished."""
    plain = {**GRID, "attention": ["merged"], "eval": {"data": "test"}}
    root = tmp_path / "s"
    (before,) = run_study(parse_grid(plain), root, progress=False, log=lambda s: None).values()
    assert before["also"] == {}
    model = root / "cells" / before["key"] / "run" / "model.safetensors"
    stamp = (model.stat().st_ino, model.stat().st_mtime_ns)
    lines = []
    (after,) = run_study(parse_grid({**plain, "eval": GRID["eval"]}), root, progress=False, log=lines.append).values()
    assert sum("evaluation on the new eval.also sets" in line for line in lines) == 1
    assert [line.split(":")[0] for line in lines if "generating dataset" in line] == ["generating dataset held"]
    assert after["also"]["held"]["n_images"] == 5 and after["results"] == before["results"]
    assert after["train_seconds"] == before["train_seconds"] and after["eval_seconds"] > before["eval_seconds"]
    assert (model.stat().st_ino, model.stat().st_mtime_ns) == stamp  # the model was not trained again
    assert "T→I R@1 on `held`" in (root / "results.md").read_text()
    again = []
    run_study(parse_grid({**plain, "eval": GRID["eval"]}), root, progress=False, log=again.append)
    assert sum("done, skipped" in line for line in again) == 1
    # a set listed after the model was deleted cannot be scored: the cell is reported so, not trained again
    model.unlink()
    more = {**plain, "datasets": {**GRID["datasets"], "held2": {"style": "coco", "n": 5, "split": "test", "seed": 3}},
            "eval": {"data": "test", "also": ["held", "held2"]}}  # fmt: skip
    last = []
    (kept,) = run_study(parse_grid(more), root, progress=False, log=last.append).values()
    assert any("model.safetensors deleted: not scored on held2" in line for line in last), last
    assert "held2" not in kept["also"] and not model.exists()
    assert "| — |" in (root / "results.md").read_text()


def _held(lock) -> bool:
    with _claim(lock) as mine:
        return not mine


def test_a_killed_jobs_study_resumes_with_the_same_command(tmp_path):
    grid = tmp_path / "grid.yaml"
    slow = {**GRID, "overrides": {**GRID["overrides"], "train.steps": 60, "train.ckpt_every": 2}}
    grid.write_text(yaml.safe_dump(slow))
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "mmtlab.cli", "study", "--grid", str(grid), "--out", str(out), "--jobs", "2",
           "--threads", "1", "--no-progress"]  # fmt: skip
    study = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("cells/*/run/checkpoint/meta.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(study.pid, signal.SIGKILL)  # no clean-up in the parent: the jobs must go with it
    study.wait()
    run = next(out.glob("cells/*/run/checkpoint/meta.json")).parent.parent
    locks = [r.parent / "lock" for r in out.glob("cells/*/run")]
    deadline = time.monotonic() + 30
    while any(_held(lock) for lock in locks) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_held(lock) for lock in locks), "a job outlived its killed parent"
    stepped = json.loads((run / "checkpoint" / "meta.json").read_text())["step"]
    assert 0 < stepped < 60 and not (out / "results.md").exists()
    (run / "kept").touch()  # a run started over would lose it

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resource_tracker" not in done.stderr, done.stderr  # the jobs exited cleanly: no leaked semaphores
    assert len(list(out.glob("cells/*/record.json"))) == 2 and (out / "results.md").exists()
    assert (run / "kept").exists()  # resumed from its checkpoint, not started over
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["step"] == 60


def test_a_failing_job_stops_the_study_with_one_line_naming_the_cell(tmp_path):
    from mmtlab.study.jobs import JobError

    grid = parse_grid({**GRID, "overrides": {**GRID["overrides"], "model.heads": 3}})  # 32 is not divisible by 3
    message = r"study job \d: coco__\S+__itm__s0: model.width=32 is not divisible by model.heads=3"
    with pytest.raises(JobError, match=message):
        run_study(grid, tmp_path / "s", progress=False, log=lambda s: None, jobs=2, threads=1)


def test_the_display_counts_a_cell_done_once_its_held_out_sets_are_scored(tmp_path):
    from mmtlab.study.jobs import Display

    grid = parse_grid(GRID)
    key = grid.cells[0].key
    cell = tmp_path / "cells" / key
    (cell / "run").mkdir(parents=True)
    (cell / "run" / "model.safetensors").touch()
    (cell / "record.json").write_text(json.dumps({"key": key, "also": {}}))  # finished before `held` was listed
    display = Display(grid, tmp_path, 2, live=False, status=True, log=lambda s: None)
    assert display._done() == 0 and display._cell_state(key)[0] == "evaluation"
    (cell / "record.json").write_text(json.dumps({"key": key, "also": {"held": {}}}))
    assert display._done() == 1 and display._cell_state(key)[0] == "done"
