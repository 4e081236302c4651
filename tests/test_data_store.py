"""The store: writer/reader round trip, views, atomic writes, errors, lazy memory-mapped access."""

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mmtlab.data import DataError, StoreWriter, open_store


def write_small(path, n_images=3, feat_dim=4, with_pixels=True):
    """Image i has i + 1 regions with features = i + region / 10, two captions ('img i cap j'); image 2 is 'test'."""
    with StoreWriter(
        path, feat_dim, n_classes=3, pixels_shape=(3, 2, 2) if with_pixels else None, meta={"style": "unit"}
    ) as w:
        for i in range(n_images):
            r = i + 1
            feats = i + np.arange(r)[:, None] / 10 + np.zeros((r, feat_dim))
            boxes = np.tile([0.0, 0.0, 0.5, 0.25], (r, 1))
            cls = np.tile(np.eye(3)[i % 3], (r, 1))
            pixels = np.full((3, 2, 2), i, np.uint8) if with_pixels else None
            idx = w.add_image(feats, boxes, cls, pixels, split="test" if i == 2 else "train", key=f"k{i}")
            for j in range(2):
                w.add_caption(idx, f"img {i}\ncap  {j} ")
    return path


def test_round_trip(tmp_path):
    s = open_store(write_small(tmp_path / "s"))
    assert s.meta["n_images"] == 3 and s.meta["n_captions"] == 6 and len(s) == 6
    assert s.meta["feat_dim"] == 4 and s.meta["n_classes"] == 3 and s.meta["style"] == "unit"
    assert s.meta["splits"] == {"train": 2, "test": 1}
    assert s.captions[3] == "img 1 cap 1"  # whitespace collapsed
    assert list(s.caption_image) == [0, 0, 1, 1, 2, 2]
    im = s.image(1)
    assert im["feats"].dtype == np.float16 and im["feats"].shape == (2, 4)
    np.testing.assert_allclose(im["feats"][:, 0], [1.0, 1.1], atol=1e-3)
    np.testing.assert_allclose(im["boxes"][0], [0, 0, 0.5, 0.25, 0.125])  # area appended
    assert im["cls"].shape == (2, 3) and im["cls"][0, 1] == 1
    assert im["pixels"].shape == (3, 2, 2) and (im["pixels"] == 1).all()
    assert s.image_keys == ["k0", "k1", "k2"]


def test_split_view_is_local(tmp_path):
    s = open_store(write_small(tmp_path / "s"))
    test = s.split("test")
    assert test.n_images == 1 and len(test) == 2 and test.meta["n_images"] == 1 and test.meta["split"] == "test"
    assert list(test.caption_image) == [0, 0]
    assert test.captions[0] == "img 2 cap 0"
    assert test.image(0)["feats"].shape == (3, 4)
    assert test.image_keys == ["k2"]
    train = s.split("train")
    assert list(train.caption_image) == [0, 0, 1, 1] and train.captions[3] == "img 1 cap 1"
    with pytest.raises(IndexError):
        test.image(1)
    with pytest.raises(DataError, match="no split 'val'.*train \\(2 images\\), test \\(1 images\\)"):
        s.split("val")


def test_unclosed_or_failed_writer_leaves_no_store(tmp_path):
    w = StoreWriter(tmp_path / "s", 4)
    w.add_image(np.zeros((1, 4)), np.zeros((1, 4)))
    with pytest.raises(DataError, match="no such dataset directory"):
        open_store(tmp_path / "s")  # not renamed into place yet
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "t", 4) as w2:
            w2.add_image(np.zeros((1, 4)), np.zeros((1, 4)))
            raise RuntimeError("boom")
    assert not (tmp_path / "t").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".t.")] == []  # temp dir cleaned up


def test_failed_rewrite_keeps_the_old_store(tmp_path):
    write_small(tmp_path / "s")
    with pytest.raises(DataError):
        with StoreWriter(tmp_path / "s", 4) as w:
            w.add_image(np.zeros((1, 5)), np.zeros((1, 4)))  # wrong width
    assert open_store(tmp_path / "s").meta["n_images"] == 3


