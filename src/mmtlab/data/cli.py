"""``mmtlab data synth | import | captions | split | stats`` (``data emoji`` extracts features, so it lives in
:mod:`mmtlab.features.emoji`; :mod:`mmtlab.cli` adds it to this group)."""

from __future__ import annotations

import argparse
import json


def _cmd_synth(args: argparse.Namespace) -> int:
    import time

    from .store import open_store
    from .synth import synthesize

    t0 = time.perf_counter()
    path = synthesize(
        args.out, args.style, args.n, args.noise, args.seed, args.split, args.feat_dim, args.hard_fraction,
        progress=not args.quiet, regions=args.regions,
    )  # fmt: skip
    store = open_store(path)
    m = store.meta
    print(f"wrote {path}: style {m['style']}, {m['n_images']} images, {m['n_captions']} captions, split {', '.join(m['splits'])}, "
          f"feat_dim {m['feat_dim']}, {m['n_classes']} classes ({time.perf_counter() - t0:.1f}s)")  # fmt: skip
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .importer import import_dataset
    from .store import open_store

    path = import_dataset(
        args.format, args.annotations, args.features, args.out, split=args.split, feat_dim=args.feat_dim,
        features_format=args.features_format, max_bad_fraction=args.max_bad_fraction, progress=not args.quiet,
    )  # fmt: skip
    m = open_store(path).meta
    rep = m["import"]
    print(
        f"wrote {path}: {m['n_images']} images, {m['n_captions']} captions, splits {m['splits']}, feat_dim {m['feat_dim']}"
    )
    print(f"  skipped: {rep['captions']['skipped']} caption records, {rep['features']['skipped']} feature records; "
          f"{rep['images_without_features']} captioned images have no features")  # fmt: skip
    for line in rep["captions"]["first_skipped"] + rep["features"]["first_skipped"]:
        print(f"    {line}")
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from .store import split_store

    summary = split_store(args.store, args.test_fraction, args.seed, (args.train_name, args.test_name), args.out)
    (train, n_train), (test, n_test) = summary["images"].items()
    caps = summary["captions"]
    print(
        f"wrote {summary['out']}: split {train} {n_train} images ({caps[train]} captions), {test} {n_test} images "
        f"({caps[test]} captions), by image, seed {summary['seed']}; {_linked(summary['copied_files'])}"
    )
    return 0


def _linked(copied: list[str]) -> str:
    """What :func:`~mmtlab.data.store.rewrite_store` did with the files it kept."""
    if not copied:
        return "features not copied (hard links)"
    return f"copied (no hard links on this file system): {', '.join(copied)}"


