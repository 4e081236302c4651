"""The synthetic world: scenes of shapes, rendered as pixels and as detector regions, captioned in styles that
mirror the paper's pretraining corpora and its test set (docs/design.md, "The synthetic world").

A scene holds 1-4 objects (8 shapes x 8 colours x 3 sizes) on a 4 x 4 grid. Each image gets

* regions: one per object, sometimes a second, looser "part" box of an object (detectors overlap), and
  background distractors up to :data:`REGIONS` regions per image; each with a box, a feature vector from a fixed random "detector" (an embedding of
  the attributes plus noise; the detector depends on ``feat_dim`` only, so every style and seed shares it) and
  a class distribution over :data:`CLASS_NAMES` (shape x colour + distractor kinds) for MRM;
* pixels: a 64 x 64 RGB rendering of the same scene for the pixel path.

About 40% of scenes are a near copy of the previous one with one attribute of one object changed, so that
telling images apart needs more than one word (hard negatives). Caption styles share the canonical content
words and differ in templates, word order, length, synonyms, partiality and noise; ``flickr`` is the
evaluation style. ``--noise P`` replaces that fraction of captions with captions of another image.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .store import StoreWriter

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "heart")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SIZES = ("small", "medium", "large")
DISTRACTORS = ("smudge", "line", "dot", "patch")
CLASS_NAMES = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS) + DISTRACTORS
GRID = 4
IMAGE_SIZE = 64
WORLD_SEED = 2021  # the detector: fixed, so that every style and seed lives in the same world
RGB = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 215, 40),
    "purple": (140, 50, 170), "orange": (245, 140, 30), "white": (250, 250, 250), "black": (15, 15, 15),
}  # fmt: skip
HALF = (0.06, 0.09, 0.12)  # box half-side per size, in image fractions (a grid cell is 0.25)
# Regions per image, like a detector that keeps a fixed number of boxes (bottom-up attention keeps 36). A
# count that grew with the objects would let a cross-encoder match captions to images by sequence length
# alone: it did (tiny merged, ITM only: a true pair scored the same as any wrong image with as many regions).
REGIONS = 10


@dataclass(frozen=True)
class Style:
    description: str
    captions: str  # how many captions per image, in words (for docs and `mmtlab presets`)
    default_n: int  # images by default (about 20,000 pairs; the test style like Flickr30k's test split)
    n_objects: tuple[float, ...] = (0.2, 0.35, 0.3, 0.15)  # P(1..4 objects)
    colour_weights: tuple[float, ...] | None = None  # None: uniform
    feat_noise: float = 0.3


STYLES_SPEC: dict[str, Style] = {
    "coco": Style("MSCOCO: clean one-sentence scene descriptions", "5 per image", 4000),
    "flickr": Style("Flickr30k test set: descriptive sentences, other templates and some synonyms", "5 per image", 1000),
    "cc": Style("Conceptual Captions: alt-text, partial, hypernyms, some unrelated", "1 per image", 20000, feat_noise=0.4),
    "sbu": Style("SBU: first-person user captions, partial and noisy", "1 per image", 20000, feat_noise=0.4),
    "vg": Style("Visual Genome: short phrases about single regions", "4-12 per image", 3000),
    "coco-narratives": Style("Localized Narratives on COCO: long spoken descriptions", "1 per image", 20000),
    "oi-narratives": Style(
        "Localized Narratives on Open Images: spoken descriptions, busier scenes, other colours and words",
        "1 per image", 20000, n_objects=(0.05, 0.2, 0.35, 0.4), colour_weights=(1, 1, 1, 1, 3, 3, 3, 3), feat_noise=0.4,
    ),
}  # fmt: skip
STYLES: dict[str, str] = {name: s.description for name, s in STYLES_SPEC.items()}


@dataclass(frozen=True)
class Obj:
    shape: int
    colour: int
    size: int
    row: int
    col: int


# ---------------------------------------------------------------------------------------------------
# Scenes, regions, pixels
# ---------------------------------------------------------------------------------------------------


def sample_scene(rng: np.random.Generator, style: Style) -> list[Obj]:
    n = 1 + int(rng.choice(4, p=style.n_objects))
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    cw = None if style.colour_weights is None else np.asarray(style.colour_weights, float) / sum(style.colour_weights)
    return [
        Obj(
            int(rng.integers(len(SHAPES))),
            int(rng.choice(len(COLOURS), p=cw)),
            int(rng.integers(3)),
            int(c) // GRID,
            int(c) % GRID,
        )
        for c in cells
    ]


def perturb_scene(rng: np.random.Generator, scene: list[Obj]) -> list[Obj]:
    """A hard negative: the same scene with one attribute (shape, colour, size or cell) of one object changed."""
    scene = list(scene)
    k = int(rng.integers(len(scene)))
    o = scene[k]
    what = int(rng.integers(4))
    if what == 0:
        o = Obj((o.shape + 1 + int(rng.integers(len(SHAPES) - 1))) % len(SHAPES), o.colour, o.size, o.row, o.col)
    elif what == 1:
        o = Obj(o.shape, (o.colour + 1 + int(rng.integers(len(COLOURS) - 1))) % len(COLOURS), o.size, o.row, o.col)
    elif what == 2:
        o = Obj(o.shape, o.colour, (o.size + 1 + int(rng.integers(2))) % 3, o.row, o.col)
    else:
        free = sorted(set(range(GRID * GRID)) - {p.row * GRID + p.col for p in scene})
        c = int(rng.choice(free))
        o = Obj(o.shape, o.colour, o.size, c // GRID, c % GRID)
    scene[k] = o
    return scene


class Detector:
    """The fixed random "detector": attribute embeddings (shape, colour, size, shape x colour, distractors)."""

    def __init__(self, feat_dim: int):
        rng = np.random.default_rng([WORLD_SEED, feat_dim])
        scale = 1.0 / np.sqrt(3.5)
        self.shape = rng.normal(0, scale, (len(SHAPES), feat_dim))
        self.colour = rng.normal(0, scale, (len(COLOURS), feat_dim))
        self.size = rng.normal(0, scale, (3, feat_dim))
        self.pair = rng.normal(0, 0.5 * scale, (len(SHAPES), len(COLOURS), feat_dim))
        self.distractor = rng.normal(0, 1.0, (len(DISTRACTORS), feat_dim))

    def object(self, o: Obj) -> np.ndarray:
        return self.shape[o.shape] + self.colour[o.colour] + self.size[o.size] + self.pair[o.shape, o.colour]


def _class_scores(rng: np.random.Generator, true: int) -> np.ndarray:
    """A detector's class distribution: peaked on the true class, confusable with same-shape / same-colour classes."""
    n_obj = len(SHAPES) * len(COLOURS)
    logits = rng.gumbel(size=len(CLASS_NAMES)) * 0.5
    if true < n_obj:
        s, c = divmod(true, len(COLOURS))
        logits[s * len(COLOURS) : (s + 1) * len(COLOURS)] += 1.5  # same shape, other colours
        logits[c : n_obj : len(COLOURS)] += 1.0  # same colour, other shapes
    logits[true] += 4.0
    p = np.exp(logits - logits.max())
    return p / p.sum()


