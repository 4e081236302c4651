"""Real pictures that can be had offline from a package registry: the Google / Noto emoji images and their names
from the npm package ``emoji-datasource-google`` (data MIT, images Apache-2.0), as an image-caption store
(``mmtlab data emoji``).

Each of the ~1,900 base emoji (skin-tone variants left out) is one 64x64 image (transparency on white) with up to
five captions made from its Unicode name, its short names and its (sub)category, e.g. ``heart hands``,
``heart hands, a hands emoji`` ... Regions come from :mod:`mmtlab.features.extract` (EfficientNet-Lite0's 7x7 grid with
ImageNet class distributions), and the 64x64 pixels are stored for the pixel path. A seeded random part of the
images is held out from pretraining for zero-shot retrieval: ``OUT/train`` and ``OUT/test`` are two stores.
"""

from __future__ import annotations

import argparse
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


def build_emoji_store(
    out: str | Path,
    npm_dir: str | Path | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    pixels: int = 64,
    classes: bool = True,
    batch_size: int = 64,
    progress: bool = True,
) -> dict:
    """Build two stores, ``out/train`` (pretraining) and ``out/test`` (held out: the trainer uses every image
    of a store it is given); returns their extraction summaries by split."""
    from .extract import extract_store

    package_dir = find_package(npm_dir)
    items = emoji_items(package_dir, test_fraction, seed, limit)
    version = json.loads((package_dir / "package.json").read_text()).get("version")
    meta = {
        "style": "emoji",
        "source": f"npm {PACKAGE}@{version}",
        "seed": seed,
        "test_fraction": test_fraction,
        "license": "emoji data MIT, Google Noto images Apache-2.0",
    }
    summaries = {}
    for split in ("train", "test"):
        part = [it for it in items if it.split == split]
        if part:
            summaries[split] = extract_store(
                part,
                Path(out) / split,
                pixels=pixels,
                classes=classes,
                batch_size=batch_size,
                meta=meta,
                source=str(package_dir),
                progress=progress,
            )
    return summaries


def _cmd_emoji(args: argparse.Namespace) -> int:
    if args.fetch:
        fetch_package(args.npm_dir)
    summary = build_emoji_store(
        args.out, args.npm_dir, test_fraction=args.test_fraction, seed=args.seed, limit=args.limit,
        pixels=args.pixels, classes=not args.no_classes, batch_size=args.batch_size, progress=not args.no_progress,
    )  # fmt: skip
    print(json.dumps(summary, indent=1))
    return 0


def register(subparsers) -> None:
    """Add ``emoji`` to the ``data`` group's subcommands."""
    p = subparsers.add_parser(
        "emoji",
        help=f"real images offline: Google emoji with their names (npm {PACKAGE})",
        description=f"Build an image-caption store from the npm package {PACKAGE} (~1,900 64x64 emoji images, "
        "captions from their names and categories): EfficientNet-Lite0 grid features (use data.max_regions=49), "
        "64x64 pixels; OUT/train for pretraining and OUT/test (held-out images) for zero-shot retrieval.",
    )
    p.add_argument("--out", required=True, help="output directory: OUT/train and OUT/test stores")
    p.add_argument(
        "--npm-dir",
        default=None,
        help=f"where the npm package is installed (default {DEFAULT_NPM_DIR}, or $MMTLAB_EMOJI_DIR)",
    )
    p.add_argument(
        "--fetch", action="store_true", help=f"first `npm install` {PACKAGE}@{PACKAGE_VERSION} into --npm-dir"
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the images (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--limit", type=int, default=None, help="only the first N emoji (quick runs)")
    p.add_argument("--pixels", type=int, default=64, help="stored image side for the pixel path (default 64)")
    p.add_argument(
        "--no-classes", action="store_true", help="do not store ImageNet class distributions (smaller store)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_emoji)
