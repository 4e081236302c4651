"""Image features from a pretrained backbone, written as an mmtlab store (``mmtlab features extract``).

Backbone ``efficientnet-lite0`` (ImageNet EfficientNet-Lite0, :mod:`mmtlab.features.efficientnet`):

* grid mode (default): the image is resized to ``size`` x ``size`` (224: the network's native input) and the
  final 7x7 feature grid becomes 49 regions of 1280-d features with their cell boxes; each region's class
  distribution (the MRM target) is the ImageNet classifier's softmax on that cell. The global token the
  collator adds (mean of the regions) is exactly the network's pooled feature.
* box mode (``boxes`` given): region features "in the paper's sense" for boxes given per image (e.g. from a
  detector run elsewhere): each box is RoI-aligned (bilinear sampling, :func:`roi_align`) on the feature grid,
  and classified by the same classifier.

Every image is decoded to RGB with transparency (an alpha channel, or a PNG colour key ``tRNS`` in any mode)
composited on white, 16-bit greyscale scaled to 8 bits, SVG rendered with the optional package ``resvg-py``
(:data:`SVG_PACKAGE`), then fitted to the square input by :func:`fit_square` (``resize``: ``pad``, the default,
``crop`` or ``stretch``; :data:`RESIZE_MODES`).

Extraction is batched, resumable (finished chunks of ``chunk_size`` images are kept in ``OUT.parts/`` and
skipped on a rerun after an interruption) and skips unreadable images, counting them; past ``max_bad_fraction``
it stops with an error naming some of them (the bad-input rule of docs/design.md, "Real corpora and bad
input"), writes no store and removes ``OUT.parts/``. Files of a format it cannot read (SVG without
``resvg-py``, a ``.txt`` in ``--images DIR``) are skipped and counted apart, never fatal.
"""

from __future__ import annotations

import hashlib
import io
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
SVG_EXTENSIONS = (".svg",)
SVG_PACKAGE = "resvg-py"  # optional: renders SVG (a Rust wheel, no system library, no network)
SVG_MAX_SIDE = 4096  # an SVG is rendered with its shorter side at the input size, its longer at most this
RESIZE_MODES = ("pad", "crop", "stretch")
DEFAULT_RESIZE = "pad"  # the whole picture, undistorted, on the white of transparent images
BACKGROUND = 255  # white: transparent pixels and the bars of --resize pad
BACKBONES = ("efficientnet-lite0",)
MANIFEST = "manifest.json"  # in OUT.parts/: the fingerprint of the images and options the finished chunks are of
TORCHVISION_NOTE = (
    "needs torchvision, which cannot be imported beside this CPU build of torch (PyPI's torchvision wheels are "
    "built for other torch builds: 'operator torchvision::nms does not exist'); use --backbone efficientnet-lite0, "
    "with --boxes FILE for region features of given boxes"
)


class FeatureError(DataError):
    """A feature-extraction input or option is wrong; the message names it and what is valid."""


class UnsupportedFormat(ValueError):
    """A file whose format this installation cannot read (skipped and counted apart from unreadable files)."""


@dataclass
class ImageItem:
    """One image to extract: where it is, its captions, its split and its key in the store."""

    path: Path
    captions: list[str] = field(default_factory=list)
    split: str = "train"
    key: str = ""


