"""Image features from a pretrained backbone, written as an mmtlab store (``mmtlab features extract``).

Backbone ``efficientnet-lite0`` (ImageNet EfficientNet-Lite0, :mod:`mmtlab.features.efficientnet`):

* grid mode (default): the image is resized to ``size`` x ``size`` (224: the network's native input) and the
  final 7x7 feature grid becomes 49 regions of 1280-d features with their cell boxes; each region's class
  distribution (the MRM target) is the ImageNet classifier's softmax on that cell. The global token the
  collator adds (mean of the regions) is exactly the network's pooled feature.
* box mode (``boxes`` given): region features "in the paper's sense" for boxes given per image (e.g. from a
  detector run elsewhere): each box is RoI-aligned (bilinear sampling, :func:`roi_align`) on the feature grid,
  and classified by the same classifier.

Extraction is batched, resumable (finished chunks of ``chunk_size`` images are kept in ``OUT.parts/`` and
skipped on a rerun) and skips unreadable images, counting them; past ``max_bad_fraction`` it stops with an error
naming some of them (the bad-input rule of docs/design.md, "Real corpora and bad input") and writes no store.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..data.readers import BadRecords
from ..data.store import DataError, StoreWriter, box_area, check_store_target
from .efficientnet import FEAT_DIM, INPUT_SIZE, N_CLASSES, load_efficientnet_lite0, preprocess

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
BACKBONES = ("efficientnet-lite0",)
TORCHVISION_NOTE = (
    "needs torchvision, which cannot be imported beside this CPU build of torch (PyPI's torchvision wheels are "
    "built for other torch builds: 'operator torchvision::nms does not exist'); use --backbone efficientnet-lite0, "
    "with --boxes FILE for region features of given boxes"
)


class FeatureError(DataError):
    """A feature-extraction input or option is wrong; the message names it and what is valid."""


@dataclass
class ImageItem:
    """One image to extract: where it is, its captions, its split and its key in the store."""

    path: Path
    captions: list[str] = field(default_factory=list)
    split: str = "train"
    key: str = ""


# -------------------------------------------------------------------------------------------- inputs
def list_images(images_dir: str | Path | None = None, list_file: str | Path | None = None) -> list[ImageItem]:
    """Items of a folder (every image file under it, sorted) or of a list file: one ``PATH`` or
    ``PATH<TAB>CAPTION`` per line (relative paths are relative to the list file; a path repeated on several
    lines collects its captions; ``#`` lines and blank lines are skipped)."""
    if (images_dir is None) == (list_file is None):
        raise FeatureError("give exactly one of --images DIR and --list FILE")
    if images_dir is not None:
        root = Path(images_dir)
        if not root.is_dir():
            raise FeatureError(f"--images {root}: no such directory")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not paths:
            raise FeatureError(f"--images {root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) under it")
        return [ImageItem(p, key=str(p.relative_to(root))) for p in paths]
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FeatureError(f"--list {list_file}: no such file")
    items: dict[str, ImageItem] = {}
    for line in list_file.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, caption = line.partition("\t")
        name = name.strip()
        item = items.setdefault(name, ImageItem(list_file.parent / name, key=name))
        if caption.strip():
            item.captions.append(caption.strip())
    if not items:
        raise FeatureError(f"--list {list_file}: no image paths in it")
    return list(items.values())


def read_boxes(path: str | Path) -> dict[str, np.ndarray]:
    """A JSONL file of ``{"image": KEY, "boxes": [[x1, y1, x2, y2], ...]}`` in pixels of the original image
    (KEY as in the store: the path relative to --images, or as written in --list) -> KEY -> (K, 4) float32."""
    path = Path(path)
    if not path.is_file():
        raise FeatureError(f"--boxes {path}: no such file")
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            boxes = np.asarray(rec["boxes"], dtype=np.float32).reshape(-1, 4)
            key = str(rec["image"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise FeatureError(f"{path}:{n}: expected {{\"image\": KEY, \"boxes\": [[x1, y1, x2, y2], ...]}} ({e})") from None
        if len(boxes) == 0 or (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
            raise FeatureError(f"{path}:{n}: image {key!r} needs at least one box with x2 > x1 and y2 > y1")
        out[key] = boxes
    return out


def load_rgb(path: Path, background: int = 255) -> Image.Image:
    """Decode an image as RGB (transparency composited on a plain background). Raises ``OSError`` /
    ``UnidentifiedImageError`` / ``ValueError`` for unreadable files."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P", "PA"):
            im = im.convert("RGBA")
            canvas = Image.new("RGBA", im.size, (background,) * 3 + (255,))
            return Image.alpha_composite(canvas, im).convert("RGB")
        return im.convert("RGB")


def to_uint8_chw(im: Image.Image, size: int) -> np.ndarray:
    """Resize (bicubic, aspect not kept: the grid covers the whole image) -> (3, size, size) uint8."""
    return np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.uint8).transpose(2, 0, 1).copy()


# -------------------------------------------------------------------------------------------- regions
def grid_boxes(h: int, w: int) -> np.ndarray:
    """(h*w, 5) normalised boxes of the cells of an h x w grid in raster order, with their area fraction."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    xs, ys = xs.ravel(), ys.ravel()
    return box_area(np.stack([xs / w, ys / h, (xs + 1) / w, (ys + 1) / h], axis=1))


def roi_align(fmap: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor, samples: int = 4) -> torch.Tensor:
    """Average of ``samples`` x ``samples`` bilinear samples of ``fmap`` inside each box (RoIAlign pooled to
    one vector, without torchvision): fmap (B, C, h, w), boxes (K, 4) normalised x1, y1, x2, y2, batch_index (K,)
    -> (K, C). Sample points are the centres of a regular grid over the box."""
    t = (torch.arange(samples, dtype=fmap.dtype, device=fmap.device) + 0.5) / samples  # (S,)
    x = boxes[:, 0:1] + (boxes[:, 2:3] - boxes[:, 0:1]) * t  # (K, S)
    y = boxes[:, 1:2] + (boxes[:, 3:4] - boxes[:, 1:2]) * t  # (K, S)
    grid = torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1) * 2 - 1  # (K, S, S, 2)
    pooled = F.grid_sample(fmap[batch_index], grid, mode="bilinear", align_corners=False)  # (K, C, S, S)
    return pooled.mean((2, 3))


class EfficientNetExtractor:
    """EfficientNet-Lite0 regions: the feature grid's cells, or RoI-aligned given boxes."""

    name = "efficientnet-lite0"
    feat_dim = FEAT_DIM
    n_classes = N_CLASSES

    def __init__(self, weights: str | Path | None = None, size: int = INPUT_SIZE, device: str = "cpu"):
        if size < 32 or size % 32:
            raise FeatureError(f"--size {size}: must be a positive multiple of 32 (the network's stride)")
        self.size = size
        self.device = torch.device(device)
        self.net = load_efficientnet_lite0(weights).to(self.device)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, boxes: list[np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
        """images (B, 3, size, size) uint8; boxes: per image (K, 4) normalised, or None for the grid.
        Returns per image ``feats (R, 1280)``, ``boxes (R, 5)``, ``cls (R, 1000)`` (float16 / float32)."""
        x = preprocess(torch.from_numpy(images).to(self.device))
        fmap = self.net.feature_map(x)  # (B, 1280, h, w)
        B, _, h, w = fmap.shape
        if boxes is None:
            feats = fmap.flatten(2).transpose(1, 2)  # (B, h*w, 1280)
            probs = self.net.cell_logits(fmap).softmax(-1)  # (B, h*w, 1000)
            cells = grid_boxes(h, w)
            return [{"feats": f.half().cpu().numpy(), "boxes": cells, "cls": p.half().cpu().numpy()} for f, p in zip(feats, probs)]
        counts = [len(b) for b in boxes]
        flat = torch.from_numpy(np.concatenate(boxes)).to(self.device, torch.float32)  # (K, 4)
        index = torch.repeat_interleave(torch.arange(B, device=self.device), torch.tensor(counts, device=self.device))
        feats = roi_align(fmap, flat, index)  # (K, 1280)
        probs = self.net._fc(feats).softmax(-1)  # (K, 1000)
        out = []
        for f, p, b in zip(feats.split(counts), probs.split(counts), boxes):
            out.append({"feats": f.half().cpu().numpy(), "boxes": box_area(b), "cls": p.half().cpu().numpy()})
        return out


def make_extractor(backbone: str, weights: str | Path | None = None, size: int = INPUT_SIZE, device: str = "cpu"):
    """The extractor for ``backbone``; unavailable or unknown names raise :class:`FeatureError` saying why."""
    if backbone == "efficientnet-lite0":
        return EfficientNetExtractor(weights, size, device)
    if backbone.startswith("torchvision:") or backbone == "frcnn":
        raise FeatureError(f"--backbone {backbone}: {TORCHVISION_NOTE}")
    raise FeatureError(f"--backbone {backbone!r}: unknown; valid: {', '.join(BACKBONES)}")


# -------------------------------------------------------------------------------------------- the run
def _normalise_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    scale = np.array([width, height, width, height], dtype=np.float32)
    return np.clip(boxes / scale, 0.0, 1.0)


def _fingerprint(items: list[ImageItem], options: dict) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for it in items:
        h.update(f"{it.path}\0{it.key}\0{it.split}\n".encode())
    return h.hexdigest()[:16]


def extract_store(
    items: list[ImageItem],
    out: str | Path,
    backbone: str = "efficientnet-lite0",
    weights: str | Path | None = None,
    size: int = INPUT_SIZE,
    boxes_file: str | Path | None = None,
    pixels: int | None = None,
    classes: bool = True,
    batch_size: int = 32,
    chunk_size: int = 512,
    max_bad_fraction: float = 0.01,
    device: str = "cpu",
    meta: dict | None = None,
    source: str = "images",
    progress: bool = True,
) -> dict:
    """Extract features of ``items`` into the store ``out`` (see the module doc). ``pixels``: also store the
    image resized to ``pixels`` x ``pixels`` (for the pixel path); ``source`` names the input in errors.
    Returns a summary: images written, skipped (with examples), chunks reused from an interrupted run."""
    from ..progress import progress_bar

    bad = BadRecords(source, max_bad_fraction)  # checks the fraction before any work
    check_store_target(Path(out))  # and that the store may be written there
    if batch_size < 1 or chunk_size < 1:
        raise FeatureError("--batch-size and the chunk size must be >= 1")
    if not items:
        raise FeatureError("no images to extract")
    extractor = make_extractor(backbone, weights, size, device)
    given = read_boxes(boxes_file) if boxes_file else None
    if given is not None:
        missing = [it.key for it in items if it.key not in given]
        if missing:
            raise FeatureError(f"--boxes {boxes_file}: no boxes for {len(missing)} image(s), e.g. {missing[0]!r}")
    out = Path(out)
    parts = out.parent / f"{out.name}.parts"
    options = {"backbone": backbone, "size": size, "pixels": pixels, "classes": classes, "chunk": chunk_size,
               "boxes": str(boxes_file) if boxes_file else None}
    fingerprint = _fingerprint(items, options)
    manifest = parts / "manifest.json"
    if parts.exists() and (not manifest.is_file() or json.loads(manifest.read_text()).get("fingerprint") != fingerprint):
        raise FeatureError(f"{parts}: left by an interrupted extraction with other images or options; remove it to start over")
    parts.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"fingerprint": fingerprint, **options}) + "\n")

    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    reused = 0
    bar = progress_bar(total=len(items), unit="img", desc=f"features {backbone}", disable=not progress)
    for c, chunk in enumerate(chunks):
        part = parts / f"part-{c:05d}.npz"
        if part.is_file():
            reused += 1
            bar.update(len(chunk))
            continue
        records, skipped = [], []
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b : b + batch_size]
            records += _extract_batch(extractor, batch, b, size, pixels, given, skipped)
            bar.update(len(batch))
        _save_part(part, records, skipped, classes)
    bar.close()

    part_files = [parts / f"part-{c:05d}.npz" for c in range(len(chunks))]
    for f in part_files:
        with np.load(f, allow_pickle=False) as part:
            for where, reason in part["bad"].reshape(-1, 2):
                bad.skip(str(where), str(reason))
    bad.total = len(items)
    try:
        bad.check()
    except DataError as e:
        raise FeatureError(f"{e} (finished chunks are kept in {parts} for a rerun)") from None
    meta = {"style": "images", "source": "features extract", "backbone": backbone, "input_size": size,
            "regions": "boxes" if given is not None else "grid", **(meta or {})}
    pixels_shape = (3, pixels, pixels) if pixels else None
    n_classes = extractor.n_classes if classes else None
    with StoreWriter(out, extractor.feat_dim, n_classes=n_classes, pixels_shape=pixels_shape, meta=meta) as writer:
        for chunk, f in zip(chunks, part_files):
            with np.load(f, allow_pickle=False) as npz:
                part = dict(npz)  # one chunk in memory at a time
            off = part["region_offsets"]
            for n, j in enumerate(part["index"]):
                a, b = off[n], off[n + 1]
                it = chunk[j]
                i = writer.add_image(
                    part["feats"][a:b], part["boxes"][a:b], cls=part["cls"][a:b] if classes else None,
                    pixels=part["pixels"][n] if pixels else None, split=it.split, key=it.key,
                )
                for caption in it.captions:
                    writer.add_caption(i, caption)
    shutil.rmtree(parts)
    return {"out": str(out), "images": writer.n_images, "captions": writer.n_captions, "skipped": len(bad.bad),
            "first_skipped": bad.summary()["first_skipped"], "chunks_reused": reused, "chunks": len(chunks)}


