"""Readers for the caption formats researchers hold. Each yields :class:`Caption` records and reports malformed
ones to a shared :class:`BadRecords` (skipped and counted; the import stops past a fraction).

Image keys are normalised by :func:`norm_key` on both sides (captions and features), so ``"000000391895"``,
``391895`` and ``COCO_val2014_000000391895.jpg`` name the same image.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError
from .store import DataError

_COCO_NAME = re.compile(r"(?:COCO_[A-Za-z]+\d*_)?0*(\d+)")


def norm_key(key) -> str:
    """Canonical image key: file stem, COCO file names and zero-padded numbers reduced to the number."""
    stem = str(key).strip()
    stem = stem.rsplit("/", 1)[-1]
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    m = _COCO_NAME.fullmatch(stem)
    return (m.group(1) or "0") if m else stem


@dataclass
class Caption:
    key: str
    text: str
    split: str | None = None


class BadRecords:
    """Skip-and-count accounting of malformed records of one source file."""

    def __init__(
        self, source: str | Path, max_fraction: float = 0.01, show: int = 5, what: str = "records are malformed"
    ):
        if not 0.0 <= max_fraction <= 1.0:
            raise ConfigError(f"--max-bad-fraction {max_fraction}: must be in [0, 1]")
        self.source, self.max_fraction, self.show, self.what = str(source), max_fraction, show, what
        self.total = 0
        self.bad: list[tuple[str, str]] = []

    def ok(self) -> None:
        self.total += 1

    def skip(self, where: str, reason: str) -> None:
        self.total += 1
        self.bad.append((where, reason))

    def check(self, final: bool = True) -> None:
        """Raise :class:`DataError` when the bad fraction exceeds the limit (mid-stream: only after 1,000 records)."""
        if not self.bad or (not final and self.total < 1000):
            return
        if len(self.bad) > self.max_fraction * self.total:
            first = "; ".join(f"{w}: {r}" for w, r in self.bad[: self.show])
            raise DataError(
                f"{self.source}: {len(self.bad)} of {self.total} {self.what} "
                f"({100 * len(self.bad) / self.total:.1f}% > the {100 * self.max_fraction:g}% allowed by "
                f"--max-bad-fraction); first: {first}"
            )

    def summary(self) -> dict:
        return {
            "source": self.source,
            "records": self.total,
            "skipped": len(self.bad),
            "first_skipped": [f"{w}: {r}" for w, r in self.bad[: self.show]],
        }


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def _text(value) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _emit(bad: BadRecords, where: str, key, text, split=None) -> Iterator[Caption]:
    text = _text(text)
    if key is None or str(key).strip() == "":
        bad.skip(where, "no image id")
    elif not text:
        bad.skip(where, "empty caption")
    else:
        bad.ok()
        yield Caption(norm_key(key), text, split)


def read_karpathy(path: Path, bad: BadRecords) -> Iterator[Caption]:
    """Karpathy split JSON (``dataset_coco.json`` / ``dataset_flickr30k.json``): images with ``split`` and ``sentences``."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a Karpathy split file (expected {{'images': [...]}})")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("sentences"), list):
            bad.skip(f"image #{i}", "no 'sentences' list")
            continue
        key = img.get("cocoid", img.get("filename"))
        split = {"restval": "train"}.get(img.get("split"), img.get("split"))
        for j, s in enumerate(img["sentences"]):
            yield from _emit(bad, f"image #{i} sentence {j}", key, s.get("raw") if isinstance(s, dict) else None, split)


def read_coco(path: Path, bad: BadRecords) -> Iterator[Caption]:
    """COCO ``captions_*.json``: ``annotations`` of ``{image_id, caption}`` over ``images``."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: not a COCO captions file (expected {{'images': [...], 'annotations': [...]}})")
    known = {img.get("id") for img in data.get("images", []) if isinstance(img, dict)}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or (known and ann.get("image_id") not in known):
            bad.skip(f"annotation #{i}", "unknown image_id" if isinstance(ann, dict) else "not an object")
            continue
        yield from _emit(bad, f"annotation #{i}", ann.get("image_id"), ann.get("caption"))


def _read_tsv(path: Path, bad: BadRecords, key_of: Callable[[int, str], str]) -> Iterator[Caption]:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 2:
                bad.skip(f"line {lineno}", f"{len(fields)} tab-separated fields, expected caption and URL")
                continue
            url = next((x for x in fields if "://" in x), None)
            if url is None:
                bad.skip(f"line {lineno}", "no URL field")
                continue
            caption = fields[1] if fields[0] == url else fields[0]
            yield from _emit(bad, f"line {lineno}", key_of(lineno - 1, url), caption)


def read_cc(path: Path, bad: BadRecords) -> Iterator[Caption]:
    """Conceptual Captions TSV (``caption<TAB>url``); the image key is the 0-based row index."""
    return _read_tsv(path, bad, lambda row, url: str(row))


def read_sbu(path: Path, bad: BadRecords) -> Iterator[Caption]:
    """SBU captions TSV (``url<TAB>caption`` or ``caption<TAB>url``); the image key is the URL's file name."""
    return _read_tsv(path, bad, lambda row, url: url.rstrip("/").rsplit("/", 1)[-1])