# -------------------------------------------------------------------------------------------- inputs
def list_images(images_dir: str | Path | None = None, list_file: str | Path | None = None) -> list[ImageItem]:
    """Items of a folder (every file under it but hidden ones, sorted: files that are not images are skipped and
    counted at extraction) or of a list file: one ``PATH`` or
    ``PATH<TAB>CAPTION`` per line (relative paths are relative to the list file; a path repeated on several
    lines collects its captions; ``#`` lines and blank lines are skipped)."""
    if (images_dir is None) == (list_file is None):
        raise FeatureError("give exactly one of --images DIR and --list FILE")
    if images_dir is not None:
        root = Path(images_dir)
        if not root.is_dir():
            raise FeatureError(f"--images {root}: no such directory")
        paths = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root)))
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS + SVG_EXTENSIONS for p in paths):
            raise FeatureError(
                f"--images {root}: no image files ({', '.join(IMAGE_EXTENSIONS + SVG_EXTENSIONS)}) under it"
            )
        return [ImageItem(p, key=str(p.relative_to(root))) for p in paths]  # other files: counted as unsupported
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
            raise FeatureError(
                f'{path}:{n}: expected {{"image": KEY, "boxes": [[x1, y1, x2, y2], ...]}} ({e})'
            ) from None
        if len(boxes) == 0 or (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
            raise FeatureError(f"{path}:{n}: image {key!r} needs at least one box with x2 > x1 and y2 > y1")
        out[key] = boxes
    return out


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def load_rgb(path: Path, background: int = BACKGROUND, svg_side: int = INPUT_SIZE) -> Image.Image:
    """Decode an image as RGB: transparency (alpha, or a ``tRNS`` colour key in an RGB, L or P PNG) composited
    on a plain ``background``, 16-bit greyscale scaled to 8 bits, SVG rendered with its shorter side at
    ``svg_side`` pixels. Raises :class:`UnsupportedFormat` for a format this installation cannot read, and
    ``OSError`` / ``UnidentifiedImageError`` / ``ValueError`` for unreadable files."""
    suffix = Path(path).suffix.lower()
    if suffix in SVG_EXTENSIONS:
        return _on_background(_render_svg(Path(path), svg_side), background)
    if suffix not in IMAGE_EXTENSIONS:
        raise UnsupportedFormat(
            f"not an image file ({suffix or 'no extension'}); images: {', '.join(IMAGE_EXTENSIONS + SVG_EXTENSIONS)}"
        )
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            im = _to_8bit(im)
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
            return _on_background(im.convert("RGBA"), background)
        return im.convert("RGB")


def _to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer / float) greyscale image as 8-bit ``L`` (``LA`` when it has a colour key):
    16-bit values scaled by 1/257 (Pillow's own conversion clips them, turning most pictures white)."""
    a = np.asarray(im, dtype=np.float64)
    divisor = 257.0 if im.mode.startswith("I;16") or (a.size and a.max() > 255) else 1.0
    grey = np.clip(np.rint(a / divisor), 0, 255).astype(np.uint8)
    key = im.info.get("transparency")
    if isinstance(key, int):  # the colour key is matched on the 16-bit values
        return Image.fromarray(np.dstack([grey, np.where(a == key, 0, 255).astype(np.uint8)]), "LA")
    return Image.fromarray(grey, "L")


def _on_background(rgba: Image.Image, background: int) -> Image.Image:
    canvas = Image.new("RGBA", rgba.size, (background,) * 3 + (255,))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _render_svg(path: Path, side: int) -> Image.Image:
    """An SVG file as an RGBA image whose shorter side is ``side`` pixels (the longer one at most
    :data:`SVG_MAX_SIDE`), rendered by ``resvg-py``; without it, :class:`UnsupportedFormat`."""
    try:
        import resvg_py
    except ImportError:
        raise UnsupportedFormat(
            f"SVG is not supported without the optional package {SVG_PACKAGE} (pip install {SVG_PACKAGE}, then rerun)"
        ) from None
    natural = _png(resvg_py.svg_to_bytes(svg_path=str(path)))
    w, h = natural.size
    zoom = min(side / min(w, h), SVG_MAX_SIDE / max(w, h))
    return natural if abs(zoom - 1) < 1e-6 else _png(resvg_py.svg_to_bytes(svg_path=str(path), zoom=zoom))


def _png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(bytes(data)))
    im.load()
    return im.convert("RGBA")


