"""Studies: grids are checked before anything trains; reports and verdicts follow from the records."""

from __future__ import annotations

import csv
import json

import pytest

from mmtlab.config import ConfigError
from mmtlab.study.grid import load_grid, parse_grid, shipped_grids
from mmtlab.study.report import markdown, verdict, write_csv


def _grid(**changes):
    raw = {
        "name": "t",
        "seeds": [0, 1],
        "eval": {"data": "test"},
        "datasets": {"coco": {"style": "coco", "n": 10}, "cc": {"style": "cc", "n": 10}, "test": {"style": "flickr", "n": 5}},
        "comparisons": {
            "attention": {"axis": "preset", "data": ["coco"], "preset": ["merged", "single-modality"], "loss": ["default"]},
            "losses": {"axis": "loss", "data": ["coco"], "preset": ["merged"], "loss": ["itm+mlm+mrm", "contrastive32"],
                       "extra": [{"data": "coco", "preset": "baseline"}]},
        },
        "claims": [
            {"text": "merged beats single", "better": {"comparison": "attention", "preset": "merged"},
             "worse": {"comparison": "attention", "preset": "single-modality"}},
            {"text": "contrastive no better", "kind": "not_better", "better": {"comparison": "losses", "loss": "contrastive32"},
             "worse": {"comparison": "losses", "loss": "itm+mlm+mrm"}},
        ],
    }  # fmt: skip
    raw.update(changes)
    return raw


