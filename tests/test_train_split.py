"""Training honours a store's split (``data.split``): after ``mmtlab data split`` the trainer reads only the
``train`` images, a store of one split is read whole, a bad value is a one-line error; the hold-out, mixtures and
resume keep working on split views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmtlab.cli import main
from mmtlab.config import ConfigError
from mmtlab.data.loader import build_train_loader, training_split
from mmtlab.data.store import open_store, split_store
from mmtlab.data.synth import synthesize
from mmtlab.train import load_run, make_run_config
from mmtlab.train.checkpoint import load_state
from mmtlab.train.trainer import training_stores

FEAT = 24
TINY = {"model.width": "32", "model.heads": "2", "model.ffn": "64", "train.progress": "false"}
TINY_ARGS = [f"{k}={v}" for k, v in TINY.items()]


@pytest.fixture
def split_coco(tmp_path) -> Path:
    """A 50-image store split by `mmtlab data split` into 40 train and 10 test images."""
    path = tmp_path / "coco"
    synthesize(path, style="coco", n=50, seed=0, feat_dim=FEAT)
    split_store(path, test_fraction=0.2, seed=0)
    return path


def train_images(path: Path) -> set[int]:
    store = open_store(path)
    split = np.asarray(store._arr("image_split.u8"))
    return set(np.flatnonzero(split == store.meta["split_names"].index("train")).tolist())


def drawn_images(stores, batches: int = 30) -> list[set[int]]:
    """The global image ids each store yields through the trainer's loader."""
    loader = build_train_loader(stores, batch_size=16, seed=0)
    seen: list[set[int]] = [set() for _ in stores]
    for _ in range(batches):
        b = next(loader)
        for d, i in zip(b["dataset_index"].tolist(), b["image_index"].tolist()):
            seen[d].add(stores[d].global_image(i))
    return seen


def cfg_for(dirs, **overrides):
    return make_run_config(
        "vilbert-2block", scale="tiny", data_dirs=[str(d) for d in dirs], overrides={**TINY, **overrides}
    )


def test_a_split_store_trains_only_on_its_train_images(split_coco):
    stores, val, line = training_stores(cfg_for([split_coco]))
    assert val is None and stores[0].n_images == 40
    seen = drawn_images(stores)[0]
    assert seen <= train_images(split_coco) and len(seen) > 30  # 480 draws over 40 images: most of them
    assert "40 of 50 images (split train)" in line and "data.split=auto" in line
    whole = training_stores(cfg_for([split_coco], **{"data.split": "all"}))[0][0]
    assert whole.n_images == 50 and drawn_images([whole])[0] - train_images(split_coco)  # test images too
    test = training_stores(cfg_for([split_coco], **{"data.split": "test"}))[0][0]
    assert test.n_images == 10 and not drawn_images([test])[0] & train_images(split_coco)


def test_a_single_split_store_is_read_whole_whatever_its_name(tmp_path):
    for style, split in (("coco", "train"), ("flickr", "test")):
        path = synthesize(tmp_path / style, style=style, n=12, seed=0, feat_dim=FEAT)
        store = open_store(path)
        view, what = training_split(store, "auto")
        assert view is store and what == f"all 12 images (split {split})"
        assert drawn_images([view], batches=10)[0] == set(range(12))


def test_bad_split_values_are_one_line_errors(split_coco, tmp_path, capsys):
    with pytest.raises(ConfigError, match="data.split"):
        cfg_for([split_coco], **{"data.split": " "})
    base = ["train", "--scale", "tiny", "--data", str(split_coco), "--out", str(tmp_path / "r"), *TINY_ARGS]
    code = main([*base, "data.split=tset"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "no split 'tset'" in err and "train (40 images), test (10 images)" in err and "auto, all" in err
    assert not (tmp_path / "r").exists()
    # several splits and none called train: auto cannot guess
    other = tmp_path / "valtest"
    synthesize(other, style="coco", n=10, seed=1, feat_dim=FEAT)
    split_store(other, test_fraction=0.5, names=("val", "test"))
    with pytest.raises(ConfigError, match="none named 'train'.*val \\(5 images\\)"):
        training_stores(cfg_for([other]))


def test_hold_out_and_mixtures_on_split_views(split_coco, tmp_path):
    stores, val, line = training_stores(cfg_for([split_coco], **{"train.holdout_images": "5"}))
    train = sorted(train_images(split_coco))
    assert [stores[0].global_image(i) for i in range(stores[0].n_images)] == train[:-5]
    assert [val.global_image(i) for i in range(val.n_images)] == train[-5:]
    assert set(val.captions) == {c for i in train[-5:] for c in open_store(split_coco).subset([i]).captions}
    assert "the last 5 held out" in line and "35 trained on" in line
    synth = synthesize(tmp_path / "cc", style="cc", n=20, seed=2, feat_dim=FEAT)
    stores, _, line = training_stores(cfg_for([split_coco, synth], **{"data.sampling": "dataset"}))
    assert [s.n_images for s in stores] == [40, 20] and "all 20 images (split train)" in line
    seen = drawn_images(stores)
    assert seen[0] <= set(train) and seen[1] <= set(range(20))


def test_cli_prints_the_line_records_the_key_and_resumes(split_coco, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--preset", "vilbert-2block", "--scale", "tiny", "--data", str(split_coco), *TINY_ARGS]
    assert main([*args, "train.steps=2", "train.batch_size=4", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "training images (data.split=auto): " in out and "40 of 50 images (split train)" in out
    assert load_run(run)[1].data.split == "auto" and "split: auto" in (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "train.steps=3"]) == 0
    assert load_state(run / "checkpoint")["step"] == 3 and "40 of 50" in capsys.readouterr().out
    code = main(["train", "--resume", str(run), "data.split=all"])
    assert code == 2 and "cannot resume" in capsys.readouterr().err
    # fine-tuning reads the --split of a store holding several (it used to refuse such a store)
    ft = tmp_path / "ft"
    code = main(["finetune", "retrieval", "--run", str(run), "--data", str(split_coco), "--out", str(ft),
                 "train.steps=1", "train.batch_size=4", "train.progress=false"])  # fmt: skip
    assert code == 0 and "40 of 50 images (split train)" in capsys.readouterr().out
    assert load_run(ft)[1].data.split == "train"