def _extract_batch(extractor, batch: list[ImageItem], first: int, size: int, pixels: int | None,
                   given: dict[str, np.ndarray] | None, skipped: list[tuple[str, str]]) -> list[tuple]:
    """Decode and extract one batch; unreadable images go to ``skipped``. Returns ``(index in chunk, regions,
    pixels or None)`` per readable image."""
    images, kept, boxes = [], [], []
    for j, it in enumerate(batch, start=first):
        try:
            im = load_rgb(it.path)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            skipped.append((str(it.path), f"{type(e).__name__}: {e}"))
            continue
        images.append(to_uint8_chw(im, size))
        kept.append((j, to_uint8_chw(im, pixels) if pixels else None))
        if given is not None:
            boxes.append(_normalise_boxes(given[it.key], *im.size))
    if not images:
        return []
    regions = extractor(np.stack(images), boxes if given is not None else None)
    return [(j, r, px) for (j, px), r in zip(kept, regions)]


def _save_part(path: Path, records: list, bad: list[tuple[str, str]], classes: bool) -> None:
    """One finished chunk: its images' regions back to back (written under a temporary name, then renamed)."""
    feats = [r["feats"] for _, r, _ in records]
    arrays = {
        "index": np.array([j for j, _, _ in records], dtype=np.int64),
        "region_offsets": np.cumsum([0] + [len(f) for f in feats]).astype(np.int64),
        "feats": np.concatenate(feats) if feats else np.zeros((0, FEAT_DIM), np.float16),
        "boxes": np.concatenate([r["boxes"] for _, r, _ in records]) if records else np.zeros((0, 5), np.float32),
        "bad": np.array(bad, dtype=str).reshape(-1, 2),  # (path, reason) rows
    }
    if classes:
        arrays["cls"] = np.concatenate([r["cls"] for _, r, _ in records]) if records else np.zeros((0, N_CLASSES), np.float16)
    if records and records[0][2] is not None:
        arrays["pixels"] = np.stack([px for _, _, px in records])
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
