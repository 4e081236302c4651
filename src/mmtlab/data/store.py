"""mmtlab's dataset directory: an image table, captions and memory-mapped region features.

Layout of a store directory (all arrays little-endian, raw, shapes given by ``meta.json``)::

    meta.json            format, version, feat_dim, n_classes, pixels_shape, n_images, n_captions, n_regions,
                         splits (name -> n_images), style, and whatever the producer adds (seed, source, ...)
    feats.f16            (n_regions, feat_dim) float16   region features of all images, back to back
    boxes.f32            (n_regions, 5) float32          x1, y1, x2, y2 in [0, 1], area fraction
    cls.f16              (n_regions, n_classes) float16  optional: detector class distribution per region
    region_offsets.i64   (n_images + 1,) int64           image i owns regions [off[i], off[i+1])
    pixels.u8            (n_images, 3, H, W) uint8       optional: rendered / resized RGB images
    image_split.u8       (n_images,) uint8               index into meta["split_names"]
    image_keys.txt       one key per image (the source's image id; may be empty)
    captions.utf8        all captions, UTF-8, back to back
    caption_offsets.i64  (n_captions + 1,) int64         byte offsets into captions.utf8
    caption_image.i64    (n_captions,) int64             image of each caption

At open, ``meta.json`` is read and the index arrays are checked (offsets rising to the files' ends, every
caption's image and every image's split in range: memory-mapped, a few bytes per caption), so a damaged store is
refused with one :class:`DataError` naming the file instead of failing mid-run; every other array is a
``numpy.memmap`` opened on first use (and reopened lazily after pickling, so DataLoader workers share the page
cache, not copies). A store is written by :class:`StoreWriter` into a temporary directory
``.NAME.tmp-PID-XXXX`` that is renamed into place by :meth:`StoreWriter.close`; ``meta.json`` is written last, so
a half-written store is never mistaken for a complete one, and the next writer of the same store removes the
temporaries of writers that died. A store replaces only a directory that holds a store and nothing else (or
nothing): the files next to it, a run, a checkpoint are never deleted.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MmtlabError

FORMAT = "mmtlab-store"
VERSION = 1
BOX_DIM = 5
STORE_FILES = frozenset({
    "meta.json", "feats.f16", "boxes.f32", "cls.f16", "region_offsets.i64", "pixels.u8", "image_split.u8",
    "image_keys.txt", "captions.utf8", "caption_offsets.i64", "caption_image.i64",
})  # fmt: skip
META_KEYS = ("feat_dim", "n_classes", "pixels_shape", "n_images", "n_captions", "n_regions", "split_names", "splits")


class DataError(MmtlabError, ValueError):
    """A dataset is missing, malformed or inconsistent. The message names the file and what was expected."""


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(R, 4) normalised x1, y1, x2, y2 -> (R, 5) with the area fraction appended."""
    boxes = np.asarray(boxes, dtype=np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.concatenate([boxes, area[:, None]], axis=1)


class StoreWriter:
    """Write a store image by image: ``add_image`` then ``add_caption`` for its captions, then ``close``.

    Usable as a context manager: on an exception the temporary directory is removed and ``out_dir`` is left
    untouched. An existing store at ``out_dir`` is replaced only when ``close`` succeeds, and only when the
    directory holds nothing but a store (:func:`check_store_target`).
    """

    def __init__(
        self,
        out_dir: str | Path,
        feat_dim: int,
        n_classes: int | None = None,
        pixels_shape: tuple[int, int, int] | None = None,
        meta: dict[str, Any] | None = None,
    ):
        self.out_dir = Path(out_dir)
        check_store_target(self.out_dir)
        self.feat_dim = int(feat_dim)
        self.n_classes = int(n_classes) if n_classes else None
        self.pixels_shape = tuple(int(s) for s in pixels_shape) if pixels_shape else None
        if self.pixels_shape is not None and (len(self.pixels_shape) != 3 or self.pixels_shape[0] != 3):
            raise DataError(f"pixels_shape must be (3, H, W), got {pixels_shape}")
        self.meta = dict(meta or {})
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out_dir)
        self.tmp = self.out_dir.parent / _temporary_name(self.out_dir, "tmp")
        self.tmp.mkdir()
        names = ["feats.f16", "boxes.f32", "image_split.u8", "captions.utf8", "caption_image.i64", "image_keys.txt"]
        names += ["cls.f16"] if self.n_classes else []
        names += ["pixels.u8"] if self.pixels_shape else []
        self._files = {n: open(self.tmp / n, "wb") for n in names}
        self._region_offsets = [0]
        self._caption_offsets = [0]
        self._splits: dict[str, int] = {}
        self.n_images = 0
        self.n_captions = 0
        self.closed = False

    def add_image(self, feats, boxes, cls=None, pixels=None, split: str = "train", key: str | None = None) -> int:
        """Append one image: ``feats (R, feat_dim)``, ``boxes (R, 4 or 5)`` normalised to [0, 1] (the area
        fraction is computed when absent), ``cls (R, n_classes)``, ``pixels (3, H, W) uint8``. Returns its index."""
        feats = np.asarray(feats)
        boxes = np.asarray(boxes, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != self.feat_dim:
            raise DataError(
                f"image {key or self.n_images}: features of shape {feats.shape}; this store has feat_dim={self.feat_dim}"
            )
        if not np.isfinite(feats).all():
            raise DataError(f"image {key or self.n_images}: non-finite feature values")
        if boxes.ndim != 2 or boxes.shape[0] != feats.shape[0] or boxes.shape[1] not in (4, BOX_DIM):
            raise DataError(
                f"image {key or self.n_images}: boxes of shape {boxes.shape}; expected ({feats.shape[0]}, 4 or 5)"
            )
        if boxes.shape[1] == 4:
            boxes = box_area(boxes)
        self._files["feats.f16"].write(feats.astype("<f2").tobytes())
        self._files["boxes.f32"].write(boxes.astype("<f4").tobytes())
        if self.n_classes:
            cls = np.asarray(cls if cls is not None else np.full((len(feats), self.n_classes), 1.0 / self.n_classes))
            if cls.shape != (len(feats), self.n_classes):
                raise DataError(
                    f"image {key or self.n_images}: class scores of shape {cls.shape}; expected ({len(feats)}, {self.n_classes})"
                )
            self._files["cls.f16"].write(cls.astype("<f2").tobytes())
        if self.pixels_shape:
            pixels = np.asarray(pixels)
            if pixels.shape != self.pixels_shape or pixels.dtype != np.uint8:
                raise DataError(
                    f"image {key or self.n_images}: pixels {pixels.shape} {pixels.dtype}; expected {self.pixels_shape} uint8"
                )
            self._files["pixels.u8"].write(pixels.tobytes())
        split_id = self._splits.setdefault(split, len(self._splits))
        if split_id > 255:
            raise DataError("a store holds at most 256 split names")
        self._files["image_split.u8"].write(bytes([split_id]))
        self._files["image_keys.txt"].write((_one_line(key or "") + "\n").encode())
        self._region_offsets.append(self._region_offsets[-1] + len(feats))
        self.n_images += 1
        return self.n_images - 1

    def add_caption(self, image_index: int, text: str) -> int:
        """Append a caption of image ``image_index``; whitespace (newlines included) is collapsed. Returns its index."""
        if not 0 <= image_index < self.n_images:
            raise DataError(f"caption for image {image_index}, but the store has {self.n_images} images so far")
        text = _one_line(text)
        if not text:
            raise DataError(f"empty caption for image {image_index}")
        data = text.encode("utf-8")
        self._files["captions.utf8"].write(data)
        self._files["caption_image.i64"].write(np.int64(image_index).astype("<i8").tobytes())
        self._caption_offsets.append(self._caption_offsets[-1] + len(data))
        self.n_captions += 1
        return self.n_captions - 1

    def close(self) -> Path:
        """Finish the files, write ``meta.json`` and move the store into place. Returns its path."""
        if self.closed:
            return self.out_dir
        for f in self._files.values():
            f.close()
        np.asarray(self._region_offsets, dtype="<i8").tofile(self.tmp / "region_offsets.i64")
        np.asarray(self._caption_offsets, dtype="<i8").tofile(self.tmp / "caption_offsets.i64")
        split_ids = np.fromfile(self.tmp / "image_split.u8", dtype=np.uint8)
        names = list(self._splits)
        meta = {
            **self.meta,
            "format": FORMAT,
            "version": VERSION,
            "feat_dim": self.feat_dim,
            "n_classes": self.n_classes,
            "pixels_shape": list(self.pixels_shape) if self.pixels_shape else None,
            "n_images": self.n_images,
            "n_captions": self.n_captions,
            "n_regions": self._region_offsets[-1],
            "split_names": names,
            "splits": {n: int((split_ids == i).sum()) for i, n in enumerate(names)},
        }
        meta.setdefault("style", None)
        _write_meta(self.tmp, meta)
        _move_into_place(self.tmp, self.out_dir)
        self.closed = True
        return self.out_dir

    def abort(self) -> None:
        """Drop everything written so far."""
        for f in self._files.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.closed = True

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self.closed:
            self.abort()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _write_meta(directory: Path, meta: dict) -> None:
    (directory / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished store ``tmp`` to ``out_dir``; a store already there is renamed aside first and
    removed only once the new one is in place."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / _temporary_name(out_dir, "old")
        out_dir.rename(old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old)


def check_store_target(out_dir: Path) -> None:
    """Raise :class:`DataError` unless ``out_dir`` is new, empty, or a store and nothing else (a store is
    replaced as a whole: inputs kept inside it, a run or a checkpoint would be lost)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a directory; choose another --out")
    names = sorted(p.name for p in out_dir.iterdir())
    if not names:
        return
    if not _is_store_meta(out_dir / "meta.json"):
        raise DataError(
            f"{out_dir}: exists and is not an mmtlab store (holds {', '.join(names[:3])}); choose another --out"
        )
    foreign = [n for n in names if n not in STORE_FILES]
    if foreign:
        raise DataError(
            f"{out_dir}: holds files that are not part of the store ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); replacing the store would delete them: move them or choose another --out"
        )


def _is_store_meta(meta_file: Path) -> bool:
    try:
        return json.loads(meta_file.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _temporary_name(out_dir: Path, kind: str) -> str:
    """``.NAME.KIND-PID-XXXXXXXX``: a hidden sibling of ``out_dir`` that names the process writing it."""
    return f".{out_dir.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_temporaries(out_dir: Path) -> None:
    """Remove the temporaries of earlier writers of ``out_dir`` whose process is gone (killed mid-write)."""
    for kind in ("tmp", "old"):
        for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.{kind}-*"):
            pid = path.name.removeprefix(f".{out_dir.name}.{kind}-").split("-")[0]
            if not (pid.isdigit() and _alive(int(pid))):  # no pid: written before pids were in the name
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class _Captions:
    """Lazy sequence of caption strings of a store (view)."""

    def __init__(self, store: Store):
        self._store = store

    def __len__(self) -> int:
        return len(self._store)

    def __getitem__(self, i: int) -> str:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"caption {i} out of range for {n} captions")
        g = int(self._store._caption_ids[i]) if self._store._caption_ids is not None else i % n
        off = self._store._arr("caption_offsets.i64")
        return bytes(self._store._arr("captions.utf8")[off[g] : off[g + 1]]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


class Store:
    """A (view of a) store. ``len(store)`` is the number of (image, caption) pairs; image and caption indices
    are local to the view (``store.split("test").image(0)`` is the split's first image)."""

    def __init__(
        self,
        path: Path,
        meta: dict,
        image_ids: np.ndarray | None = None,
        caption_ids: np.ndarray | None = None,
        split_name: str | None = None,
    ):
        self.path = Path(path)
        self._split_name = split_name
        self._meta = meta
        self._image_ids = image_ids  # global ids of this view's images (sorted), None = all
        self._caption_ids = caption_ids
        self._mm: dict[str, np.ndarray] = {}
        self._caption_image: np.ndarray | None = None

    # -- lazy arrays ------------------------------------------------------------------------------------
    def _arr(self, name: str) -> np.ndarray:
        if name not in self._mm:
            m = self._meta
            shapes = {
                "feats.f16": ("<f2", (m["n_regions"], m["feat_dim"])),
                "boxes.f32": ("<f4", (m["n_regions"], BOX_DIM)),
                "cls.f16": ("<f2", (m["n_regions"], m["n_classes"] or 0)),
                "pixels.u8": ("u1", (m["n_images"], *(m["pixels_shape"] or ()))),
                "region_offsets.i64": ("<i8", (m["n_images"] + 1,)),
                "image_split.u8": ("u1", (m["n_images"],)),
                "captions.utf8": ("u1", None),
                "caption_offsets.i64": ("<i8", (m["n_captions"] + 1,)),
                "caption_image.i64": ("<i8", (m["n_captions"],)),
            }
            dtype, shape = shapes[name]
            file = self.path / name
            if not file.is_file():
                raise DataError(f"{file}: missing from the store (damaged or written by another version?)")
            want = int(np.prod(shape)) * np.dtype(dtype).itemsize if shape is not None else None
            size = file.stat().st_size
            if want is not None and size != want:
                raise DataError(f"{file}: {size} bytes, meta.json implies {want}; the store is damaged")
            if size == 0:  # numpy cannot map empty files
                self._mm[name] = np.zeros(shape if shape is not None else (0,), dtype=dtype)
            else:
                # a plain ndarray view of the map: same pages, without np.memmap's per-index overhead
                self._mm[name] = np.memmap(file, dtype=dtype, mode="r", shape=shape).view(np.ndarray)
        return self._mm[name]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_mm"] = {}  # memmaps are reopened in the receiving process
        return state

    # -- the public interface ---------------------------------------------------------------------------
    @property
    def meta(self) -> dict:
        if self._image_ids is None:
            return dict(self._meta)
        n = len(self._image_ids)
        return {
            **self._meta,
            "n_images": n,
            "n_captions": len(self),
            "split": self._split_name,
            "splits": {self._split_name: n},
        }

    @property
    def n_images(self) -> int:
        return self._meta["n_images"] if self._image_ids is None else len(self._image_ids)

    def __len__(self) -> int:
        return self._meta["n_captions"] if self._caption_ids is None else len(self._caption_ids)

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"Store({str(self.path)!r}, style={m.get('style')!r}, images={m['n_images']}, captions={m['n_captions']})"
        )

    @property
    def captions(self) -> _Captions:
        return _Captions(self)

    @property
    def caption_image(self) -> np.ndarray:
        """(n_captions,) int64: the (view-local) image index of each caption."""
        if self._caption_image is None:
            ci = np.asarray(self._arr("caption_image.i64"))
            if self._caption_ids is not None:
                ci = np.searchsorted(self._image_ids, ci[self._caption_ids])
            self._caption_image = np.array(ci, dtype=np.int64)  # a writable copy (8 bytes a caption)
        return self._caption_image

    @property
    def image_keys(self) -> list[str]:
        """The source's id of each image of the view (read on first use)."""
        keys = (self.path / "image_keys.txt").read_text().split("\n")[: self._meta["n_images"]]
        return keys if self._image_ids is None else [keys[i] for i in self._image_ids]

    @property
    def has_classes(self) -> bool:
        return bool(self._meta.get("n_classes"))

    @property
    def has_pixels(self) -> bool:
        return bool(self._meta.get("pixels_shape"))

    def global_image(self, i: int) -> int:
        n = self.n_images
        if not -n <= i < n:
            raise IndexError(f"image {i} out of range for {n} images")
        return int(self._image_ids[i]) if self._image_ids is not None else i % n

    def image(self, i: int, pixels: bool = True) -> dict[str, np.ndarray]:
        """Image ``i``: ``feats (R, F) float16``, ``boxes (R, 5) float32``, ``cls (R, C) float16`` and
        ``pixels (3, H, W) uint8`` when the store has them (and ``pixels``). Reads only this image's bytes."""
        g = self.global_image(i)
        off = self._arr("region_offsets.i64")
        a, b = int(off[g]), int(off[g + 1])
        out = {"feats": np.array(self._arr("feats.f16")[a:b]), "boxes": np.array(self._arr("boxes.f32")[a:b])}
        if self.has_classes:
            out["cls"] = np.array(self._arr("cls.f16")[a:b])
        if pixels and self.has_pixels:
            out["pixels"] = np.array(self._arr("pixels.u8")[g])
        return out

    def n_regions(self, i: int) -> int:
        off = self._arr("region_offsets.i64")
        g = self.global_image(i)
        return int(off[g + 1] - off[g])

    def sample_images(self, n: int, seed: int = 0) -> Store:
        """A view of ``n`` of this view's images drawn with ``seed`` (:func:`seeded_sample`) and all their
        captions; the view itself when it holds ``n`` images or fewer."""
        if n < 1:
            raise DataError(f"{self.path}: cannot sample {n} images; give at least 1")
        if n >= self.n_images:
            return self
        return self.subset(seeded_sample(self.n_images, n, seed))

    def subset(self, images: np.ndarray, name: str | None = None) -> Store:
        """A view of this view's images ``images`` (sorted local indices) and all their captions, named ``name``
        (default: this view's split name)."""
        images = np.asarray(images, dtype=np.int64)
        ids = images if self._image_ids is None else self._image_ids[images]
        cap_img = np.asarray(self._arr("caption_image.i64"))
        pool = np.arange(len(cap_img)) if self._caption_ids is None else self._caption_ids
        caps = pool[np.isin(cap_img[pool], ids)].astype(np.int64)
        return Store(self.path, self._meta, ids, caps, split_name=self._split_name if name is None else name)

    def region_counts(self) -> np.ndarray:
        """(n_images,) int64: the number of regions of each image of the view (the global token not counted)."""
        counts = np.diff(np.asarray(self._arr("region_offsets.i64")))
        return counts if self._image_ids is None else counts[self._image_ids]

    def split(self, name: str) -> Store:
        """A view holding the images of split ``name`` and their captions."""
        names = self._meta.get("split_names", [])
        if name not in names:
            have = ", ".join(f"{n} ({self._meta['splits'][n]} images)" for n in names) or "none"
            raise DataError(f"{self.path}: no split {name!r}; splits in this store: {have}")
        ids = np.flatnonzero(np.asarray(self._arr("image_split.u8")) == names.index(name)).astype(np.int64)
        if self._image_ids is not None:
            ids = np.intersect1d(ids, self._image_ids)
        cap_img = np.asarray(self._arr("caption_image.i64"))
        caps = np.flatnonzero(np.isin(cap_img, ids)).astype(np.int64)
        return Store(self.path, self._meta, ids, caps, split_name=name)


def open_store(path: str | Path) -> Store:
    """Open a store directory (reads ``meta.json`` only). Raises :class:`DataError` naming the path when it
    is not a complete mmtlab store."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not path.is_dir():
        raise DataError(
            f"{path}: no such dataset directory (create one with `mmtlab data synth` or `mmtlab data import`)"
        )
    if not meta_file.is_file():
        raise DataError(
            f"{path}: not an mmtlab store (no meta.json); create one with `mmtlab data synth` or `mmtlab data import`"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{meta_file}: unreadable ({e})") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_file}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise DataError(f"{meta_file}: store version {meta.get('version')}, this mmtlab reads version {VERSION}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise DataError(f"{meta_file}: missing {', '.join(missing)}; the store is damaged, write it again")
    store = Store(path, meta)
    _check_indices(store)
    return store


def _check_indices(store: Store) -> None:
    """Refuse a store whose index arrays point outside its data (a damaged or hand-edited store): checked once
    at open, memory-mapped, so that training and evaluation never index out of range mid-run."""
    m = store._meta
    ends = {
        "region_offsets.i64": (m["n_regions"], "regions"),
        "caption_offsets.i64": (len(store._arr("captions.utf8")), "caption bytes"),
    }
    for name, (end, what) in ends.items():
        off = store._arr(name)
        if off[0] != 0 or off[-1] != end or bool((off[1:] < off[:-1]).any()):
            raise DataError(
                f"{store.path / name}: offsets do not rise from 0 to the {end} {what} of the store; "
                "the store is damaged, write it again"
            )
    for name, limit, what in (
        ("caption_image.i64", m["n_images"], "images"),
        ("image_split.u8", len(m["split_names"]), "split names"),
    ):
        index = store._arr(name)
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= limit):
            bad = int(np.flatnonzero((index < 0) | (index >= limit))[0])
            raise DataError(
                f"{store.path / name}: entry {bad} is {int(index[bad])}, outside the {limit} {what} of the store; "
                "the store is damaged, write it again"
            )


def seeded_sample(n: int, k: int, seed: int) -> np.ndarray:
    """(k,) sorted indices of ``k`` of ``n`` items, drawn without replacement by ``random.Random(seed)``: the
    same on every platform and numpy version."""
    return np.array(sorted(random.Random(seed).sample(range(n), k)), dtype=np.int64)


def no_pixels_error(path: str | Path) -> DataError:
    """The error for a pixel model (``model.image_input=pixels``) given the store ``path`` without pixels."""
    return DataError(
        f"{path}: the model reads pixels (model.image_input=pixels), but this store holds no pixels, only region features; "
        "write the store with pixels (`mmtlab features extract ... --pixels 64`, or `mmtlab data synth`, which "
        "renders them) or use a model of region features (model.image_input=regions)"
    )


def split_store(
    path: str | Path,
    test_fraction: float = 0.2,
    seed: int = 0,
    names: tuple[str, str] = ("train", "test"),
    out: str | Path | None = None,
) -> dict:
    """Relabel every image of the store ``path`` into a seeded train/test split, by image (an image and all its
    captions land on one side), without copying features (:func:`rewrite_store`: only ``image_split.u8`` and
    ``meta.json`` are new), in place or into ``out``. Returns a summary."""
    store = open_store(path)
    n = store.n_images
    n_test = round(test_fraction * n)
    if not 0.0 < test_fraction < 1.0 or not 0 < n_test < n:
        raise DataError(
            f"{store.path}: --test-fraction {test_fraction} of {n} images leaves no train or no test image; "
            "give a fraction in (0, 1) that leaves at least one image on each side"
        )
    if len(set(names)) != 2 or not all(names):
        raise DataError(f"split names {names}: need two different, non-empty names")
    split = np.zeros(n, dtype=np.uint8)
    split[seeded_sample(n, n_test, seed)] = 1
    counts = {names[0]: n - n_test, names[1]: n_test}
    report = {"seed": seed, "test_fraction": test_fraction, "by": "image", "previous_splits": store.meta["splits"]}
    meta = {**store.meta, "split_names": list(names), "splits": counts, "resplit": report}
    target, copied = rewrite_store(store, {"image_split.u8": split}, meta, out)
    captions = np.bincount(split[np.asarray(store._arr("caption_image.i64"))], minlength=2)
    return {
        "out": str(target),
        "images": counts,
        "captions": {names[0]: int(captions[0]), names[1]: int(captions[1])},
        "seed": seed,
        "copied_files": copied,
    }


def rewrite_store(
    store: Store, arrays: dict[str, np.ndarray], meta: dict, out: str | Path | None = None
) -> tuple[Path, list[str]]:
    """Write ``store`` again with the files ``arrays`` (name -> array, written raw) and ``meta`` replaced and
    every other file a hard link to the old one (a copy only where the file system cannot link): features are
    never copied. The new store is built in a hidden sibling of ``out`` (default: the store itself), checked by
    :func:`open_store` and renamed into place as :class:`StoreWriter` does, so a crash leaves the old store or
    the new one. Returns its path and the names of the files that had to be copied."""
    target = Path(out) if out is not None else store.path
    if target.resolve() != store.path.resolve():
        check_store_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = target.parent / _temporary_name(target, "tmp")
    tmp.mkdir()
    try:
        kept = sorted(STORE_FILES - {"meta.json", *arrays})
        copied = [name for name in kept if (store.path / name).is_file() and not _link(store.path / name, tmp / name)]
        for name, array in arrays.items():
            array.tofile(tmp / name)
        _write_meta(tmp, meta)
        open_store(tmp)  # the new index is checked before it replaces anything
        _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, copied


def _link(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` to ``dst`` (True), or copy it where the file system cannot link (False)."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False
