"""Readers for precomputed region features: bottom-up-attention TSV, per-image ``.npz``, HDF5.

Each yields :class:`Regions` with boxes normalised to [0, 1]. A record with non-finite features, boxes outside
the image or inconsistent sizes is skipped and counted; a feature width other than the expected one is an
error naming the file (it means the wrong file or the wrong ``--feat-dim``, not one bad record).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .readers import BadRecords, norm_key, wds_samples
from .store import DataError

BOX_TOLERANCE = 0.02  # detectors emit boxes a pixel or so past the border


@dataclass
class Regions:
    key: str
    feats: np.ndarray  # (R, F)
    boxes: np.ndarray  # (R, 4) x1, y1, x2, y2 in [0, 1]
    cls: np.ndarray | None = None  # (R, C) class distribution


class FeatureWidth:
    """The feature width of a source: fixed by ``--feat-dim`` or by its first good record."""

    def __init__(self, source: Path, feat_dim: int | None):
        self.source, self.value = source, feat_dim

    def check(self, where: str, width: int) -> None:
        if self.value is None:
            self.value = width
        elif width != self.value:
            raise DataError(
                f"{self.source}: {where} has {width}-d features, expected {self.value} (wrong file or --feat-dim?)"
            )


def validate(where: str, key, feats, boxes, size, cls, bad: BadRecords, width: FeatureWidth) -> Regions | None:
    """Check and normalise one image's regions (``size`` = (w, h) in pixels, or None for normalised boxes)."""
    feats, boxes = np.asarray(feats), np.asarray(boxes, dtype=np.float64)
    if feats.ndim != 2 or boxes.ndim != 2 or boxes.shape[1] < 4 or len(boxes) != len(feats) or len(feats) == 0:
        bad.skip(where, f"features {feats.shape} and boxes {boxes.shape} do not match")
        return None
    width.check(where, feats.shape[1])
    if not np.isfinite(feats).all():
        bad.skip(where, "non-finite feature values (NaN/inf)")
        return None
    boxes = boxes[:, :4]
    if size is not None:
        w, h = float(size[0]), float(size[1])
        if not (w > 0 and h > 0):
            bad.skip(where, f"image size {w} x {h}")
            return None
        boxes = boxes / np.array([w, h, w, h])
    elif boxes.max() > 1 + BOX_TOLERANCE:
        bad.skip(where, "boxes in pixels but no image_w / image_h given")
        return None
    if (
        not np.isfinite(boxes).all()
        or boxes.min() < -BOX_TOLERANCE
        or boxes.max() > 1 + BOX_TOLERANCE
        or (boxes[:, 2:] < boxes[:, :2]).any()
    ):
        bad.skip(where, "box outside the image")
        return None
    if cls is not None and (np.asarray(cls).shape[0] != len(feats) or not np.isfinite(cls).all()):
        bad.skip(where, "class scores do not match the regions")
        return None
    bad.ok()
    return Regions(norm_key(key), feats, np.clip(boxes, 0.0, 1.0), None if cls is None else np.asarray(cls))


def _b64(field: str, rows: int) -> np.ndarray:
    arr = np.frombuffer(base64.b64decode(field, validate=False), dtype=np.float32)
    if rows <= 0 or arr.size % rows:
        raise ValueError(f"{arr.size} values do not split into {rows} rows")
    return arr.reshape(rows, -1)


# bottom-up-attention (Anderson et al.) and LXMERT's variant, without header
BUTD_FIELDS = {
    6: ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features"),
    7: ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features", "cls_prob"),
    10: (
        "image_id",
        "image_h",
        "image_w",
        "objects_id",
        "objects_conf",
        "attrs_id",
        "attrs_conf",
        "num_boxes",
        "boxes",
        "features",
    ),
}


def read_butd_tsv(path: Path, bad: BadRecords, width: FeatureWidth) -> Iterator[Regions]:
    """Bottom-up-attention TSV: one image per line, base64 float32 ``boxes`` (pixels) and ``features``."""
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8-sig", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            where = f"line {lineno}"
            names = BUTD_FIELDS.get(len(row))
            if names is None:
                bad.skip(where, f"{len(row)} fields, expected {' or '.join(map(str, BUTD_FIELDS))}")
                continue
            rec = dict(zip(names, row))
            try:
                n = int(rec["num_boxes"])
                feats, boxes = _b64(rec["features"], n), _b64(rec["boxes"], n)
                cls = _b64(rec["cls_prob"], n) if "cls_prob" in rec else None
                size = (float(rec["image_w"]), float(rec["image_h"]))
            except (ValueError, binascii.Error) as e:
                bad.skip(where, f"undecodable record ({e})")
                continue
            r = validate(where, rec["image_id"], feats, boxes, size, cls, bad, width)
            if r is not None:
                yield r


