"""`mmtlab data split`: a seeded train/test split of an existing store by image, features not copied; seeded
image subsamples; the pixel path's error naming the store."""

import json
import os

import numpy as np
import pytest

from mmtlab.cli import main
from mmtlab.data.store import DataError, open_store, seeded_sample, split_store
from mmtlab.data.synth import synthesize


@pytest.fixture
def coco(tmp_path):
    return synthesize(tmp_path / "coco", style="coco", n=20, seed=0, feat_dim=8, split="train")


def test_split_is_seeded_by_image_and_links_the_features(coco):
    before = open_store(coco)
    feats_inode = os.stat(coco / "feats.f16").st_ino
    summary = split_store(coco, test_fraction=0.25, seed=3)
    store = open_store(coco)
    assert store.meta["splits"] == {"train": 15, "test": 5} == summary["images"] and summary["copied_files"] == []
    assert store.meta["resplit"]["seed"] == 3 and store.meta["resplit"]["previous_splits"] == {"train": 20}
    assert os.stat(coco / "feats.f16").st_ino == feats_inode  # the same file: nothing copied
    np.testing.assert_array_equal(store.image(7)["feats"], before.image(7)["feats"])
    test, train = store.split("test"), store.split("train")
    assert len(test) + len(train) == len(store) == summary["captions"]["train"] + summary["captions"]["test"]
    ids = np.asarray(store._arr("image_split.u8"))
    cap_img = np.asarray(store._arr("caption_image.i64"))
    assert (ids[cap_img[test._caption_ids]] == 1).all()  # every caption goes with its image
    np.testing.assert_array_equal(test._image_ids, seeded_sample(20, 5, 3))
    split_store(coco, test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(open_store(coco).split("test")._image_ids, test._image_ids)  # same seed, same split
    split_store(coco, test_fraction=0.25, seed=4)
    assert not np.array_equal(open_store(coco).split("test")._image_ids, test._image_ids)
    assert sorted(p.name for p in coco.parent.iterdir()) == ["coco"]  # no temporaries left


def test_split_to_another_directory_keeps_the_original(coco, tmp_path):
    split_store(coco, test_fraction=0.5, seed=0, names=("fit", "holdout"), out=tmp_path / "split")
    assert open_store(coco).meta["splits"] == {"train": 20}
    assert open_store(tmp_path / "split").meta["splits"] == {"fit": 10, "holdout": 10}
    with pytest.raises(DataError, match="leaves no train or no test image"):
        split_store(coco, test_fraction=0.01)
    with pytest.raises(DataError, match="two different"):
        split_store(coco, names=("a", "a"))


def test_cli_split_prints_the_counts_and_errors_are_one_line(coco, capsys):
    assert main(["data", "split", str(coco), "--test-fraction", "0.2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "train 16 images" in out and "test 4 images" in out and "features not copied" in out
    assert main(["data", "split", str(coco), "--test-fraction", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--test-fraction 1.5" in err and err.count("\n") == 1


def test_sample_images_keeps_all_captions_of_the_drawn_images(coco):
    store = open_store(coco)
    view = store.sample_images(4, seed=1)
    assert view.n_images == 4 and len(view) == 4 * 5
    again = store.sample_images(4, seed=1)
    np.testing.assert_array_equal(view._image_ids, again._image_ids)
    assert list(view.captions) == list(again.captions)
    assert store.sample_images(50, seed=1) is store
    split_store(coco, test_fraction=0.5, seed=0)
    test = open_store(coco).split("test")
    sub = test.sample_images(3, seed=0)
    assert set(sub._image_ids) <= set(test._image_ids) and sub.caption_image.max() < 3


def test_pixel_path_errors_name_the_store_and_the_fix(coco):
    from mmtlab.data.collate import collate_images

    with pytest.raises(DataError) as e:
        collate_images(_region_only(coco), [0], with_pixels=True)
    assert str(coco) in str(e.value) and "--pixels 64" in str(e.value) and "model.image_input=regions" in str(e.value)


def _region_only(path):
    """The store with its pixels dropped from meta.json (a store of region features only)."""
    meta = json.loads((path / "meta.json").read_text())
    meta["pixels_shape"] = None
    (path / "meta.json").write_text(json.dumps(meta))
    (path / "pixels.u8").unlink()
    return open_store(path)


def test_captions_of_a_tsv_for_the_images_of_an_existing_store(tmp_path, capsys):
    from mmtlab.data.importer import import_captions
    from mmtlab.data.store import StoreWriter

    w = StoreWriter(tmp_path / "photos", feat_dim=4)
    for key in ("sub/cat.png", "dog.jpg", "bird.png"):
        w.add_caption(w.add_image(np.ones((2, 4), np.float32), np.tile([0, 0, 1, 1], (2, 1)), key=key), f"old {key}")
    w.close()
    feats_inode = os.stat(tmp_path / "photos" / "feats.f16").st_ino
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("image\tcaption\ncat.png\ta cat\nsub/cat.png\ta sleeping cat\ndog\ta dog\nfish.png\ta fish\n")
    with pytest.raises(
        DataError, match=r"1 of 4 records are malformed .*image fish: no image of .*photos has this key"
    ):
        import_captions(tmp_path / "photos", "csv", tsv)
    summary = import_captions(tmp_path / "photos", "csv", tsv, max_bad_fraction=0.5)
    store = open_store(tmp_path / "photos")
    assert list(store.captions) == ["a cat", "a sleeping cat", "a dog"] and list(store.caption_image) == [0, 0, 1]
    assert summary["images_without_captions"] == 1 and store.meta["captions_import"]["mode"] == "replace"
    assert os.stat(tmp_path / "photos" / "feats.f16").st_ino == feats_inode
    assert (
        main(
            [
                "data",
                "captions",
                str(tmp_path / "photos"),
                "--annotations",
                str(tsv),
                "--add",
                "--max-bad-fraction",
                "0.5",
                "--out",
                str(tmp_path / "more"),
            ]
        )
        == 0
    )
    assert "3 captions added, 6 in all" in capsys.readouterr().out
    assert len(open_store(tmp_path / "more")) == 6 and len(open_store(tmp_path / "photos")) == 3