def scene_regions(rng: np.random.Generator, scene: list[Obj], det: Detector, noise: float, regions: int = REGIONS):
    """Regions of a scene in detector order (objects, parts, then distractors up to ``regions``): feats (R, F),
    boxes (R, 4), cls (R, C), and the distractor boxes (for the renderer)."""
    feats, boxes, cls = [], [], []
    for o in scene:
        cx, cy = (o.col + 0.5 + rng.uniform(-0.1, 0.1)) / GRID, (o.row + 0.5 + rng.uniform(-0.1, 0.1)) / GRID
        h = HALF[o.size]
        boxes.append((cx - h, cy - h, cx + h, cy + h))
        feats.append(det.object(o) + rng.normal(0, noise, det.shape.shape[1]))
        cls.append(_class_scores(rng, o.shape * len(COLOURS) + o.colour))
    for k, o in enumerate(scene):
        if rng.random() < 0.25:  # a looser, overlapping box on the same object
            x1, y1, x2, y2 = boxes[k]
            j = rng.uniform(-0.04, 0.04, 4)
            boxes.append((x1 + j[0], y1 + j[1], x2 + j[2] + 0.04, y2 + j[3] + 0.04))
            feats.append(0.7 * det.object(o) + rng.normal(0, 2 * noise, det.shape.shape[1]))
            cls.append(_class_scores(rng, o.shape * len(COLOURS) + o.colour))
    distractors = []
    for _ in range(regions - len(feats)):  # background boxes fill every image up to the same count
        d = int(rng.integers(len(DISTRACTORS)))
        w, h = rng.uniform(0.03, 0.1, 2)
        x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        boxes.append((x, y, x + w, y + h))
        distractors.append((d, boxes[-1]))
        feats.append(det.distractor[d] + rng.normal(0, noise, det.shape.shape[1]))
        cls.append(_class_scores(rng, len(SHAPES) * len(COLOURS) + d))
    boxes = np.clip(np.asarray(boxes, np.float32), 0.0, 1.0)
    return np.asarray(feats, np.float32), boxes, np.asarray(cls, np.float32), distractors


