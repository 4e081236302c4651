"""``mmtlab data import``: captions in a researcher's format + precomputed region features -> an mmtlab store;
``mmtlab data captions``: captions in such a format for the images of an existing store.

Captions are read first (annotation files are small next to features), then the features are streamed once,
and each image that has captions is written with them. Images are never held in memory together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np

from ..config import ConfigError
from .features import FEATURE_READERS, FeatureWidth, Regions, feature_format
from .readers import CAPTION_READERS, BadRecords, norm_key, shard_paths
from .store import DataError, StoreWriter, check_store_target, open_store, rewrite_store


def _exists(path: Path, what: str) -> Path:
    if "{" in path.name:  # a brace pattern of WebDataset shards: every shard must exist
        shard_paths(path)
    elif not path.exists():
        raise DataError(f"{path}: not found ({what})")
    return path


def import_dataset(
    fmt: str,
    annotations: str | Path,
    features: str | Path | None,
    out: str | Path,
    split: str | None = None,
    feat_dim: int | None = None,
    features_format: str | None = None,
    max_bad_fraction: float = 0.01,
    progress: bool = False,
) -> Path:
    """Convert ``annotations`` (format ``fmt``, see :data:`CAPTION_READERS`) and ``features`` (bottom-up TSV, a
    directory of ``.npz``, HDF5 or WebDataset shards; guessed from the path unless ``features_format``) into the
    store ``out``. ``split`` keeps only that split when the annotations have splits, and names the split
    otherwise (default ``train``). Malformed records are skipped and counted; past ``max_bad_fraction`` of a
    file the import stops with a :class:`DataError` listing the first ones, and so it does past
    ``max_bad_fraction`` of the captioned images without features. ``out`` must be new, empty or a store
    alone (checked first). Returns the store path; its ``meta["import"]`` holds the counts."""
    annotations, features, features_fmt = _input_paths(fmt, annotations, features, features_format, out)
    captions, bad_captions = _read_captions(fmt, annotations, split, max_bad_fraction)
    bad_features = BadRecords(features, max_bad_fraction)
    records = _feature_records(features, features_fmt, bad_features, feat_dim, progress)
    feature_keys: list[str] = []  # the first three keys of the feature source, for the error when none matches
    captioned = _captioned_records(records, captions, bad_features, feature_keys)
    first = next(captioned, None)  # the store is opened with its feature width and class count
    if first is None:
        bad_features.check()
        raise DataError(
            f"no image of {annotations} has features in {features}: caption keys look like "
            f"{list(captions)[:3]}, feature keys like {feature_keys}"
        )
    n_classes = None if first.cls is None else first.cls.shape[1]
    meta = {"style": fmt, "source": {"annotations": str(annotations), "features": str(features)}}
    with StoreWriter(out, first.feats.shape[1], n_classes, meta=meta) as writer:  # an error or an interruption drops it
        done = _write_images(writer, chain([first], captioned), captions, bad_features, features)
        bad_features.check()
        _check_missing(captions, done, max_bad_fraction, features)
        writer.meta["import"] = {
            "format": fmt,
            "features_format": features_fmt,
            "images_without_features": len(captions) - len(done),
            "captions": bad_captions.summary(),
            "features": bad_features.summary(),
        }
        return writer.close()


def _check_caption_format(fmt: str) -> None:
    if fmt not in CAPTION_READERS:
        raise ConfigError(f"--format {fmt!r}; valid formats: {', '.join(CAPTION_READERS)}")


def _input_paths(
    fmt: str, annotations: str | Path, features: str | Path | None, features_format: str | None, out: str | Path
) -> tuple[Path, Path, str]:
    """The annotation file, the feature source (the annotations themselves for ``webdataset`` when
    ``features`` is None) and the feature format, checked in this order: ``--format``, ``out``,
    ``--annotations``, ``--features``, ``--features-format``."""
    _check_caption_format(fmt)
    check_store_target(Path(out))
    annotations = _exists(Path(annotations), "--annotations")
    if features is None:
        if fmt != "webdataset":
            raise ConfigError(
                f"--features is required for --format {fmt} (region features: {', '.join(FEATURE_READERS)})"
            )
        features = annotations
    features = _exists(Path(features), "--features")
    features_fmt = features_format or feature_format(features)
    if features_fmt not in FEATURE_READERS:
        raise ConfigError(f"--features-format {features_fmt!r}; valid: {', '.join(FEATURE_READERS)}")
    return annotations, features, features_fmt


def _read_captions(
    fmt: str, annotations: Path, split: str | None, max_bad_fraction: float
) -> tuple[dict[str, tuple[str, list[str]]], BadRecords]:
    """The captions of ``annotations`` by image key: key -> (split name, texts), only ``split``'s images when
    the annotations have splits; and the malformed records counted (past ``max_bad_fraction``: DataError)."""
    bad = BadRecords(annotations, max_bad_fraction)
    captions: dict[str, tuple[str, list[str]]] = {}
    for c in CAPTION_READERS[fmt](annotations, bad):
        if split is not None and c.split is not None and c.split != split:
            continue
        captions.setdefault(c.key, (c.split or split or "train", []))[1].append(c.text)
    bad.check()
    if not captions:
        have = f" (no image in split {split!r})" if split else ""
        raise DataError(f"{annotations}: no usable captions{have}")
    return captions, bad


def _feature_records(
    features: Path, features_fmt: str, bad: BadRecords, feat_dim: int | None, progress: bool
) -> Iterator[Regions]:
    """The feature source's images, streamed (malformed ones counted in ``bad``), behind a progress bar with
    ``progress``."""
    records = FEATURE_READERS[features_fmt](features, bad, FeatureWidth(features, feat_dim))
    if progress:
        from ..progress import progress_bar

        records = progress_bar(records, desc="import", unit="img")
    return records


def _captioned_records(
    records: Iterable[Regions], captions: dict, bad: BadRecords, feature_keys: list[str]
) -> Iterator[Regions]:
    """The records whose image has captions; checks the bad fraction as they come and keeps the first three
    keys of all records in ``feature_keys``."""
    for r in records:
        bad.check(final=False)
        if len(feature_keys) < 3:
            feature_keys.append(r.key)
        if r.key in captions:
            yield r


def _write_images(
    writer: StoreWriter, records: Iterable[Regions], captions: dict, bad: BadRecords, features: Path
) -> set[str]:
    """Each captioned image into the store with its captions, the first record of a key only (a repeated one
    is counted in ``bad``). Returns the keys written."""
    done: set[str] = set()
    for r in records:
        if r.key in done:
            bad.bad.append((f"image {r.key}", "duplicate features for this image (kept the first)"))
            continue
        if writer.n_classes and r.cls is not None and r.cls.shape[1] != writer.n_classes:
            raise DataError(
                f"{features}: image {r.key} has {r.cls.shape[1]} class scores, earlier images {writer.n_classes}"
            )
        split_name, texts = captions[r.key]
        idx = writer.add_image(r.feats, r.boxes, r.cls, split=split_name, key=r.key)
        for t in texts:
            writer.add_caption(idx, t)
        done.add(r.key)
    return done


def _check_missing(captions: dict, done: set[str], max_fraction: float, features: Path) -> None:
    """Stop when more than ``max_fraction`` of the captioned images have no features (the wrong feature file,
    or one cut short); the message names some of them."""
    missing = [k for k in captions if k not in done]
    if done and len(missing) > max_fraction * len(captions):
        raise DataError(
            f"{features}: no features for {len(missing)} of {len(captions)} captioned images "
            f"({100 * len(missing) / len(captions):.1f}% > the {100 * max_fraction:g}% allowed by --max-bad-fraction); "
            f"first: {', '.join(missing[:5])}"
        )


def import_captions(
    store_path: str | Path,
    fmt: str,
    annotations: str | Path,
    out: str | Path | None = None,
    add: bool = False,
    max_bad_fraction: float = 0.01,
) -> dict:
    """Give the images of an existing store (e.g. one written by ``mmtlab features extract``) the captions of
    ``annotations`` (format ``fmt``, see :data:`CAPTION_READERS`), matched by image key as ``data import``
    matches them (:func:`norm_key`: a file's stem, COCO ids). They replace the store's captions, or follow
    them with ``add``; splits are kept. Features are not copied (:func:`rewrite_store`); the store is replaced
    in place or written to ``out``. A caption whose key names no image of the store, or several, is skipped
    and counted like a malformed record (past ``max_bad_fraction`` nothing is written). Returns a summary."""
    _check_caption_format(fmt)
    store = open_store(store_path)
    annotations = _exists(Path(annotations), "--annotations")
    images_of: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(store.image_keys):
        images_of[norm_key(key)].append(i)
    bad = BadRecords(annotations, max_bad_fraction)
    pairs = [(int(i), text) for i, text in zip(store.caption_image, store.captions)] if add else []
    added = 0
    for c in CAPTION_READERS[fmt](annotations, bad):
        images = images_of.get(c.key, [])
        if len(images) != 1:
            bad.bad.append(
                (
                    f"image {c.key}",
                    f"{len(images)} images of {store.path} have this key"
                    if images
                    else f"no image of {store.path} has this key",
                )
            )
            continue
        pairs.append((images[0], c.text))
        added += 1
    bad.check()
    if not added:
        raise DataError(
            f"no caption of {annotations} names an image of {store.path}: caption keys are matched by file "
            f"stem; the store's keys look like {store.image_keys[:3]}"
        )
    data = [text.encode("utf-8") for _, text in pairs]
    arrays = {
        "captions.utf8": np.frombuffer(b"".join(data), dtype=np.uint8),
        "caption_offsets.i64": np.cumsum([0] + [len(d) for d in data]).astype("<i8"),
        "caption_image.i64": np.array([i for i, _ in pairs], dtype="<i8"),
    }
    without = store.n_images - len({i for i, _ in pairs})
    report = {
        "format": fmt,
        "annotations": str(annotations),
        "mode": "add" if add else "replace",
        "added": added,
        "images_without_captions": without,
        "captions": bad.summary(),
    }
    target, copied = rewrite_store(
        store, arrays, {**store.meta, "n_captions": len(pairs), "captions_import": report}, out
    )
    return {"out": str(target), **report, "n_captions": len(pairs), "copied_files": copied}