def test_grid_expands_cells_once_per_seed_and_dedupes():
    grid = parse_grid(_grid())
    keys = [c.key for c in grid.cells]
    # merged/coco/itm+mlm+mrm appears in both comparisons but runs once per seed
    assert len(keys) == len(set(keys)) == 2 * 4
    assert "coco__baseline__contrastive1024__s1" in keys  # "default" resolves to the preset's loss set


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"comparisons": {"a": {"axis": "preset", "data": ["coco"], "preset": ["mergd"]}}}, r"unknown preset 'mergd'; valid presets: merged, "),
        ({"comparisons": {"a": {"axis": "loss", "data": ["coco"], "preset": ["merged"], "loss": ["itm+mln"]}}}, r"unknown loss set 'itm\+mln'; valid loss sets: default, itm\+mlm\+mrm"),
        ({"comparisons": {"a": {"axis": "data", "data": ["coc"], "preset": ["merged"]}}}, r"unknown dataset 'coc'; valid datasets: coco, cc, test"),
        ({"comparisons": {"a": {"axis": "colour", "data": ["coco"], "preset": ["merged"]}}}, r"axis 'colour'; valid axes: data, preset, loss"),
        ({"datasets": {"x": {"style": "instagram"}, "test": {"style": "flickr"}}}, r"unknown style 'instagram'; valid styles: .*coco"),
        ({"eval": {"data": "nope"}}, r"eval.data 'nope' must name"),
        ({"comparisons": {"a": {"axis": "data", "data": ["test"], "preset": ["merged"]}}}, r"is the evaluation set"),
        ({"claims": [{"better": {"comparison": "zzz"}, "worse": {"comparison": "attention"}}]}, r"claims\[0\].better.comparison 'zzz'"),
        ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
    ],
)
def test_bad_grids_fail_before_training_with_the_valid_names(change, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_grid(_grid(**change))


def test_shipped_grids_parse():
    assert {"paper-small", "paper", "demo", "demo-quick"} <= set(shipped_grids())
    small = load_grid("paper-small")
    assert {c.name for c in small.comparisons} == {"data", "attention", "losses"}
    assert len(small.claims) == 4
    assert load_grid("demo", seeds=[3, 4]).seeds == [3, 4]
    with pytest.raises(ConfigError, match="unknown study 'paper-big'; valid studies: demo, demo-quick, paper, paper-small"):
        load_grid("paper-big")


def _records(grid, r1):
    """Fake finished cells: text->image R@1 = r1[(preset or loss)][seed]."""
    records = {}
    for c in grid.cells:
        value = r1[c.preset if c.preset != "merged" or c.loss == "itm+mlm+mrm" else c.loss][c.seed]
        res = {d: {"R@1": value, "R@5": value + 10, "R@10": value + 20, "median_rank": 3.0, "mean_rank": 5.0}
               for d in ("text_to_image", "image_to_text")}  # fmt: skip
        records[c.key] = {**c.__dict__, "key": c.key, "train_seconds": 1.0, "eval_seconds": 1.0, "train_samples_per_s": 100.0,
                          "results": {**res, "n_images": 5, "n_captions": 25, "scorer": "exhaustive"}}  # fmt: skip
    return records


def test_verdicts_use_the_seed_spread():
    grid = parse_grid(_grid())
    recs = _records(grid, {"merged": [40, 44], "single-modality": [10, 12], "contrastive32": [43, 47], "baseline": [5, 5]})
    v = verdict(grid, recs, grid.claims[0])
    assert v["supported"] and v["difference"] == pytest.approx(31.0)
    # std of [40, 44] = 2.83 -> margin 5.66; contrastive beats by 3 points only: "does not beat" holds
    v = verdict(grid, recs, grid.claims[1])
    assert v["supported"] and v["margin"] == pytest.approx(2 * 2 ** 1.5)
    recs = _records(grid, {"merged": [40, 40], "single-modality": [39.5, 39.5], "contrastive32": [60, 61], "baseline": [5, 5]})
    assert not verdict(grid, recs, grid.claims[0])["supported"]  # 0.5 points < the 1-point floor
    assert not verdict(grid, recs, grid.claims[1])["supported"]  # contrastive clearly beats classification


def test_report_tables_and_csv(tmp_path):
    grid = parse_grid(_grid(overrides={"train.steps": 400, "loss.weights.itc": 0.5}))
    recs = _records(grid, {"merged": [40, 44], "single-modality": [10, 12], "contrastive32": [43, 47], "baseline": [5, 5]})
    md = markdown(grid, recs)
    assert "## attention (varying preset)" in md and "## losses (varying loss)" in md
    assert "Settings of every cell: `train.steps=400`, `loss.weights.itc=0.5`." in md
    assert "| `coco` | `single-modality` | `itm+mlm+mrm` | 11.0 ± 1.4 |" in md
    assert "**merged beats single**: **supported**" in md and "Chance R@1: 20.0%" in md
    write_csv(recs, tmp_path / "results.csv")
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == len(grid.cells) and float(rows[0]["text_to_image/R@1"]) in (40.0, 44.0)


def test_report_plots(tmp_path):
    from mmtlab.study.report import plot

    grid = parse_grid(_grid())
    recs = _records(grid, {"merged": [40, 44], "single-modality": [10, 12], "contrastive32": [43, 47], "baseline": [5, 5]})
    paths = plot(grid, recs, tmp_path)
    assert [p.name for p in paths] == ["attention.png", "losses.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_study_cli_rejects_unknown_names_before_training(tmp_path, capsys):
    from mmtlab.cli import main

    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps(_grid(comparisons={"a": {"axis": "preset", "data": ["coco"], "preset": ["merged", "nope"]}})))
    assert main(["study", "--grid", str(grid), "--out", str(tmp_path / "out")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_claims_let_processes_share_a_study(tmp_path):
    import subprocess
    import sys

    from mmtlab.study.runner import _claim

    lock = tmp_path / "cell" / "lock"
    with _claim(lock) as first:
        assert first and lock.read_text().isdigit()
        with _claim(lock) as second:
            assert not second  # held by a live process (us)
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    lock.write_text(dead)  # a lock left by a process that died
    with _claim(lock) as taken:
        assert taken


def test_demo_quick_runs_the_whole_pipeline_and_resumes(tmp_path, capsys):
    """`mmtlab demo --quick`: data -> pretraining of two presets -> zero-shot retrieval -> report and plot."""
    from mmtlab.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    md = (out / "results.md").read_text()
    assert "| `coco` | `merged` | `itm` |" in md and "| `coco` | `single-modality` | `itm` |" in md
    assert "merged attention beats modality-specific attention" in md and md in printed
    assert (out / "attention.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["preset"] for r in rows} == {"merged", "single-modality"}
    for path in out.glob("cells/*/record.json"):
        rec = json.loads(path.read_text())
        res = rec["results"]
        assert res["protocol"] == "zero-shot" and res["n_images"] == 30 and res["n_captions"] == 150
        assert 0.0 <= res["text_to_image"]["R@1"] <= res["text_to_image"]["R@5"] <= res["text_to_image"]["R@10"] <= 100.0
        assert (path.parent / "run" / "model.safetensors").exists() and (path.parent / "run" / "config.yaml").exists()
    # a second run finds every cell finished and only regenerates the report
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("done, skipped") == 2