_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels of ``shape`` in box coordinates u, v in [-1, 1] (v points down)."""
    r = np.hypot(u, v)
    if shape == "circle":
        return r <= 1
    if shape == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if shape == "triangle":
        return (v <= 0.9) & (np.abs(u) <= (v + 1) / 2)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "ring":
        return (r <= 1) & (r >= 0.55)
    if shape == "star":
        return r <= 0.55 + 0.4 * np.cos(5 * np.arctan2(u, -v))
    x, y = 1.25 * u, -1.25 * v + 0.25  # heart: (x^2 + y^2 - 1)^3 <= x^2 y^3
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


def render(rng: np.random.Generator, scene: list[Obj], boxes: np.ndarray, distractors) -> np.ndarray:
    """(3, 64, 64) uint8: a grey, slightly noisy background, faint distractors, then the objects."""
    img = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 128.0) + rng.normal(0, 6, (IMAGE_SIZE, IMAGE_SIZE, 1))
    for d, (x1, y1, x2, y2) in distractors:
        m = (_XX >= x1 * IMAGE_SIZE) & (_XX <= x2 * IMAGE_SIZE) & (_YY >= y1 * IMAGE_SIZE) & (_YY <= y2 * IMAGE_SIZE)
        img[m] += (-30, 20, -15, 30)[d]
    for o, (x1, y1, x2, y2) in zip(scene, boxes):
        cx, cy, h = (x1 + x2) / 2 * IMAGE_SIZE, (y1 + y2) / 2 * IMAGE_SIZE, (x2 - x1) / 2 * IMAGE_SIZE
        img[_shape_mask(SHAPES[o.shape], (_XX - cx) / h, (_YY - cy) / h)] = RGB[COLOURS[o.colour]]
    return np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1)


# ---------------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------------

# Surface words per style: concept -> {word: probability}. Concepts not listed are written as themselves.
_COCO_WORDS = {
    "circle": {"circle": 0.85, "disc": 0.15}, "square": {"square": 0.85, "box": 0.15},
    "diamond": {"diamond": 0.9, "rhombus": 0.1}, "ring": {"ring": 0.9, "hoop": 0.1},
    "small": {"small": 0.7, "little": 0.3}, "large": {"large": 0.7, "big": 0.3},
    "medium": {"medium": 0.6, "medium sized": 0.4},
}  # fmt: skip
_FLICKR_WORDS = {
    "circle": {"circle": 0.6, "ball": 0.25, "disc": 0.15}, "square": {"square": 0.6, "block": 0.25, "box": 0.15},
    "triangle": {"triangle": 0.85, "pyramid": 0.15}, "ring": {"ring": 0.75, "donut": 0.25},
    "cross": {"cross": 0.8, "plus sign": 0.2},
    "small": {"small": 0.5, "tiny": 0.3, "little": 0.2}, "large": {"big": 0.5, "large": 0.4, "huge": 0.1},
    "medium": {"medium sized": 0.5, "medium": 0.3, "average sized": 0.2},
}  # fmt: skip
_OI_WORDS = {
    "circle": {"circle": 0.5, "round object": 0.3, "sphere": 0.2}, "square": {"square": 0.5, "cube": 0.3, "tile": 0.2},
    "triangle": {"triangle": 0.6, "cone": 0.4}, "heart": {"heart": 0.6, "love symbol": 0.4},
    "purple": {"purple": 0.5, "violet": 0.5}, "orange": {"orange": 0.6, "amber": 0.4},
    "small": {"small": 0.6, "tiny": 0.4}, "large": {"large": 0.4, "big": 0.4, "giant": 0.2},
}  # fmt: skip
_HYPERNYMS = ("shape", "object", "figure", "symbol", "icon")
_ROWS = ("top", "middle", "middle", "bottom")
_COLS = ("left", "center", "center", "right")


class _Writer:
    """Caption building blocks over one rng and one lexicon."""

    def __init__(self, rng: np.random.Generator, words: dict[str, dict[str, float]]):
        self.rng, self.words = rng, words

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def word(self, concept: str) -> str:
        table = self.words.get(concept)
        if not table:
            return concept
        r, acc = self.rng.random(), 0.0
        for w, p in table.items():
            acc += p
            if r < acc:
                return w
        return w

    def noun_phrase(self, o: Obj, p_size: float = 0.85, order: str = "size-colour") -> str:
        shape, colour = self.word(SHAPES[o.shape]), self.word(COLOURS[o.colour])
        size = self.word(SIZES[o.size]) if self.rng.random() < p_size else ""
        if order == "post":  # "a red ball that is big"
            return f"{colour} {shape}" + (f" that is {size}" if size else "")
        return " ".join(w for w in (size, colour, shape) if w)

    def where(self, o: Obj) -> str:
        """Coarse position: "top left", "bottom", "right", "center", ..."""
        r, c = _ROWS[o.row], _COLS[o.col]
        if r == "middle":
            return c
        return r if c == "center" else f"{r} {c}"

    def relation(self, a: Obj, b: Obj, phrases: dict[str, tuple[str, ...]]) -> str:
        """How ``a`` stands to ``b``, in this style's words."""
        dr, dc = b.row - a.row, b.col - a.col
        if max(abs(dr), abs(dc)) == 1 and self.rng.random() < 0.3:
            key = "next to"
        elif abs(dc) >= abs(dr):
            key = "left of" if dc > 0 else "right of"
        else:
            key = "above" if dr > 0 else "below"
        return self.pick(phrases[key])