def test_writer_rejects_bad_input(tmp_path):
    w = StoreWriter(tmp_path / "s", 4, n_classes=2)
    with pytest.raises(DataError, match="feat_dim=4"):
        w.add_image(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(DataError, match="non-finite"):
        w.add_image(np.full((1, 4), np.nan), np.zeros((1, 4)))
    with pytest.raises(DataError, match="boxes of shape"):
        w.add_image(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(DataError, match="class scores"):
        w.add_image(np.zeros((2, 4)), np.zeros((2, 4)), cls=np.zeros((2, 3)))
    with pytest.raises(DataError, match="empty caption"):
        w.add_caption(w.add_image(np.zeros((1, 4)), np.zeros((1, 4))), "  \n ")
    with pytest.raises(DataError, match="3 images so far|1 images so far"):
        w.add_caption(5, "x")
    w.abort()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("mine")
    with pytest.raises(DataError, match="not an mmtlab store"):
        StoreWriter(tmp_path / "other", 4)


def test_open_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: no such dataset directory"):
        open_store(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no meta.json"):
        open_store(tmp_path / "empty")
    s = write_small(tmp_path / "s")
    (s / "feats.f16").write_bytes(b"\0" * 10)  # truncated
    with pytest.raises(DataError, match="feats.f16: 10 bytes"):
        open_store(s).image(0)
    meta = json.loads((s / "meta.json").read_text())
    (s / "meta.json").write_text(json.dumps(meta | {"version": 99}))
    with pytest.raises(DataError, match="version 99"):
        open_store(s)


def test_deterministic_bytes(tmp_path):
    a, b = write_small(tmp_path / "a"), write_small(tmp_path / "b")
    for f in sorted(p.name for p in a.iterdir()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_pickle_reopens_lazily(tmp_path):
    s = open_store(write_small(tmp_path / "s")).split("train")
    s.image(0)  # opens memmaps
    s2 = pickle.loads(pickle.dumps(s))
    assert s2._mm == {}
    np.testing.assert_array_equal(s2.image(1)["feats"], s.image(1)["feats"])
    assert s2.captions[2] == s.captions[2]


def test_large_store_opens_fast_and_reads_lazily(tmp_path):
    """100,000 images x 36 regions x 256-d fp16 (1.8 GB of features): open < 1 s, random reads touch only
    what they read (peak RSS of a fresh process far below the store size)."""
    n, r, f = 100_000, 36, 256
    path = tmp_path / "big"
    path.mkdir()
    # The writer's layout, produced without writing 1.8 GB: the feature file is sparse.
    with open(path / "feats.f16", "wb") as fh:
        fh.truncate(n * r * f * 2)
    with open(path / "boxes.f32", "wb") as fh:
        fh.truncate(n * r * 5 * 4)
    np.arange(0, (n + 1) * r, r, dtype="<i8").tofile(path / "region_offsets.i64")
    np.zeros(n, np.uint8).tofile(path / "image_split.u8")
    (path / "image_keys.txt").write_text("\n" * n)
    caps = b"".join(b"cap %06d" % i for i in range(n))
    (path / "captions.utf8").write_bytes(caps)
    np.arange(0, len(caps) + 1, 10, dtype="<i8").tofile(path / "caption_offsets.i64")
    np.arange(n, dtype="<i8").tofile(path / "caption_image.i64")
    meta = {"format": "mmtlab-store", "version": 1, "feat_dim": f, "n_classes": None, "pixels_shape": None, "n_images": n,
            "n_captions": n, "n_regions": n * r, "split_names": ["train"], "splits": {"train": n}, "style": None}  # fmt: skip
    (path / "meta.json").write_text(json.dumps(meta))
    script = textwrap.dedent(f"""
        import resource, time, numpy as np
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        from mmtlab.data.store import open_store
        t = time.perf_counter(); s = open_store({str(path)!r}); t_open = time.perf_counter() - t
        rng = np.random.default_rng(0)
        for i in rng.integers(0, {n}, 200):
            im = s.image(int(i)); assert im["feats"].shape == ({r}, {f}); assert s.captions[int(i)] == "cap %06d" % i
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(t_open, (peak - base) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    t_open, rss_mb = float(out[0]), float(out[1])
    store_mb = n * r * f * 2 / 2**20
    assert t_open < 1.0
    assert rss_mb < store_mb / 20, (rss_mb, store_mb)  # 200 random images: ~4 MB of features read