def read_vg(path: Path, bad: BadRecords) -> Iterator[Caption]:
    """Visual Genome ``region_descriptions.json``: every region phrase is a caption of its image."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: not a Visual Genome region_descriptions.json (expected a list of images)")
    for i, img in enumerate(data):
        if not isinstance(img, dict) or not isinstance(img.get("regions"), list):
            bad.skip(f"image #{i}", "no 'regions' list")
            continue
        for j, r in enumerate(img["regions"]):
            r = r if isinstance(r, dict) else {}
            yield from _emit(bad, f"image #{i} region {j}", r.get("image_id", img.get("id")), r.get("phrase"))


def _jsonl(path: Path, bad: BadRecords) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                bad.skip(f"line {lineno}", f"bad JSON ({e.msg})")
                continue
            if not isinstance(rec, dict):
                bad.skip(f"line {lineno}", "not a JSON object")
                continue
            yield lineno, rec


def read_narratives(path: Path, bad: BadRecords) -> Iterator[Caption]:
    """Localized Narratives JSONL (``{"image_id", "caption", "traces", ...}`` per line)."""
    for lineno, rec in _jsonl(path, bad):
        yield from _emit(bad, f"line {lineno}", rec.get("image_id"), rec.get("caption"))


IMAGE_FIELDS = ("image", "image_path", "image_id", "filename", "file_name", "url", "key")
CAPTION_FIELDS = ("caption", "text", "sentence", "raw")


def _pick(rec: dict, names: tuple[str, ...]):
    return next((rec[n] for n in names if rec.get(n) not in (None, "")), None)


def read_jsonl(path: Path, bad: BadRecords) -> Iterator[Caption]:
    """Generic JSONL: one object per line with an image field (:data:`IMAGE_FIELDS`), a caption field
    (:data:`CAPTION_FIELDS`) and optionally ``split``."""
    for lineno, rec in _jsonl(path, bad):
        yield from _emit(bad, f"line {lineno}", _pick(rec, IMAGE_FIELDS), _pick(rec, CAPTION_FIELDS), rec.get("split"))


def read_csv(path: Path, bad: BadRecords) -> Iterator[Caption]:
    """Generic CSV with a header naming an image column and a caption column (as for JSONL) and optionally
    ``split``; a ``.tsv`` file is read tab-separated."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        fields = reader.fieldnames or []
        if not any(n in fields for n in IMAGE_FIELDS) or not any(n in fields for n in CAPTION_FIELDS):
            raise DataError(
                f"{path}: CSV header {fields} lacks an image column ({', '.join(IMAGE_FIELDS)}) or a caption column ({', '.join(CAPTION_FIELDS)})"
            )
        for rec in reader:
            where = f"line {reader.line_num}"
            if None in rec:  # more fields than the header
                bad.skip(where, f"{len(fields) + len(rec[None])} fields, header has {len(fields)}")
                continue
            yield from _emit(bad, where, _pick(rec, IMAGE_FIELDS), _pick(rec, CAPTION_FIELDS), rec.get("split") or None)


def shard_paths(path: Path) -> list[Path]:
    """The tar shards that ``path`` names: the file itself, a directory's ``*.tar`` (sorted) or a brace pattern
    as WebDataset writes them (``shard-{000000..000099}.tar``); a clear error when one is missing."""
    if path.is_dir():
        shards = sorted(path.glob("*.tar"))
        if not shards:
            raise DataError(f"{path}: no .tar shards in this directory")
        return shards
    from braceexpand import braceexpand

    shards = [Path(p) for p in braceexpand(str(path))]
    missing = [p for p in shards if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of the {len(shards)} shards)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0]}: not found{more}" + (f"; pattern {path}" if len(shards) > 1 else ""))
    return shards


def wds_samples(path: Path) -> Iterator[dict]:
    """Samples of WebDataset tar shards (a file, a directory of ``*.tar`` or a brace pattern), in order."""
    import webdataset as wds

    urls = [str(p) for p in shard_paths(path)]
    try:
        yield from wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    except (OSError, ValueError, tarfile.TarError) as e:
        raise DataError(f"{path}: not a readable WebDataset shard ({e})") from None


def wds_caption(sample: dict) -> str | None:
    """A sample's caption: its ``txt`` member, or ``caption``/``text`` in its ``json`` member."""
    if "txt" in sample:
        return sample["txt"].decode("utf-8", errors="replace")
    if "json" in sample:
        try:
            return _pick(json.load(io.BytesIO(sample["json"])), CAPTION_FIELDS)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError):
            return None
    return None


def read_webdataset(path: Path, bad: BadRecords) -> Iterator[Caption]:
    """WebDataset shards: ``KEY.txt`` (or ``KEY.json`` with a caption) per sample; features may ride along as ``KEY.npz``."""
    for sample in wds_samples(path):
        yield from _emit(bad, f"sample {sample.get('__key__')}", sample.get("__key__"), wds_caption(sample))


CAPTION_READERS: dict[str, Callable[[Path, BadRecords], Iterator[Caption]]] = {
    "karpathy": read_karpathy,
    "coco": read_coco,
    "cc": read_cc,
    "sbu": read_sbu,
    "vg": read_vg,
    "narratives": read_narratives,
    "csv": read_csv,
    "jsonl": read_jsonl,
    "webdataset": read_webdataset,
}
