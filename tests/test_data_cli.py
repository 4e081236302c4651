"""`mmtlab data synth | import | stats` through the real command line."""

import json
from pathlib import Path

from mmtlab.cli import main
from mmtlab.data import open_store

FIX = Path(__file__).parent / "fixtures" / "data"


def test_synth_then_stats(tmp_path, capsys):
    assert (
        main(
            ["data", "synth", "--style", "flickr", "--n", "12", "--seed", "3", "--out", str(tmp_path / "fl"), "--quiet"]
        )
        == 0
    )
    assert "12 images, 60 captions, split test" in capsys.readouterr().out
    s = open_store(tmp_path / "fl")
    assert s.meta["seed"] == 3 and s.meta["splits"] == {"test": 12}
    assert main(["data", "stats", str(tmp_path / "fl"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["pairs"] == 60 and st["images"] == 12 and st["captions_per_image"] == {"mean": 5.0, "min": 5, "max": 5}
    assert st["overlap_with_reference"]["word_types"] == 100.0  # flickr against a fresh flickr sample
    assert main(["data", "stats", str(tmp_path / "fl"), "--ref", str(tmp_path / "fl")]) == 0
    out = capsys.readouterr().out
    assert "pairs 60" in out and "whole captions 100.0%" in out


def test_import_reports_skips(tmp_path, capsys):
    args = ["data", "import", "--format", "coco", "--annotations", str(FIX / "captions_val2014.json"),
            "--features", str(FIX / "feats_npz"), "--out", str(tmp_path / "c"), "--max-bad-fraction", "0.5", "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "5 images, 10 captions" in out and "skipped: 2 caption records, 1 feature records" in out
    assert "annotation #10: unknown image_id" in out and "444.npz: non-finite feature values" in out


def test_user_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing: no such dataset directory" in err
    args = ["data", "import", "--format", "narratives", "--annotations", str(FIX / "narratives.jsonl"),
            "--features", str(FIX / "feats.h5"), "--out", str(tmp_path / "n"), "--quiet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "2 of 7 records are malformed" in err and "line 3: bad JSON" in err
    assert not (tmp_path / "n").exists()
    assert main(["data", "synth", "--style", "coco", "--noise", "2", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--noise 2.0: must be a fraction" in capsys.readouterr().err
