"""``mmtlab data emoji``: captions from the emoji data, the store from a (fake or real) npm package."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mmtlab.data.store import DataError, open_store
from mmtlab.features import emoji

ENTRY = {
    "name": "HEART HANDS",
    "unified": "1FAF6",
    "image": "1faf6.png",
    "short_names": ["heart_hands"],
    "category": "People & Body",
    "subcategory": "hands",
    "sort_order": 2,
    "has_img_google": True,
}


def test_captions_from_name_short_names_and_categories():
    assert emoji.emoji_captions(ENTRY) == [
        "heart hands",
        "heart hands, a hands emoji",
        "an emoji of heart hands from people and body",
    ]
    flag = {"name": "Egypt Flag", "short_names": ["flag-eg"], "category": "Flags", "subcategory": "country-flag"}
    assert emoji.emoji_captions(flag) == [
        "egypt flag",
        "flag eg",
        "egypt flag, a country flag emoji",
        "an emoji of egypt flag from flags",
    ]
    woman = {
        "name": "WOMAN: BEARD",
        "short_names": ["woman_with_beard"],
        "category": "People & Body",
        "subcategory": "person",
    }
    assert emoji.emoji_captions(woman)[:2] == ["woman beard", "woman with beard"]


def _fake_package(root, n=10):
    """A package directory laid out as emoji-datasource-google's, with n RGBA images and one entry without."""
    pkg = root / "node_modules" / emoji.PACKAGE
    (pkg / emoji.IMAGE_DIR).mkdir(parents=True)
    entries = []
    for i in range(n):
        name = f"{i:04x}.png"
        rgba = np.zeros((64, 64, 4), np.uint8)
        rgba[16:48, 16:48] = (200, 30 * (i % 8), 40, 255)  # an opaque square on a transparent background
        Image.fromarray(rgba, "RGBA").save(pkg / emoji.IMAGE_DIR / name)
        entries.append(
            {
                **ENTRY,
                "name": f"SQUARE NUMBER {i}",
                "short_names": [f"square_{i}"],
                "image": name,
                "unified": f"{i:04X}",
                "sort_order": n - i,
            }
        )
    entries.append({**ENTRY, "name": "NO GOOGLE IMAGE", "image": "none.png", "has_img_google": False})
    (pkg / "emoji.json").write_text(json.dumps(entries))
    (pkg / "package.json").write_text(json.dumps({"name": emoji.PACKAGE, "version": "0.0.0-test"}))
    return root


def test_missing_package_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"npm package emoji-datasource-google not found .*npm install --prefix"):
        emoji.find_package(tmp_path)


def test_items_split_and_order(tmp_path):
    pkg = emoji.find_package(_fake_package(tmp_path))
    items = emoji.emoji_items(pkg, test_fraction=0.3, seed=1)
    assert len(items) == 10  # the entry without a Google image is left out
    assert [it.key for it in items] == [f"{i:04X}" for i in reversed(range(10))]  # the package's sort order
    assert sum(it.split == "test" for it in items) == 3
    again = emoji.emoji_items(pkg, test_fraction=0.3, seed=1)
    assert [it.split for it in again] == [it.split for it in items]
    assert len(emoji.emoji_items(pkg, limit=4)) == 4
    with pytest.raises(DataError, match="test-fraction"):
        emoji.emoji_items(pkg, test_fraction=1.0)


def test_stores_from_fake_package(tmp_path):
    npm_dir = _fake_package(tmp_path / "npm", n=6)
    summary = emoji.build_emoji_store(tmp_path / "emoji", npm_dir, test_fraction=0.5, seed=0, progress=False)
    assert summary["train"]["images"] == 3 and summary["test"]["images"] == 3 and summary["test"]["skipped"] == 0
    train, test = open_store(tmp_path / "emoji" / "train"), open_store(tmp_path / "emoji" / "test")
    assert train.meta["splits"] == {"train": 3} and test.meta["splits"] == {"test": 3}  # held out: disjoint stores
    assert not set(train.image_keys) & set(test.image_keys)
    assert test.meta["style"] == "emoji" and test.meta["source"] == "npm emoji-datasource-google@0.0.0-test"
    assert len(test.split("test")) == 3 * 4  # four captions per emoji
    img = test.image(0)
    assert img["feats"].shape == (49, 1280) and img["pixels"].shape == (3, 64, 64)
    px = img["pixels"]
    assert tuple(px[:, 0, 0]) == (255, 255, 255)  # transparency composited on white
    assert px[0, 32, 32] == 200  # the opaque square kept its colour
    assert test.captions[0].startswith("square number")


def test_cli_reports_missing_package(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--debug", action="store_true")
    emoji.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["emoji", "--out", str(tmp_path / "s"), "--npm-dir", str(tmp_path / "none")])
    with pytest.raises(DataError, match="not found under"):
        args.func(args)


def test_real_package_if_installed(tmp_path):
    try:
        pkg = emoji.find_package()
    except DataError as e:
        pytest.skip(f"the npm package is not installed (no network in tests): {e}")
    items = emoji.emoji_items(pkg)
    assert len(items) > 1800 and all(it.path.is_file() for it in items)
    assert sum(it.split == "test" for it in items) == round(0.2 * len(items))
    summary = emoji.build_emoji_store(tmp_path / "emoji", limit=8, test_fraction=0.25, progress=False)
    assert summary["train"]["images"] == 6 and summary["test"]["images"] == 2
    captions = [c for split in ("train", "test") for c in open_store(tmp_path / "emoji" / split).captions]
    assert len(captions) >= 8 * 3 and "grinning face" in captions  # the package's first emoji
