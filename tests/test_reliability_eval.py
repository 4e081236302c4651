"""Reliability of `mmtlab eval retrieval` (issue 16): ``--out`` is checked before any work and never overwrites a
file that is not a results file; a damaged score chunk is named with the way out (--fresh)."""

from __future__ import annotations

import json

import pytest
import torch

from cli_faults import Payload, one_line_error
from mmtlab.cli import main
from mmtlab.config import save_yaml
from mmtlab.data.synth import synthesize
from mmtlab.eval import retrieval
from mmtlab.model import build_from_config
from mmtlab.train.checkpoint import save_weights
from mmtlab.train.config import make_run_config

FEAT = 32


@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data") / "flickr", style="flickr", n=6, seed=0, feat_dim=FEAT)


@pytest.fixture()
def run(tmp_path):
    """A finished run directory with random weights, without training."""
    cfg = make_run_config(
        "merged", "itm", scale="tiny", overrides={"model.feat_dim": FEAT, "model.width": 32, "model.heads": 2}
    )
    path = tmp_path / "run"
    path.mkdir()
    save_yaml(cfg, path / "config.yaml")
    torch.manual_seed(0)
    save_weights(build_from_config(cfg.model), path / "model.safetensors")
    return path


def evaluate(run, flickr, out, *extra) -> int:
    return main(
        ["eval", "retrieval", "--run", str(run), "--data", str(flickr), "--out", str(out), "--no-progress", *extra]
    )


@pytest.mark.parametrize("target,message", [
    ("config.yaml", "exists and is not an mmtlab results file"),
    ("model.safetensors", "exists and is not an mmtlab results file"),
    (".", "is a directory"),
])  # fmt: skip
def test_out_never_overwrites_a_run_and_fails_before_any_work(run, flickr, monkeypatch, capsys, target, message):
    out = run / target
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    monkeypatch.setattr(retrieval, "evaluate_retrieval", lambda *a, **k: pytest.fail("scored before checking --out"))
    assert evaluate(run, flickr, out) == 2
    assert message in one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert not list(run.parent.glob("run.*"))  # no RUN.tmp, no RUN.scores


def test_a_results_file_is_overwritten_and_scores_dir_must_hold_chunks(run, flickr, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert evaluate(run, flickr, out) == 0
    assert evaluate(run, flickr, out, "--fresh") == 0  # an earlier results file is replaced
    assert json.loads(out.read_text())["scorer"] == "exhaustive"
    other = tmp_path / "o.json"
    (tmp_path / "o.json.scores").mkdir()
    (tmp_path / "o.json.scores" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert evaluate(run, flickr, other, "--fresh") == 2
    assert "does not hold score chunks" in one_line_error(capsys)
    assert (tmp_path / "o.json.scores" / "notes.txt").read_text() == "mine"


def test_a_truncated_score_chunk_is_named_with_fresh(run, flickr, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert evaluate(run, flickr, out) == 0
    chunk = sorted((tmp_path / "r.json.scores").glob("chunk_*.pt"))[0]
    chunk.write_bytes(chunk.read_bytes()[:50])
    capsys.readouterr()
    assert evaluate(run, flickr, out) == 2
    err = one_line_error(capsys)
    assert str(chunk) in err and "--fresh" in err
    assert evaluate(run, flickr, out, "--fresh") == 0


def test_a_pickle_payload_in_a_score_chunk_never_runs(run, flickr, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert evaluate(run, flickr, out) == 0
    marker = tmp_path / "ran"
    chunk = sorted((tmp_path / "r.json.scores").glob("chunk_*.pt"))[0]
    torch.save({"captions": Payload(str(marker)), "scores": torch.zeros(1)}, chunk)
    capsys.readouterr()
    assert evaluate(run, flickr, out) == 2
    assert "damaged score chunk" in one_line_error(capsys) and not marker.exists()
