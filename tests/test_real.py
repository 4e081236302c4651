"""``mmtlab data real``: captions of the three sources, the concept split, the stores from small fake sources,
and the real packages only when they are installed (never needed by ``make test`` or CI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mmtlab.data.store import DataError, open_store
from mmtlab.features import real
from test_emoji import _fake_package


def test_openmoji_captions():
    entry = {
        "annotation": "grinning face",
        "group": "smileys-emotion",
        "subgroups": "face-smiling",
        "tags": "cheerful, face, grin, happy",
        "openmoji_tags": "smile, happy",
    }
    assert real.openmoji_captions(entry) == [
        "grinning face",
        "grinning face, a face smiling emoji",
        "an emoji of grinning face from smileys emotion",
        "grinning face: cheerful, grin, happy, smile",  # words of the name and repeats left out
    ]
    extra = {"annotation": "narwhal", "group": "extras-openmoji", "subgroups": "animals-nature", "tags": ""}
    assert real.openmoji_captions(extra) == ["narwhal", "narwhal, a animals nature emoji", "an emoji of narwhal"]
    assert real.openmoji_captions({"annotation": ""}) == []


def test_clipart_names_titles_and_captions():
    assert real.clipart_name("pesca_architetto_frances_01", "Architetto Francesco Rollandin") == "pesca"
    assert real.clipart_name("aircraft_jarno_vasamaa2", "Jarno Vasamaa") == "aircraft"
    assert real.clipart_name("soft_blue_couch_jonadab_01", "Jonadab") == "soft blue couch"
    assert real.clipart_name("gnome-fs-client") == "gnome fs client"
    assert real.clipart_title("Clipart by Nicu Buculei - jigsaw_red_10", "Nicu Buculei") == "jigsaw red"
    assert real.clipart_title(" ireland") == "ireland"
    assert real.clipart_captions("pesca_architetto_frances_01", "food/fruit", "Pesca", "Architetto Francesco") == [
        "pesca",
        "a clip art of pesca from food, fruit",
    ]
    assert real.clipart_captions(
        "router_joeseph_teed_01", "computer/network", "Lemon theme", "Joeseph Teed", collection=True
    ) == [
        "router",
        "a clip art of router from computer, network",
    ]


def test_concept_split_is_seeded_and_shared_across_sources():
    keys = [f"{i:04X}" for i in range(2000)]
    google = [real.concept_split(f"emoji-google/{k}", 0.1, 0) for k in keys]
    assert google == [real.concept_split(f"openmoji/{k}", 0.1, 0) for k in keys]  # same emoji, same side
    assert 150 < google.count("val") < 250
    assert google != [real.concept_split(f"emoji-google/{k}", 0.1, 1) for k in keys]
    assert real._concept("2764-fe0f") == real._concept("2764") == "2764"


def _fake_clipart(root, n_folders=2, per_folder=4):
    """A tree laid out as openclipart-png's: PNGs of several modes with Title and Author text chunks, one
    collection title shared by every file of the second folder, and a symbolic link."""
    modes = ["RGBA", "P", "LA", "RGB"]
    for f in range(n_folders):
        folder = root / "animals" / f"kind{f}"
        folder.mkdir(parents=True)
        for i in range(per_folder):
            info = PngImagePlugin.PngInfo()
            info.add_text("Title", "Lemon SVG theme" if f else f"Animal {f}{i}")
            info.add_text("Author", "Jane Doe")
            rgba = np.zeros((40, 60 + 10 * i, 4), np.uint8)
            rgba[10:30, 10:40] = (30 * i, 120, 200, 255)
            im = Image.fromarray(rgba, "RGBA")
            im = im.convert(modes[i % 4]) if modes[i % 4] != "P" else im.convert("P")
            im.save(folder / f"beast{i}_jane_do_01.png", pnginfo=info)
    (root / "animals" / "link.png").symlink_to(root / "animals" / "kind0" / "beast0_jane_do_01.png")
    return root


def test_openclipart_items_titles_links_and_folder_cap(tmp_path):
    root = _fake_clipart(tmp_path / "png", per_folder=4)
    report: dict = {}
    items = real.openclipart_items(root, report, max_per_folder=0)
    assert len(items) == 8 and report["too_large"] == 0  # the link is not a ninth picture
    by_key = {it.key: it.captions for it in items}
    assert by_key["openclipart/animals/kind0/beast1_jane_do_01"] == [
        "animal",  # "Animal 01": the trailing number is dropped
        "beast",  # the author's (truncated) name and the numbering are dropped
        "a clip art of animal from animals, kind0",
    ]
    assert by_key["openclipart/animals/kind1/beast2_jane_do_01"][0] == "beast"  # a collection title is no caption
    capped = real.openclipart_items(root, max_per_folder=3, seed=0)
    assert len(capped) == 6 and [it.key for it in capped] == sorted(it.key for it in capped)
    assert [it.key for it in capped] == [it.key for it in real.openclipart_items(root, max_per_folder=3, seed=0)]


def test_missing_sources_say_how_to_install(tmp_path):
    with pytest.raises(DataError) as e:
        real.plan(list(real.SOURCES), "openclipart", tmp_path / "npm", tmp_path / "no-clipart")
    msg = str(e.value)
    assert "nothing was written" in msg
    assert f"npm install --prefix {tmp_path / 'npm'} emoji-datasource-google@16.0.0" in msg
    assert "openmoji@17.0.0" in msg and "sudo apt-get install openclipart-png" in msg
    with pytest.raises(DataError, match="not among"):
        real.plan(["emoji-google", "openmoji"], "openclipart", tmp_path, tmp_path)
    with pytest.raises(DataError, match="unknown source"):
        real.plan(["emoji-google", "flickr"], "flickr", tmp_path, tmp_path)


def test_build_from_fake_sources(tmp_path):
    npm_dir = _fake_package(tmp_path / "npm", n=8)
    clipart = _fake_clipart(tmp_path / "png", per_folder=3)
    out = tmp_path / "real"
    kwargs = dict(holdout="openclipart", npm_dir=npm_dir, openclipart_dir=clipart, val_fraction=0.3, progress=False)
    record = real.build_real(out, ["emoji-google", "openclipart"], **kwargs)
    stores = record["stores"]
    assert set(stores) == {"train/emoji-google", "val/emoji-google", "test/openclipart"}
    assert stores["train/emoji-google"]["images"] + stores["val/emoji-google"]["images"] == 8
    test = open_store(out / "test" / "openclipart")
    assert test.meta["splits"] == {"test": 6} and test.meta["style"] == "real"
    assert test.meta["license"].startswith("public domain")
    assert test.image(0)["feats"].shape == (49, 1280)
    train_keys = set(open_store(out / "train" / "emoji-google").image_keys)
    assert not train_keys & set(open_store(out / "val" / "emoji-google").image_keys)
    saved = json.loads((out / "real.json").read_text())
    assert saved["holdout"] == "openclipart" and saved["sources"]["openclipart"]["role"].startswith("held out")
    assert "test/openclipart" in saved["commands"]["zero-shot"]
    mtime = (out / "test" / "openclipart" / "meta.json").stat().st_mtime_ns
    record = real.build_real(out, ["emoji-google", "openclipart"], pooled=True, **kwargs)  # stores kept, pooled added
    assert (out / "test" / "openclipart" / "meta.json").stat().st_mtime_ns == mtime
    assert record["stores"]["pooled/test/openclipart"]["from"] == "test/openclipart"
    pooled = open_store(out / "pooled" / "test" / "openclipart")
    assert pooled.meta["splits"] == test.meta["splits"] and pooled.image_keys == test.image_keys
    assert list(pooled.captions) == list(test.captions) and (pooled.caption_image == test.caption_image).all()
    img = pooled.image(2)
    assert img["feats"].shape == (1, 1280) and img["boxes"].tolist() == [[0, 0, 1, 1, 1]]
    grid_mean = test.image(2)["feats"].astype(np.float32).mean(0)
    np.testing.assert_allclose(img["feats"][0].astype(np.float32), grid_mean, rtol=1e-2, atol=1e-3)
    from mmtlab.cli import main

    assert main(["data", "pool", str(out / "val" / "emoji-google"), "--out", str(tmp_path / "p")]) == 0
    assert open_store(tmp_path / "p").meta["regions"] == "pooled"


def test_cli_registered_under_data(tmp_path):
    from mmtlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["data", "real", "--help"])
    assert e.value.code == 0
    code = main(
        ["data", "real", "--out", str(tmp_path / "r"), "--npm-dir", str(tmp_path), "--openclipart-dir", "/nonexistent"]
    )
    assert code != 0


def test_real_sources_if_installed(tmp_path):
    npm_dir = real.DEFAULT_NPM_DIR
    missing = real._missing(list(real.SOURCES), npm_dir, real.DEFAULT_OPENCLIPART_DIR)
    if missing:
        pytest.skip("the real sources are not installed (tests never fetch them): " + "; ".join(missing))
    stores, report = real.plan(list(real.SOURCES), "openclipart", npm_dir, real.DEFAULT_OPENCLIPART_DIR)
    assert report["emoji-google"]["images"] > 1800 and report["openmoji"]["images"] > 2000
    assert report["openclipart"]["images"] > 2000
    assert "grinning face" in [c for it in stores["train/emoji-google"] for c in it.captions]
    record = real.build_real(tmp_path / "r", limit=4, npm_dir=npm_dir, progress=False)
    assert record["stores"]["test/openclipart"]["images"] == 4