_COCO_REL = {
    "left of": ("to the left of", "left of"), "right of": ("to the right of", "right of"),
    "above": ("above",), "below": ("below", "under"), "next to": ("next to",),
}  # fmt: skip
_FLICKR_REL = {
    "left of": ("on the left of", "to the left of"), "right of": ("on the right of", "to the right of"),
    "above": ("over", "on top of", "above"), "below": ("underneath", "below"), "next to": ("beside", "next to"),
}  # fmt: skip
_COUNT = ("one", "two", "three", "four")


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _coco(w: _Writer, scene: list[Obj]) -> list[str]:
    out = []
    for _ in range(5):
        objs = [scene[i] for i in w.rng.permutation(len(scene))]
        nps = [_a(w.noun_phrase(o)) for o in objs]
        if len(objs) == 1:
            s = w.pick(("{0} in the {w}", "there is {0} in the {w}", "{0} on a gray background")).format(
                nps[0], w=w.where(objs[0])
            )
        else:
            t = w.pick(("{0} {r} {1}", "there is {0} {r} {1}", "{0} is {r} {1}", "{1} with {0} {r} it"))
            head = t.format(nps[0], nps[1], r=w.relation(objs[0], objs[1], _COCO_REL))
            s = head + "".join(f" and {x}" for x in nps[2:]) if len(objs) > 2 else head
        out.append(s + ".")
    return out