def fit_square(
    im: Image.Image, size: int, resize: str = DEFAULT_RESIZE, background: int = BACKGROUND
) -> tuple[Image.Image, np.ndarray]:
    """``im`` fitted to ``size`` x ``size`` (bicubic): ``pad`` scales the longer side to ``size`` and centres
    the picture on ``background`` bars, ``crop`` scales the shorter side to ``size`` and keeps the centre,
    ``stretch`` ignores the aspect ratio. Returns the square image and (4,) ``a_x, b_x, a_y, b_y``: a pixel
    ``(x, y)`` of ``im`` lands at ``(a_x x + b_x, a_y y + b_y)`` of the square, normalised to [0, 1]."""
    _check_resize(resize)
    w, h = im.size
    if resize == "stretch":
        return im.resize((size, size), Image.BICUBIC), np.array([1 / w, 0, 1 / h, 0], np.float32)
    scale = size / (max(w, h) if resize == "pad" else min(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = im.resize((nw, nh), Image.BICUBIC)
    ox, oy = (size - nw) // 2, (size - nh) // 2  # negative when cropping
    if resize == "pad":
        square = Image.new("RGB", (size, size), (background,) * 3)
        square.paste(scaled, (ox, oy))
    else:
        square = scaled.crop((-ox, -oy, -ox + size, -oy + size))
    return square, np.array([nw / w / size, ox / size, nh / h / size, oy / size], np.float32)


def _check_resize(resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise FeatureError(f"--resize {resize!r}: valid: {', '.join(RESIZE_MODES)}")


def to_uint8_chw(im: Image.Image, size: int, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """:func:`fit_square` -> (3, size, size) uint8."""
    return np.asarray(fit_square(im, size, resize)[0], dtype=np.uint8).transpose(2, 0, 1).copy()


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
            return [
                {"feats": f.half().cpu().numpy(), "boxes": cells, "cls": p.half().cpu().numpy()}
                for f, p in zip(feats, probs)
            ]
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
def _normalise_boxes(boxes: np.ndarray, width: int, height: int, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) boxes in pixels of the original image -> normalised to the image (what the store keeps) and to the
    square input (where they are pooled, see :func:`fit_square`), both clipped to [0, 1]."""
    ax, bx, ay, by = affine
    image = boxes / np.array([width, height, width, height], dtype=np.float32)
    square = boxes * np.array([ax, ay, ax, ay], np.float32) + np.array([bx, by, bx, by], np.float32)
    return np.clip(image, 0.0, 1.0), np.clip(square, 0.0, 1.0)


def _fingerprint(items: list[ImageItem], options: dict) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for it in items:
        h.update(f"{it.path}\0{it.key}\0{it.split}\n".encode())
    return h.hexdigest()[:16]


def svg_renderer() -> str | None:
    """``resvg-py VERSION`` when the optional SVG renderer is installed, else None."""
    try:
        import resvg_py
    except ImportError:
        return None
    return f"{SVG_PACKAGE} {getattr(resvg_py, '__version__', '?')}"


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
    resize: str = DEFAULT_RESIZE,
) -> dict:
    """Extract features of ``items`` into the store ``out`` (see the module doc). ``pixels``: also store the
    image fitted to ``pixels`` x ``pixels`` (for the pixel path); ``resize``: how a picture is fitted to the
    square input (:func:`fit_square`); ``source`` names the input in errors. Returns a summary: images written,
    unreadable and unsupported files skipped (with examples), what the resizing did, chunks reused from an
    interrupted run. On an error no store is written and ``OUT.parts/`` is removed; on an interruption
    (``KeyboardInterrupt``, a kill) the finished chunks stay there for a rerun."""
    bad = BadRecords(source, max_bad_fraction, what="images are unreadable")  # checks the fraction before any work
    out = Path(out)
    _check_inputs(items, out, batch_size, chunk_size, resize)
    extractor = make_extractor(backbone, weights, size, device)
    given = _given_boxes(items, boxes_file)
    options = {  # what the finished chunks depend on: kept in OUT.parts/manifest.json with their fingerprint
        "backbone": backbone,
        "size": size,
        "pixels": pixels,
        "classes": classes,
        "chunk": chunk_size,
        "boxes": str(boxes_file) if boxes_file else None,
        "resize": resize,
        "svg": svg_renderer(),
    }
    fingerprint = _fingerprint(items, options)
    parts = _parts_dir(out, fingerprint)
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    part_files = [parts / f"part-{c:05d}.npz" for c in range(len(chunks))]
    try:
        (parts / MANIFEST).write_text(json.dumps({"fingerprint": fingerprint, **options}) + "\n")
        reused = _extract_chunks(
            extractor, chunks, part_files, batch_size, size, pixels, given, resize, classes, backbone, progress
        )
        report = _read_reports(part_files, chunks, bad, size, resize)
        store_meta = _store_meta(backbone, size, given is not None, resize, report, meta)
        _write_store(out, extractor, chunks, part_files, classes, pixels, store_meta)
    except Exception:
        shutil.rmtree(parts, ignore_errors=True)  # an error, not an interruption: nothing is left to resume
        raise
    shutil.rmtree(parts)
    return _summary(out, report, bad, reused, len(chunks))


def _check_inputs(items: list[ImageItem], out: Path, batch_size: int, chunk_size: int, resize: str) -> None:
    """The checks that read no input: the store may be written at ``out``, the sizes and ``resize`` are
    valid, there are images."""
    check_store_target(out)
    if batch_size < 1 or chunk_size < 1:
        raise FeatureError("--batch-size and the chunk size must be >= 1")
    _check_resize(resize)
    if not items:
        raise FeatureError("no images to extract")


def _given_boxes(items: list[ImageItem], boxes_file: str | Path | None) -> dict[str, np.ndarray] | None:
    """:func:`read_boxes` of ``boxes_file`` (None without one), which must have boxes for every item."""
    if not boxes_file:
        return None
    given = read_boxes(boxes_file)
    missing = [it.key for it in items if it.key not in given]
    if missing:
        raise FeatureError(f"--boxes {boxes_file}: no boxes for {len(missing)} image(s), e.g. {missing[0]!r}")
    return given


def _parts_dir(out: Path, fingerprint: str) -> Path:
    """``OUT.parts/``, created, or kept from an interrupted run of the same images and options (its manifest
    holds the same fingerprint); one left by another run is a :class:`FeatureError`."""
    parts = out.parent / f"{out.name}.parts"
    manifest = parts / MANIFEST
    if parts.exists() and (
        not manifest.is_file() or json.loads(manifest.read_text()).get("fingerprint") != fingerprint
    ):
        raise FeatureError(
            f"{parts}: left by an interrupted extraction with other images or options; remove it to start over"
        )
    parts.mkdir(parents=True, exist_ok=True)
    return parts


def _extract_chunks(
    extractor,
    chunks: list[list[ImageItem]],
    part_files: list[Path],
    batch_size: int,
    size: int,
    pixels: int | None,
    given: dict[str, np.ndarray] | None,
    resize: str,
    classes: bool,
    backbone: str,
    progress: bool,
) -> int:
    """Extract each chunk, batch by batch, into its part file (:func:`_save_part`), skipping the chunks an
    interrupted run finished. Returns how many it skipped."""
    from ..progress import progress_bar

    reused = 0
    bar = progress_bar(total=sum(map(len, chunks)), unit="img", desc=f"features {backbone}", disable=not progress)
    for chunk, part in zip(chunks, part_files):
        if part.is_file():
            reused += 1
            bar.update(len(chunk))
            continue
        records, skipped, unsupported = [], [], []
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b : b + batch_size]
            records += _extract_batch(extractor, batch, b, size, pixels, given, resize, skipped, unsupported)
            bar.update(len(batch))
        _save_part(part, records, skipped, unsupported, classes)
    bar.close()
    return reused


def _store_meta(backbone: str, size: int, boxes: bool, resize: str, report: dict, meta: dict | None) -> dict:
    """The store's ``meta.json`` entries: how its features were made, the :func:`_read_reports` report under
    ``extract``, then the caller's ``meta``."""
    return {
        "style": "images",
        "source": "features extract",
        "backbone": backbone,
        "input_size": size,
        "regions": "boxes" if boxes else "grid",
        "resize": resize,
        "extract": report,
        **(meta or {}),
    }


def _summary(out: Path, report: dict, bad: BadRecords, reused: int, n_chunks: int) -> dict:
    """What :func:`extract_store` returns (and ``mmtlab features extract`` prints)."""
    return {
        "out": str(out),
        "images": report["images"],
        "captions": report["captions"],
        "skipped": len(bad.bad),
        "first_skipped": bad.summary()["first_skipped"],
        "unsupported": report["unsupported"],
        "first_unsupported": report["first_unsupported"],
        "resize": report["resize"],
        "chunks_reused": reused,
        "chunks": n_chunks,
    }


def _read_reports(
    part_files: list[Path], chunks: list[list[ImageItem]], bad: BadRecords, size: int, resize: str
) -> dict:
    """What the chunks skipped and what resizing did; raises :class:`FeatureError` past the bad fraction or
    when no image could be read."""
    unsupported, sizes, svgs, captions = [], [], 0, 0
    for chunk, f in zip(chunks, part_files):
        with np.load(f, allow_pickle=False) as part:
            for where, reason in part["bad"].reshape(-1, 2):
                bad.skip(str(where), str(reason))
            unsupported += [f"{w}: {r}" for w, r in part["unsupported"].reshape(-1, 2)]
            sizes.append(part["sizes"].reshape(-1, 2))
            kept = [chunk[j] for j in part["index"]]
        svgs += sum(it.path.suffix.lower() in SVG_EXTENSIONS for it in kept)
        captions += sum(len(it.captions) for it in kept)
    bad.total = sum(len(c) for c in chunks) - len(unsupported)
    wh = np.concatenate(sizes).astype(np.float64)  # (n, 2) width, height before resizing
    if len(wh) == 0:
        first = (unsupported + [f"{w}: {r}" for w, r in bad.bad])[:3]
        raise FeatureError(
            f"{bad.source}: no image could be read ({len(unsupported)} unsupported, {len(bad.bad)} "
            f"unreadable); first: {'; '.join(first)}"
        )
    try:
        bad.check()
    except DataError as e:
        raise FeatureError(f"{e}; no store was written") from None
    scale = size / (wh.max(1) if resize == "pad" else wh.min(1))
    return {
        "images": len(wh),
        "captions": captions,
        "unreadable": len(bad.bad),
        "unsupported": len(unsupported),
        "first_unsupported": unsupported[:5],
        "svg_rendered": svgs,
        "svg_renderer": svg_renderer(),
        "resize": {
            "mode": resize,
            "input": size,
            "background": "white" if resize == "pad" else None,
            "not_square": int((wh[:, 0] != wh[:, 1]).sum()),
            "upscaled": int((scale > 1).sum()),
            "over_3_to_1": int((wh.max(1) > 3 * wh.min(1)).sum()),
        },
    }


def _write_store(
    out: Path,
    extractor,
    chunks: list[list[ImageItem]],
    part_files: list[Path],
    classes: bool,
    pixels: int | None,
    meta: dict,
) -> None:
    """The finished chunks, one in memory at a time, into the store ``out`` (with each image's captions)."""
    pixels_shape = (3, pixels, pixels) if pixels else None
    n_classes = extractor.n_classes if classes else None
    with StoreWriter(out, extractor.feat_dim, n_classes=n_classes, pixels_shape=pixels_shape, meta=meta) as writer:
        for chunk, f in zip(chunks, part_files):
            with np.load(f, allow_pickle=False) as npz:
                part = dict(npz)
            off = part["region_offsets"]
            for n, j in enumerate(part["index"]):
                a, b = off[n], off[n + 1]
                it = chunk[j]
                i = writer.add_image(
                    part["feats"][a:b],
                    part["boxes"][a:b],
                    cls=part["cls"][a:b] if classes else None,
                    pixels=part["pixels"][n] if pixels else None,
                    split=it.split,
                    key=it.key,
                )
                for caption in it.captions:
                    writer.add_caption(i, caption)


def _extract_batch(
    extractor,
    batch: list[ImageItem],
    first: int,
    size: int,
    pixels: int | None,
    given: dict[str, np.ndarray] | None,
    resize: str,
    skipped: list[tuple[str, str]],
    unsupported: list[tuple[str, str]],
) -> list[tuple]:
    """Decode and extract one batch; unreadable images go to ``skipped``, files of an unsupported format to
    ``unsupported``. Returns ``(index in chunk, regions, pixels or None, (width, height))`` per readable image."""
    images, kept, boxes, stored_boxes = [], [], [], []
    for j, it in enumerate(batch, start=first):
        try:
            im = load_rgb(it.path, svg_side=max(size, pixels or 0))
        except UnsupportedFormat as e:
            unsupported.append((str(it.path), str(e)))
            continue
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            skipped.append((str(it.path), f"{type(e).__name__}: {e}"))
            continue
        square, affine = fit_square(im, size, resize)
        images.append(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1))  # (3, size, size)
        kept.append((j, to_uint8_chw(im, pixels, resize) if pixels else None, im.size))
        if given is not None:
            on_image, on_square = _normalise_boxes(given[it.key], *im.size, affine)
            stored_boxes.append(on_image)
            boxes.append(on_square)
    if not images:
        return []
    regions = extractor(np.stack(images), boxes if given is not None else None)
    for r, b in zip(regions, stored_boxes):
        r["boxes"] = box_area(b)  # the store keeps boxes on the original image
    return [(j, r, px, wh) for (j, px, wh), r in zip(kept, regions)]


def _save_part(
    path: Path, records: list, bad: list[tuple[str, str]], unsupported: list[tuple[str, str]], classes: bool
) -> None:
    """One finished chunk: its images' regions back to back (written under a temporary name, then renamed)."""
    feats = [r["feats"] for _, r, _, _ in records]
    arrays = {
        "index": np.array([j for j, _, _, _ in records], dtype=np.int64),
        "region_offsets": np.cumsum([0] + [len(f) for f in feats]).astype(np.int64),
        "feats": np.concatenate(feats) if feats else np.zeros((0, FEAT_DIM), np.float16),
        "boxes": np.concatenate([r["boxes"] for _, r, _, _ in records]) if records else np.zeros((0, 5), np.float32),
        "sizes": np.array([wh for _, _, _, wh in records], dtype=np.int64).reshape(-1, 2),  # (n, 2) original w, h
        "bad": np.array(bad, dtype=str).reshape(-1, 2),  # (path, reason) rows
        "unsupported": np.array(unsupported, dtype=str).reshape(-1, 2),
    }
    if classes:
        arrays["cls"] = (
            np.concatenate([r["cls"] for _, r, _, _ in records]) if records else np.zeros((0, N_CLASSES), np.float16)
        )
    if records and records[0][2] is not None:
        arrays["pixels"] = np.stack([px for _, _, px, _ in records])
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