def _first(d, names: tuple[str, ...]):
    return next((np.asarray(d[n]) for n in names if n in d), None)


FEAT_NAMES, BOX_NAMES, CLS_NAMES = ("features", "feats", "x"), ("boxes", "bbox"), ("cls_prob", "cls")


def _from_arrays(where: str, key, d, bad: BadRecords, width: FeatureWidth) -> Regions | None:
    feats, boxes = _first(d, FEAT_NAMES), _first(d, BOX_NAMES)
    if feats is None or boxes is None:
        bad.skip(where, f"no features ({'/'.join(FEAT_NAMES)}) or boxes ({'/'.join(BOX_NAMES)}) array")
        return None
    size = (
        (float(np.asarray(d["image_w"])), float(np.asarray(d["image_h"])))
        if "image_w" in d and "image_h" in d
        else None
    )
    return validate(where, key, feats, boxes, size, _first(d, CLS_NAMES), bad, width)


def _npz(where: str, key, data: bytes | Path, bad: BadRecords, width: FeatureWidth) -> Regions | None:
    try:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as d:
            return _from_arrays(where, key, d, bad, width)  # loads only the arrays it reads (not e.g. an object `info`)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        bad.skip(where, f"unreadable .npz ({e})")
        return None


def read_npz_dir(path: Path, bad: BadRecords, width: FeatureWidth) -> Iterator[Regions]:
    """A directory of ``KEY.npz`` files with ``features`` (R, F), ``boxes`` (R, 4) and optionally ``image_w``,
    ``image_h`` (boxes in pixels; otherwise normalised) and ``cls_prob`` (R, C); bottom-up-attention.pytorch's
    names ``x`` / ``bbox`` too (its pickled ``info`` dict is not read)."""
    files = sorted(path.glob("*.npz"))
    if not files:
        raise DataError(f"{path}: no .npz files in this directory")
    for file in files:
        r = _npz(file.name, file.stem, file, bad, width)
        if r is not None:
            yield r


def read_hdf5(path: Path, bad: BadRecords, width: FeatureWidth) -> Iterator[Regions]:
    """HDF5 with one group per image key holding ``features``, ``boxes`` and optionally ``image_w``, ``image_h``
    (datasets or attributes) and ``cls_prob``."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
    with h5:
        for key in h5:
            group = h5[key]
            if not isinstance(group, h5py.Group):
                bad.skip(f"entry {key}", "not a group")
                continue
            d = {**{k: v for k, v in group.attrs.items()}, **{k: group[k][()] for k in group}}
            r = _from_arrays(f"group {key}", key, d, bad, width)
            if r is not None:
                yield r


def read_wds_features(path: Path, bad: BadRecords, width: FeatureWidth) -> Iterator[Regions]:
    """The ``npz`` members of WebDataset shards (as for :func:`read_npz_dir`)."""
    for sample in wds_samples(path):
        where = f"sample {sample.get('__key__')}"
        if "npz" not in sample:
            bad.skip(where, "no .npz member with region features")
            continue
        r = _npz(where, sample["__key__"], sample["npz"], bad, width)
        if r is not None:
            yield r


FEATURE_READERS: dict[str, Callable[[Path, BadRecords, FeatureWidth], Iterator[Regions]]] = {
    "tsv": read_butd_tsv,
    "npz": read_npz_dir,
    "hdf5": read_hdf5,
    "webdataset": read_wds_features,
}


def feature_format(path: Path) -> str:
    """Guess the feature format from the path: a directory of .npz, .tsv, .h5/.hdf5, .tar shards."""
    if path.is_dir():
        return "npz" if any(path.glob("*.npz")) else "webdataset" if any(path.glob("*.tar")) else "npz"
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    if suffix == ".tar" or "{" in path.name:
        return "webdataset"
    return "tsv"
