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
from pathlib import Path

from .emoji_source import (  # noqa: F401 - re-exported: the emoji source lives beside `data real`'s
    DEFAULT_NPM_DIR,
    IMAGE_DIR,
    PACKAGE,
    PACKAGE_VERSION,
    emoji_captions,
    emoji_items,
    fetch_package,
    find_package,
)


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