def _cmd_captions(args: argparse.Namespace) -> int:
    from .importer import import_captions

    s = import_captions(
        args.store, args.format, args.annotations, out=args.out, add=args.add, max_bad_fraction=args.max_bad_fraction
    )
    print(
        f"wrote {s['out']}: {s['added']} captions {'added' if args.add else 'in place of the old ones'}, "
        f"{s['n_captions']} in all; {s['images_without_captions']} images without a caption; "
        f"{s['captions']['skipped']} caption records skipped; {_linked(s['copied_files'])}"
    )
    for line in s["captions"]["first_skipped"]:
        print(f"    {line}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from .stats import store_stats
    from .store import open_store
    from .synth import check_style, sample_captions

    store = open_store(args.dir)
    if args.split:
        store = store.split(args.split)
    if args.ref:
        ref_store = open_store(args.ref)
        reference, ref_name = list(ref_store.captions), str(args.ref)
    elif args.ref_style.lower() != "none":
        check_style(args.ref_style)
        reference, ref_name = (
            sample_captions(args.ref_style, 1000, seed=12345),
            f"style {args.ref_style} (1,000 fresh images)",
        )
    else:
        reference, ref_name = None, None
    s = store_stats(store, reference, args.max_captions)
    if args.json:
        print(json.dumps(s | {"reference": ref_name}, indent=1))
        return 0
    cpi, words, regs = s["captions_per_image"], s["caption_words"], s["regions_per_image"]
    print(f"{s['path']}: style {s['style']}, splits {s['splits']}")
    print(
        f"  pairs {s['pairs']:,}   images {s['images']:,}   captions/image {cpi['mean']:.2f} (min {cpi['min']}, max {cpi['max']})"
    )
    print(
        f"  caption words: mean {words['mean']:.1f}, p10 {words['p10']:.0f}, median {words['median']:.0f}, p90 {words['p90']:.0f}, max {words['max']:.0f}"
    )
    print(f"  vocabulary {s['vocabulary']:,} words (over {s['sampled_captions']:,} captions)")
    print(
        f"  regions/image: mean {regs['mean']:.1f}, max {regs['max']}; feat_dim {s['feat_dim']}, classes {s['n_classes']}, pixels {s['pixels']}"
    )
    if reference is not None:
        o = s["overlap_with_reference"]
        print(f"  overlap with {ref_name}: word tokens {o['word_tokens']:.1f}%, word types {o['word_types']:.1f}%, "
              f"bigram tokens {o['bigram_tokens']:.1f}%, whole captions {o['captions']:.1f}%")  # fmt: skip
    return 0


def _store_rewrite_command(sub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A ``data`` subcommand that rewrites an existing store: its parser, with the ``store`` argument and ``--out``."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("store", help="store directory (e.g. written by `mmtlab features extract` or `mmtlab data synth`)")
    p.add_argument("--out", default=None, help="write the new store here instead of replacing STORE")
    return p


def register(subparsers) -> None:
    """Add ``mmtlab data ...`` to the ``mmtlab`` parser."""
    from .readers import CAPTION_READERS  # light: no numpy-heavy work at import
    from .synth import REGIONS, STYLES

    data = subparsers.add_parser("data", help="synthetic world, import of real corpora, splits, dataset statistics")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    p = sub.add_parser("synth", help="generate a synthetic-world dataset in one caption style")
    p.add_argument("--style", default="coco", choices=list(STYLES), help="caption style (see `mmtlab presets`)")
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="images (default: the style's, e.g. 1000 for flickr, 4000 x 5 captions for coco)",
    )
    p.add_argument("--noise", type=float, default=0.0, help="fraction of captions that describe another image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help="split name (default: test for flickr, train otherwise)")
    p.add_argument("--feat-dim", type=int, default=256, help="region feature width")
    p.add_argument(
        "--hard-fraction",
        type=float,
        default=0.4,
        help="fraction of scenes that are one-attribute edits of the previous one",
    )
    p.add_argument(
        "--regions",
        type=int,
        default=REGIONS,
        help=f"regions per image: objects, parts, then background distractors up to this (default {REGIONS})",
    )
    p.add_argument("--out", required=True, help="output store directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("import", help="convert captions + region features in a research format into an mmtlab store")
    p.add_argument("--format", required=True, choices=list(CAPTION_READERS), help="caption format")
    p.add_argument("--annotations", required=True, help="caption file (or WebDataset shards)")
    p.add_argument(
        "--features", default=None, help="bottom-up TSV, directory of .npz, .h5, or WebDataset shards with .npz members"
    )
    p.add_argument(
        "--features-format",
        default=None,
        choices=["tsv", "npz", "hdf5", "webdataset"],
        help="default: guessed from the path",
    )
    p.add_argument("--out", required=True, help="output store directory")
    p.add_argument(
        "--split",
        default=None,
        help="keep only this split (Karpathy, CSV/JSONL with a split column) or name the split (default train)",
    )
    p.add_argument("--feat-dim", type=int, default=None, help="expected feature width (default: the first record's)")
    p.add_argument(
        "--max-bad-fraction", type=float, default=0.01, help="stop past this fraction of malformed records per file"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_import)

    p = _store_rewrite_command(
        sub,
        "captions",
        "captions (CSV/TSV, JSONL, COCO, Karpathy...) for the images of an existing store",
        "Match the captions of a caption file to the images of STORE by image key (a file's stem, as `data import` "
        "does: 'photos/cat.png' and 'cat' name the same image) and write them in place of the store's captions (or "
        "after them: --add). Features are not copied; a caption naming no image of the store is skipped and counted.",
    )
    p.add_argument(
        "--format",
        default="csv",
        choices=list(CAPTION_READERS),
        help="caption format (default csv; "
        "a .tsv file is read tab-separated, with a header naming an image and a caption column)",
    )
    p.add_argument("--annotations", required=True, help="caption file")
    p.add_argument("--add", action="store_true", help="keep the store's captions and add these")
    p.add_argument("--max-bad-fraction", type=float, default=0.01, help="stop past this fraction of skipped records")
    p.set_defaults(func=_cmd_captions)

    p = _store_rewrite_command(
        sub,
        "split",
        "relabel a store's images into a seeded train/test split (by image, features not copied)",
        "Every image of STORE (whatever its splits were) goes to the test split with probability --test-fraction "
        "(exactly round(fraction x images), drawn with --seed), with all its captions. Only the split index and "
        "meta.json are written anew; the other files are hard links to the old ones. The store is replaced in "
        "place (or written to --out) atomically.",
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of the images in the test split (default 0.2)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    p.add_argument("--train-name", default="train", help="name of the first split (default train)")
    p.add_argument("--test-name", default="test", help="name of the held-out split (default test)")
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser(
        "stats", help="pairs, images, caption lengths, vocabulary and language overlap with the test style"
    )
    p.add_argument("dir", help="store directory")
    p.add_argument("--split", default=None, help="only this split")
    p.add_argument("--ref", default=None, help="reference store (default: a fresh sample of --ref-style)")
    p.add_argument("--ref-style", default="flickr", help="reference synthetic style, or 'none'")
    p.add_argument("--max-captions", type=int, default=50_000, help="subsample larger stores evenly")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_stats)