def _flickr(w: _Writer, scene: list[Obj]) -> list[str]:
    out = []
    for _ in range(5):
        objs = [scene[i] for i in w.rng.permutation(len(scene))]
        order = w.pick(("size-colour", "post"))
        nps = [_a(w.noun_phrase(o, order=order)) for o in objs]
        if len(objs) == 1:
            s = w.pick(
                ("{0} is shown near the {w}", "a picture of {0} sitting at the {w}", "{0} placed on gray")
            ).format(nps[0], w=w.where(objs[0]))
        else:
            count = _COUNT[len(objs) - 1]
            rel = w.relation(objs[0], objs[1], _FLICKR_REL)
            s = w.pick(("{n} shapes , {0} sits {r} {1}", "{0} is placed {r} {1}", "{n} things : {0} {r} {1}")).format(
                nps[0], nps[1], r=rel, n=count
            )
            if len(objs) > 2:
                s += " , with " + " plus ".join(nps[2:]) + " nearby"
        out.append(s[0].upper() + s[1:] + " .")
    return out


def _cc(w: _Writer, scene: list[Obj]) -> list[str]:
    if w.rng.random() < 0.15:  # unrelated alt-text
        return [
            w.pick(
                (
                    "design element",
                    "abstract background for your design",
                    "vector illustration",
                    "image may contain art",
                )
            )
        ]
    o = scene[int(w.rng.integers(len(scene)))]
    colour, shape, hyper = w.word(COLOURS[o.colour]), w.word(SHAPES[o.shape]), w.pick(_HYPERNYMS)
    t = w.pick(("{c} {h}", "{c} {s} icon", "vector illustration of a {c} {s}", "abstract {c} geometric {h}s", "stock image : {z} {s}",
                "{s} on a grey background"))  # fmt: skip
    return [t.format(c=colour, s=shape, h=hyper, z=w.word(SIZES[o.size]))]


def _sbu(w: _Writer, scene: list[Obj]) -> list[str]:
    if w.rng.random() < 0.25:
        return [w.pick(("my favourite one", "look what i found today", "so pretty", "at home with friends"))]
    o = scene[int(w.rng.integers(len(scene)))]
    t = w.pick(("my {c} {s} {where}", "i made this {z} {s} today", "look at this {c} thing !", "the {s} on the {where} is mine",
                "our {c} {s} , love it"))  # fmt: skip
    return [t.format(c=w.word(COLOURS[o.colour]), s=w.word(SHAPES[o.shape]), z=w.word(SIZES[o.size]), where=w.where(o))]


def _vg(w: _Writer, scene: list[Obj]) -> list[str]:
    out = []
    for o in scene:
        out.append(f"{w.word(COLOURS[o.colour])} {w.word(SHAPES[o.shape])}")
        out.append(f"{w.word(SIZES[o.size])} {w.word(SHAPES[o.shape])}")
        out.append(f"{w.word(SHAPES[o.shape])} on the {w.where(o)}")
    for a, b in zip(scene, scene[1:]):
        out.append(f"{w.word(SHAPES[a.shape])} {w.relation(a, b, _COCO_REL)} {w.word(SHAPES[b.shape])}")
    out.append(w.pick(("gray background", "grey wall", "dark smudge")))
    return out


def _narrative(w: _Writer, scene: list[Obj]) -> list[str]:
    parts = [w.pick(("in this image we can see", "in this picture i can see", "this is an image in which we can see"))]
    for k, o in enumerate(scene):
        lead = (
            "" if k == 0 else w.pick(("and", "beside that there is", "we can also see", "on the other side there is"))
        )
        parts.append(f"{lead} {_a(w.noun_phrase(o, p_size=0.7))} on the {w.where(o)} side".strip())
    parts.append(
        w.pick(
            ("in the background it is gray .", "the background is in gray color .", "i think the background is plain .")
        )
    )
    return [" ".join(parts[:2]) + " . " + " . ".join(parts[2:])]


_CAPTIONERS = {
    "coco": (_coco, _COCO_WORDS),
    "flickr": (_flickr, _FLICKR_WORDS),
    "cc": (_cc, _COCO_WORDS),
    "sbu": (_sbu, _FLICKR_WORDS),
    "vg": (_vg, _COCO_WORDS),
    "coco-narratives": (_narrative, _COCO_WORDS),
    "oi-narratives": (_narrative, _OI_WORDS),
}


def captions_for(style: str, rng: np.random.Generator, scene: list[Obj]) -> list[str]:
    fn, words = _CAPTIONERS[style]
    return fn(_Writer(rng, words), scene)


