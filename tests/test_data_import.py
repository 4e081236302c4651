"""Readers of the real formats (fixtures in tests/fixtures/data, made by make_fixtures.py) and `data import`."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest

from mmtlab.config import ConfigError
from mmtlab.data import DataError, import_dataset, open_store
from mmtlab.data.features import FEATURE_READERS, FeatureWidth, Regions
from mmtlab.data.readers import CAPTION_READERS, BadRecords, norm_key

FIX = Path(__file__).parent / "fixtures" / "data"
IDS = ["391895", "522418", "184613", "318219", "554625"]
W, H = 640, 480


def read_captions(fmt, name):
    bad = BadRecords(FIX / name)
    return list(CAPTION_READERS[fmt](FIX / name, bad)), bad


@pytest.mark.parametrize(
    "fmt,name,n_good,bad_where",
    [
        ("karpathy", "karpathy.json", 10, ["image #1 sentence 2", "image #5"]),
        ("coco", "captions_val2014.json", 10, ["annotation #10", "annotation #11"]),
        ("cc", "cc.tsv", 5, ["line 6", "line 7"]),
        ("sbu", "sbu.tsv", 5, ["line 6", "line 7"]),
        ("vg", "region_descriptions.json", 10, ["image #2 region 2", "image #5"]),
        ("narratives", "narratives.jsonl", 5, ["line 3", "line 7"]),
        ("csv", "pairs.csv", 5, ["line 7", "line 8"]),
        ("jsonl", "pairs.jsonl", 5, ["line 6", "line 7"]),
        ("webdataset", "shard-000000.tar", 5, ["sample 666"]),
    ],
)
def test_caption_readers_skip_and_count(fmt, name, n_good, bad_where):
    recs, bad = read_captions(fmt, name)
    assert len(recs) == n_good
    assert [w for w, _ in bad.bad] == bad_where
    assert bad.total == n_good + len(bad_where)
    assert all(r.text and r.text == " ".join(r.text.split()) for r in recs)
    keys = {r.key for r in recs}
    if fmt == "cc":
        assert keys == {"0", "1", "2", "3", "4"}  # row index
    elif fmt == "sbu":
        assert keys == {f"{i}_abc" for i in IDS}  # URL file name
    else:
        assert keys == set(IDS)


def test_karpathy_splits_and_reasons():
    recs, bad = read_captions("karpathy", "karpathy.json")
    assert {r.key: r.split for r in recs} == dict(
        zip(IDS, ["train", "train", "val", "test", "test"])
    )  # restval -> train
    assert [r for _, r in bad.bad] == ["empty caption", "no 'sentences' list"]
    _, bad = read_captions("narratives", "narratives.jsonl")
    assert bad.bad[0][1].startswith("bad JSON")
    _, bad = read_captions("csv", "pairs.csv")
    assert bad.bad[0][1] == "4 fields, header has 3"


def test_norm_key():
    assert norm_key("COCO_val2014_000000391895.jpg") == norm_key(391895) == norm_key("000000391895") == "391895"
    assert norm_key("images/abc_1.png") == "abc_1" and norm_key("0") == "0"


@pytest.mark.parametrize("fmt,name,bad_where", [
    ("tsv", "feats.tsv", ["line 6", "line 7", "line 8"]),
    ("npz", "feats_npz", ["444.npz"]),
    ("hdf5", "feats.h5", ["group 555"]),
    ("webdataset", "shard-000000.tar", []),
])  # fmt: skip
def test_feature_readers(fmt, name, bad_where):
    bad = BadRecords(FIX / name)
    regs = {r.key: r for r in FEATURE_READERS[fmt](FIX / name, bad, FeatureWidth(FIX / name, None))}
    assert [w for w, _ in bad.bad] == bad_where
    assert set(IDS) <= set(regs)
    r = regs["391895"]
    assert r.feats.shape == (3, 8) and r.boxes.shape == (3, 4)
    assert (r.boxes >= 0).all() and (r.boxes <= 1).all()
    # the fixture's boxes are regions(391895) in pixels: normalised by the image size
    rng = np.random.default_rng(391895)
    x1, y1 = rng.uniform(0, W / 2, 3), rng.uniform(0, H / 2, 3)
    np.testing.assert_allclose(r.boxes[:, 0], x1 / W, rtol=1e-5)
    np.testing.assert_allclose(r.boxes[:, 1], y1 / H, rtol=1e-5)


def test_feature_reader_reasons():
    bad = BadRecords(FIX / "feats.tsv")
    list(FEATURE_READERS["tsv"](FIX / "feats.tsv", bad, FeatureWidth(FIX / "feats.tsv", None)))
    reasons = [r for _, r in bad.bad]
    assert reasons[0] == "non-finite feature values (NaN/inf)" and reasons[1] == "box outside the image"
    assert reasons[2].startswith("undecodable record")


def test_import_karpathy_tsv_split(tmp_path):
    out = import_dataset(
        "karpathy", FIX / "karpathy.json", FIX / "feats.tsv", tmp_path / "s", split="test", max_bad_fraction=0.5
    )
    s = open_store(out)
    assert s.meta["n_images"] == 2 and s.meta["n_captions"] == 4 and s.meta["splits"] == {"test": 2}
    assert s.image_keys == ["318219", "554625"]  # feature-file order
    assert s.captions[0] == "a photo number 0 of image 318219"
    assert s.meta["feat_dim"] == 8 and s.meta["n_classes"] is None and s.meta["style"] == "karpathy"
    rep = s.meta["import"]
    assert rep["captions"]["skipped"] == 2 and rep["features"]["skipped"] == 3
    assert rep["features"]["first_skipped"][0] == "line 6: non-finite feature values (NaN/inf)"


@pytest.mark.parametrize("fmt,ann,feats", [
    ("coco", "captions_val2014.json", "feats_npz"),
    ("narratives", "narratives.jsonl", "feats.h5"),
    ("csv", "pairs.csv", "feats_npz"),
    ("vg", "region_descriptions.json", "feats.tsv"),
    ("webdataset", "shard-000000.tar", None),
])  # fmt: skip
def test_import_formats(tmp_path, fmt, ann, feats):
    s = open_store(
        import_dataset(fmt, FIX / ann, None if feats is None else FIX / feats, tmp_path / "s", max_bad_fraction=0.5)
    )
    assert s.meta["n_images"] == 5 and s.meta["splits"] == {"train": 5} and set(s.image_keys) == set(IDS)
    assert len(s) == {"coco": 10, "narratives": 5, "csv": 5, "vg": 10, "webdataset": 5}[fmt]
    for c in range(len(s)):  # every caption sits with its own image
        assert f"image {s.image_keys[s.caption_image[c]]}" in s.captions[c]
    assert s.image(0)["feats"].shape == (3, 8)
    if feats == "feats.h5":
        assert s.meta["n_classes"] == 4 and s.image(0)["cls"].shape == (3, 4)


def test_bad_fraction_stops_the_import(tmp_path):
    with pytest.raises(DataError) as e:
        import_dataset("narratives", FIX / "narratives.jsonl", FIX / "feats_npz", tmp_path / "s")  # default 1%
    msg = str(e.value)
    assert "narratives.jsonl: 2 of 7 records are malformed (28.6% > the 1% allowed" in msg
    assert "line 3: bad JSON" in msg and "line 7: empty caption" in msg
    with pytest.raises(
        DataError, match=r"feats.tsv: 3 of 8 records .*line 6: non-finite.*line 7: box outside the image"
    ):
        import_dataset("coco", FIX / "captions_val2014.json", FIX / "feats.tsv", tmp_path / "s", max_bad_fraction=0.2)
    assert not (tmp_path / "s").exists() and list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_missing_files_and_wrong_width_name_the_file(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.json'}: not found \\(--annotations\\)"):
        import_dataset("karpathy", tmp_path / "nope.json", FIX / "feats.tsv", tmp_path / "s")
    with pytest.raises(DataError, match="feats.h5: not found \\(--features\\)"):
        import_dataset("karpathy", FIX / "karpathy.json", tmp_path / "feats.h5", tmp_path / "s")
    with pytest.raises(DataError, match="feats.tsv: line 1 has 8-d features, expected 2048"):
        import_dataset(
            "karpathy", FIX / "karpathy.json", FIX / "feats.tsv", tmp_path / "s", feat_dim=2048, max_bad_fraction=0.5
        )
    # a file whose widths change mid-way
    lines = (FIX / "feats.tsv").read_text().splitlines()[:2]
    f = base64.b64encode(np.zeros((3, 16), np.float32).tobytes()).decode()
    fields = lines[1].split("\t")
    lines[1] = "\t".join(fields[:5] + [f])
    (tmp_path / "mixed.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="mixed.tsv: line 2 has 16-d features, expected 8"):
        import_dataset("karpathy", FIX / "karpathy.json", tmp_path / "mixed.tsv", tmp_path / "s", max_bad_fraction=0.5)
    with pytest.raises(ConfigError, match="valid formats: karpathy, coco"):
        import_dataset("flickr", FIX / "karpathy.json", FIX / "feats.tsv", tmp_path / "s")
    with pytest.raises(ConfigError, match=r"--max-bad-fraction 1.5: must be in \[0, 1\]"):
        import_dataset("karpathy", FIX / "karpathy.json", FIX / "feats.tsv", tmp_path / "s", max_bad_fraction=1.5)
    with pytest.raises(ConfigError, match="--features is required"):
        import_dataset("karpathy", FIX / "karpathy.json", None, tmp_path / "s")
    (tmp_path / "broken.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="broken.tar: not a readable WebDataset shard"):
        import_dataset("webdataset", tmp_path / "broken.tar", None, tmp_path / "s")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        import_dataset("karpathy", tmp_path / "broken.json", FIX / "feats.tsv", tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_keys_that_do_not_match(tmp_path):
    with pytest.raises(
        DataError,
        match=r"no image of .*cc.tsv has features in .*feats.tsv: caption keys look like \['0', '1', '2'\], feature keys like \['391895'",
    ):
        import_dataset("cc", FIX / "cc.tsv", FIX / "feats.tsv", tmp_path / "s", max_bad_fraction=0.5)


def _regions(key: str, value: float, n_classes: int) -> Regions:
    """Two regions of 8-d features ``value``, whole-image boxes, a uniform class distribution."""
    boxes = np.tile(np.array([0, 0, 1, 1], np.float32), (2, 1))
    return Regions(key, np.full((2, 8), value, np.float32), boxes, np.full((2, n_classes), 1 / n_classes, np.float32))


def _stream(records: list[Regions]):
    """A feature reader (FEATURE_READERS' signature) that yields ``records``, each counted as a good record."""

    def read(path, bad, width):
        for r in records:
            bad.ok()
            yield r

    return read


def test_import_loop_keeps_the_first_features_of_an_image_and_stops_on_another_class_count(tmp_path, monkeypatch):
    """The per-image loop: features of an image without captions are passed over, a repeated image keeps its
    first features (the repeat counted as malformed); a class count that changes after the store was opened
    stops the import, and the opened store is removed."""
    records = [_regions(IDS[0], 1.0, 4), _regions("no-captions", 2.0, 4), _regions(IDS[0], 3.0, 4)]
    records += [_regions(k, 4.0, 4) for k in IDS[1:]]
    monkeypatch.setitem(FEATURE_READERS, "stream", _stream(records))
    ann, feats = FIX / "captions_val2014.json", FIX / "feats.tsv"
    out = import_dataset("coco", ann, feats, tmp_path / "s", features_format="stream", max_bad_fraction=0.5)
    s = open_store(out)
    assert s.image_keys == IDS and s.meta["n_classes"] == 4 and len(s) == 10
    assert (s.image(0)["feats"] == 1.0).all()  # the first features of the repeated image
    rep = s.meta["import"]
    assert rep["features_format"] == "stream" and rep["images_without_features"] == 0
    assert rep["features"]["records"] == 7 and rep["features"]["skipped"] == 1
    assert rep["features"]["first_skipped"] == [f"image {IDS[0]}: duplicate features for this image (kept the first)"]

    monkeypatch.setitem(FEATURE_READERS, "stream", _stream([_regions(IDS[0], 1.0, 4), _regions(IDS[1], 1.0, 3)]))
    with pytest.raises(DataError, match=f"feats.tsv: image {IDS[1]} has 3 class scores, earlier images 4"):
        import_dataset("coco", ann, feats, tmp_path / "t", features_format="stream", max_bad_fraction=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no store t, no temporary left


def test_npz_from_bottom_up_attention_pytorch(tmp_path):
    """extract_features.py of bottom-up-attention.pytorch saves x, bbox, num_bbox, image_h, image_w and a pickled
    `info` dict: read without unpickling anything, boxes normalised by the image size."""
    d = tmp_path / "npz"
    d.mkdir()
    feats = np.random.default_rng(0).random((4, 8), dtype=np.float32)
    bbox = np.array([[0, 0, 50, 40], [10, 10, 100, 80], [0, 20, 30, 60], [5, 5, 200, 100]], dtype=np.float32)
    info = {"objects_id": np.arange(4), "objects_conf": np.ones(4)}
    np.savez_compressed(d / "391895.npz", x=feats, bbox=bbox, num_bbox=4, image_h=100, image_w=200, info=info)
    bad = BadRecords(d)
    (r,) = FEATURE_READERS["npz"](d, bad, FeatureWidth(d, None))
    assert not bad.bad and r.key == "391895" and r.feats.shape == (4, 8)
    np.testing.assert_allclose(r.boxes[1], [10 / 200, 10 / 100, 100 / 200, 80 / 100], rtol=1e-6)


def test_webdataset_brace_patterns(tmp_path):
    """`--annotations 'shard-{000000..000001}.tar'` reads every shard the pattern names, as WebDataset does;
    a shard the pattern names but the disk lacks is an error naming it."""
    import tarfile

    with tarfile.open(FIX / "shard-000000.tar") as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    for i, part in enumerate((members[:6], members[6:])):  # three samples, then the other three
        with tarfile.open(tmp_path / f"shard-{i:06d}.tar", "w") as dst:
            for m, data in part:
                dst.addfile(m, io.BytesIO(data))
    for pattern in ("shard-{000000..000001}.tar", "shard-{000000,000001}.tar"):
        s = open_store(
            import_dataset("webdataset", tmp_path / pattern, None, tmp_path / pattern[:9], max_bad_fraction=0.5)
        )
        assert s.meta["n_images"] == 5 and set(s.image_keys) == set(IDS)
    with pytest.raises(DataError, match=r"shard-000002.tar: not found; pattern .*shard-\{000000..000002\}.tar"):
        import_dataset("webdataset", tmp_path / "shard-{000000..000002}.tar", None, tmp_path / "s")


@pytest.mark.parametrize("fmt,name", [("csv", "pairs.csv"), ("jsonl", "pairs.jsonl"), ("karpathy", "karpathy.json")])
def test_annotation_files_with_a_byte_order_mark(tmp_path, fmt, name):
    """Spreadsheet exports ("CSV UTF-8") start with a UTF-8 byte-order mark: read as without it."""
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + (FIX / name).read_bytes())
    plain, bad_plain = read_captions(fmt, name)
    bad = BadRecords(tmp_path / name)
    assert list(CAPTION_READERS[fmt](tmp_path / name, bad)) == plain and bad.bad == bad_plain.bad
