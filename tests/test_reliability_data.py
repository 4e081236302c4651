"""Reliability of stores and imports (issue 16): replacing a store never deletes other files, a killed writer's
temporaries are cleaned up, damaged index arrays are refused at open, missing features count as bad records,
and the unused ``data.max_bad_fraction`` run setting is gone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_faults import one_line_error
from mmtlab.cli import main
from mmtlab.config import ConfigError
from mmtlab.data.config import DataConfig
from mmtlab.data.importer import import_dataset
from mmtlab.data.store import DataError, StoreWriter, open_store

FIX = Path(__file__).parent / "fixtures" / "data"


def write_store(path: Path, n_images: int = 3) -> Path:
    with StoreWriter(path, feat_dim=4) as w:
        for i in range(n_images):
            w.add_caption(w.add_image(np.ones((2, 4)), np.tile([0, 0, 1, 1], (2, 1)), key=str(i)), f"caption {i}")
    return path


def import_args(ann: Path, feats: Path, out: Path, *extra: str) -> list[str]:
    return ["data", "import", "--format", "karpathy", "--annotations", str(ann), "--features", str(feats),
            "--out", str(out), "--quiet", *extra]  # fmt: skip


# --------------------------------------------------------------------------- replacing a store
def test_import_into_a_store_holding_other_files_refuses_and_deletes_nothing(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(import_args(FIX / "karpathy.json", FIX / "feats.tsv", out, "--max-bad-fraction", "0.5")) == 0
    shutil.copy(FIX / "karpathy.json", out / "ann.json")
    shutil.copy(FIX / "feats.tsv", out / "feats.tsv")
    (out / "runs").mkdir()
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert main(import_args(out / "ann.json", out / "feats.tsv", out, "--max-bad-fraction", "0.5")) == 2
    err = one_line_error(capsys)
    assert "not part of the store (ann.json, feats.tsv, runs)" in err
    assert sorted(p.name for p in out.iterdir()) == before and open_store(out).meta["n_images"] == 5


def test_synth_never_replaces_a_checkpoint_or_a_foreign_directory(tmp_path, capsys):
    ckpt = tmp_path / "run" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text(json.dumps({"step": 3}))
    (ckpt / "state.pt").write_bytes(b"state")
    assert main(["data", "synth", "--style", "coco", "--n", "4", "--out", str(ckpt), "--quiet"]) == 2
    assert "is not an mmtlab store" in one_line_error(capsys)
    assert sorted(p.name for p in ckpt.iterdir()) == ["meta.json", "state.pt"]


def test_a_store_alone_is_replaced(tmp_path):
    write_store(tmp_path / "s", n_images=3)
    write_store(tmp_path / "s", n_images=2)
    assert open_store(tmp_path / "s").meta["n_images"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporaries left


# --------------------------------------------------------------------------- killed writers
def test_a_killed_writers_temporary_is_removed_by_the_next_writer(tmp_path):
    out = tmp_path / "s"
    script = (
        "import os, signal, numpy as np\n"
        "from mmtlab.data.store import StoreWriter\n"
        f"w = StoreWriter({str(out)!r}, feat_dim=4)\n"
        "w.add_image(np.ones((2, 4)), np.tile([0, 0, 1, 1], (2, 1)))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    (tmp_path / ".s.tmp-0a1b2c3d").mkdir()  # written by an mmtlab without pids in the names
    assert len(list(tmp_path.glob(".s.tmp-*"))) == 2
    live = StoreWriter(out, feat_dim=4)  # this process: alive, its temporary is kept by the next writer
    write_store(out)
    assert [p.name for p in tmp_path.glob(".s.*")] == [live.tmp.name]
    live.abort()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


# --------------------------------------------------------------------------- damaged index arrays
@pytest.mark.parametrize("file,values,message", [
    ("caption_image.i64", [0, 1, 999], "entry 2 is 999, outside the 3 images"),
    ("caption_image.i64", [0, -1, 2], "entry 1 is -1, outside the 3 images"),
    ("region_offsets.i64", [0, 2, 1, 6], "offsets do not rise from 0 to the 6 regions"),
    ("caption_offsets.i64", [0, 9, 18, 99], "offsets do not rise from 0 to the 27 caption bytes"),
])  # fmt: skip
def test_damaged_index_arrays_are_refused_at_open(tmp_path, capsys, file, values, message):
    path = write_store(tmp_path / "s")
    np.asarray(values, dtype="<i8").tofile(path / file)
    with pytest.raises(DataError, match=message):
        open_store(path)
    assert main(["data", "stats", str(path), "--ref-style", "none"]) == 2
    err = one_line_error(capsys)
    assert str(path / file) in err and "damaged" in err


def test_meta_without_its_keys_is_refused(tmp_path):
    path = write_store(tmp_path / "s")
    meta = json.loads((path / "meta.json").read_text())
    del meta["n_regions"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="missing n_regions"):
        open_store(path)


# --------------------------------------------------------------------------- missing features
def test_missing_features_count_against_max_bad_fraction(tmp_path, capsys):
    feats = tmp_path / "half.tsv"
    feats.write_text("".join((FIX / "feats.tsv").read_text().splitlines(keepends=True)[:2]))  # 2 of 5 images
    with pytest.raises(DataError, match=r"no features for 3 of 5 captioned images \(60.0% > the 50%"):
        import_dataset("karpathy", FIX / "karpathy.json", feats, tmp_path / "s", max_bad_fraction=0.5)
    assert not (tmp_path / "s").exists()
    assert main(import_args(FIX / "karpathy.json", feats, tmp_path / "s", "--max-bad-fraction", "0.6")) == 0
    assert "3 captioned images have no features" in capsys.readouterr().out


# --------------------------------------------------------------------------- data.max_bad_fraction
def test_data_max_bad_fraction_is_no_run_setting_but_old_configs_load(tmp_path):
    from mmtlab.train.config import load_run_config, make_run_config

    with pytest.raises(ConfigError, match="unknown key 'data.max_bad_fraction'"):
        make_run_config("merged", scale="tiny", overrides={"data.max_bad_fraction": "0.5"})
    assert "max_bad_fraction" not in DataConfig.__dataclass_fields__
    from mmtlab.config import save_yaml, to_dict

    old = to_dict(make_run_config("merged", scale="tiny"))
    old["data"]["max_bad_fraction"] = 0.01  # what runs written before the change hold
    save_yaml(old, tmp_path / "config.yaml")
    assert load_run_config(tmp_path).data == DataConfig()


def test_webdataset_members_never_leave_the_output(tmp_path):
    import io
    import tarfile

    shard = tmp_path / "in" / "shard.tar"
    shard.parent.mkdir()
    feats = io.BytesIO()
    np.savez(feats, features=np.ones((2, 4), np.float32), boxes=np.tile(np.float32([0, 0, 1, 1]), (2, 1)))
    with tarfile.open(shard, "w") as tar:
        for name, data in [
            ("../../evil.txt", b"a caption"),
            ("../../evil.npz", feats.getvalue()),
            ("/tmp/mmtlab-test-abs-evil.txt", b"x"),
            ("good.txt", b"a red ball"),
            ("good.npz", feats.getvalue()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    try:
        import_dataset("webdataset", shard, None, tmp_path / "out" / "s", max_bad_fraction=1.0)
    except DataError:
        pass  # refusing the shard is fine too; writing outside --out is not
    outside = {p for p in tmp_path.rglob("*") if "out" not in p.relative_to(tmp_path).parts[:1]}
    assert outside == {tmp_path / "in", shard} and not Path("/tmp/mmtlab-test-abs-evil.txt").exists()
