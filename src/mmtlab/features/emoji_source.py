"""The npm package ``emoji-datasource-google`` as a source of captioned pictures: where it is, how to install it,
and one :class:`~mmtlab.features.extract.ImageItem` per base emoji with captions from its name and categories.
Shared by ``mmtlab data emoji`` (:mod:`mmtlab.features.emoji`) and ``mmtlab data real``
(:mod:`mmtlab.features.real`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

PACKAGE = "emoji-datasource-google"
PACKAGE_VERSION = "16.0.0"
DEFAULT_NPM_DIR = Path(os.environ.get("MMTLAB_EMOJI_DIR", Path.home() / ".cache" / "mmtlab" / "emoji"))
IMAGE_DIR = Path("img") / "google" / "64"


def _missing_message(npm_dir: Path) -> str:
    return (
        f"npm package {PACKAGE} not found under {npm_dir}; fetch it once (needs the npm registry) with "
        f"`mmtlab data emoji --fetch` or `npm install --prefix {npm_dir} {PACKAGE}@{PACKAGE_VERSION}`, "
        "or point --npm-dir at a directory holding node_modules/" + PACKAGE
    )


def find_package(npm_dir: str | Path | None = None) -> Path:
    """The package directory under ``npm_dir`` (its ``node_modules/``, or ``npm_dir`` itself)."""
    from ..data.store import DataError

    npm_dir = Path(npm_dir) if npm_dir else DEFAULT_NPM_DIR
    for cand in (npm_dir / "node_modules" / PACKAGE, npm_dir):
        if (cand / "emoji.json").is_file() and (cand / IMAGE_DIR).is_dir():
            return cand
    raise DataError(_missing_message(npm_dir))


def fetch_package(npm_dir: str | Path | None = None) -> Path:
    """``npm install`` the pinned package into ``npm_dir`` (the only step that needs the network)."""
    from ..data.store import DataError

    npm_dir = Path(npm_dir) if npm_dir else DEFAULT_NPM_DIR
    npm_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(npm_dir), f"{PACKAGE}@{PACKAGE_VERSION}"]
    try:
        subprocess.run(cmd, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise DataError(f"`{' '.join(cmd)}` failed ({e}); install Node.js/npm or fetch the package by hand") from None
    return find_package(npm_dir)


def _words(s: str) -> str:
    return " ".join(s.replace("_", " ").replace("-", " ").split()).lower()


def emoji_captions(entry: dict) -> list[str]:
    """Up to five distinct captions of one ``emoji.json`` entry (name, short names, subcategory, category)."""
    name = _words(entry["name"].replace(":", ""))
    sub = _words(entry.get("subcategory") or "")
    cat = _words(entry.get("category") or "").replace("&", "and")
    caps = [name]
    caps += [_words(s) for s in entry.get("short_names") or []]
    caps += [f"{name}, a {sub} emoji", f"an emoji of {name} from {cat}"]
    out: list[str] = []
    for c in caps:
        if c and c not in out:
            out.append(c)
    return out[:5]


def emoji_items(package_dir: Path, test_fraction: float = 0.2, seed: int = 0, limit: int | None = None) -> list:
    """:class:`~mmtlab.features.extract.ImageItem` per base emoji with a Google image, sorted by the package's
    order; a seeded ``test_fraction`` of them in split ``test``, the rest ``train``. ``limit``: the first N only."""
    from ..data.store import DataError, seeded_sample
    from .extract import ImageItem

    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"--test-fraction {test_fraction}: must be in [0, 1)")
    try:
        entries = json.loads((package_dir / "emoji.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{package_dir / 'emoji.json'}: unreadable ({e})") from None
    entries = sorted(
        (e for e in entries if e.get("has_img_google") and e.get("image")), key=lambda e: e.get("sort_order", 0)
    )
    if limit:
        entries = entries[:limit]
    test = set(seeded_sample(len(entries), round(test_fraction * len(entries)), seed).tolist())
    return [
        ImageItem(
            package_dir / IMAGE_DIR / e["image"], emoji_captions(e), "test" if i in test else "train", e["unified"]
        )
        for i, e in enumerate(entries)
    ]