# ---------------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------------


def check_style(style: str) -> Style:
    from ..config import ConfigError

    if style not in STYLES_SPEC:
        raise ConfigError(f"unknown data style {style!r}; valid styles: {', '.join(STYLES_SPEC)}")
    return STYLES_SPEC[style]


def default_split(style: str) -> str:
    return "test" if style == "flickr" else "train"


def synthesize(
    out: str | Path,
    style: str = "coco",
    n: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    split: str | None = None,
    feat_dim: int = 256,
    hard_fraction: float = 0.4,
    progress: bool = False,
    regions: int = REGIONS,
) -> Path:
    """Generate ``n`` images of ``style`` (default: the style's size) with their captions into the store ``out``.

    Deterministic: the same arguments give a byte-identical store. ``noise`` is the fraction of captions that
    describe another image, a controlled knob: stores that differ only in ``noise`` hold the same scenes, regions,
    pixels and clean captions, and the captions swapped at a lower noise are swapped at every higher one (one
    uniform draw per caption decides; the swapped-in caption comes from a stream of its own). ``hard_fraction``
    the fraction of scenes that are a one-attribute edit of the previous scene. ``regions``: regions per image,
    background distractors filling up to it (a scene with more objects and parts keeps them all: at 8 or more
    every image has the same count). Returns the store path.
    """
    from ..config import ConfigError

    spec = check_style(style)
    n = spec.default_n if n is None else int(n)
    split = split or default_split(style)
    if n < 2:
        raise ConfigError(f"--n {n}: need at least 2 images")
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"--noise {noise}: must be a fraction in [0, 1]")
    if feat_dim < 1:
        raise ConfigError(f"feat_dim {feat_dim}: must be positive")
    if regions < 1:
        raise ConfigError(f"--regions {regions}: must be positive")
    rng = np.random.default_rng([seed, zlib.crc32(f"{style}/{split}".encode())])
    det = Detector(feat_dim)
    scenes = [sample_scene(rng, spec)]
    while len(scenes) < n:
        scenes.append(perturb_scene(rng, scenes[-1]) if rng.random() < hard_fraction else sample_scene(rng, spec))
    meta = {
        "style": style, "seed": seed, "noise": noise, "hard_fraction": hard_fraction, "regions": regions, "synthetic": True,
        "class_names": list(CLASS_NAMES), "image_size": IMAGE_SIZE,
    }  # fmt: skip
    it = range(n)
    if progress:
        from ..progress import progress_bar

        it = progress_bar(it, desc=f"synth {style}", unit="img")
    with StoreWriter(out, feat_dim, len(CLASS_NAMES), (3, IMAGE_SIZE, IMAGE_SIZE), meta) as writer:
        for i in it:
            feats, boxes, cls, distractors = scene_regions(rng, scenes[i], det, spec.feat_noise, regions)
            pixels = render(rng, scenes[i], boxes, distractors)
            idx = writer.add_image(feats, boxes, cls, pixels, split=split, key=f"{style}-{seed}-{i}")
            for j, text in enumerate(captions_for(style, rng, scenes[i])):
                if rng.random() < noise:  # the caption of another image, drawn from a stream of its own
                    swap = np.random.default_rng([seed, zlib.crc32(f"{style}/{split}/noise".encode()), i, j])
                    other = (i + 1 + int(swap.integers(n - 1))) % n
                    text = captions_for(style, swap, scenes[other])[0]
                writer.add_caption(idx, text)
    return Path(out)


def sample_captions(style: str, n: int, seed: int = 0, hard_fraction: float = 0.4) -> list[str]:
    """Captions of ``n`` fresh scenes of ``style`` without regions or pixels: a sample of the style's language
    (used as the reference of ``mmtlab data stats``)."""
    spec = check_style(style)
    rng = np.random.default_rng([seed, zlib.crc32(f"{style}/language".encode())])
    scene, out = sample_scene(rng, spec), []
    for _ in range(n):
        out += captions_for(style, rng, scene)
        scene = perturb_scene(rng, scene) if rng.random() < hard_fraction else sample_scene(rng, spec)
    return out
