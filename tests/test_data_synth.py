"""The synthetic world: determinism, styles, noise, hard negatives, language overlap between styles."""

import numpy as np
import pytest

from mmtlab.config import ConfigError
from mmtlab.data import STYLES, open_store, synthesize
from mmtlab.data.stats import overlap, words
from mmtlab.data.synth import CLASS_NAMES, COLOURS, SHAPES, sample_captions

N_OBJ_CLASSES = len(SHAPES) * len(COLOURS)


def object_classes(im):
    """Argmax detector classes of an image's object (and part) regions."""
    c = im["cls"].astype(np.float32).argmax(1)
    return set(c[c < N_OBJ_CLASSES].tolist())


def test_same_seed_same_bytes(tmp_path):
    a = synthesize(tmp_path / "a", "coco", n=30, seed=7, noise=0.2)
    b = synthesize(tmp_path / "b", "coco", n=30, seed=7, noise=0.2)
    c = synthesize(tmp_path / "c", "coco", n=30, seed=8, noise=0.2)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in names)
    assert (a / "feats.f16").read_bytes() != (c / "feats.f16").read_bytes()


@pytest.mark.parametrize("style", list(STYLES))
def test_every_style(tmp_path, style):
    s = open_store(synthesize(tmp_path / style, style, n=20, seed=0))
    m = s.meta
    assert m["style"] == style and m["n_images"] == 20 and m["feat_dim"] == 256 and m["n_classes"] == len(CLASS_NAMES)
    assert m["splits"] == {("test" if style == "flickr" else "train"): 20}
    per_image = np.bincount(s.caption_image, minlength=20)
    if style in ("coco", "flickr"):
        assert (per_image == 5).all()
    elif style == "vg":
        assert per_image.min() >= 4 and all(len(words(c)) <= 6 for c in s.captions)  # many short phrases
    else:
        assert (per_image == 1).all()
    im = s.image(0)
    assert 2 <= len(im["feats"]) <= 12 and im["pixels"].shape == (3, 64, 64)
    assert (im["boxes"][:, :4] >= 0).all() and (im["boxes"][:, :4] <= 1).all()
    np.testing.assert_allclose(im["cls"].astype(np.float32).sum(1), 1, atol=1e-2)


def test_captions_describe_their_image_unless_noise(tmp_path):
    """coco captions name every object's colour; with --noise P about P of them describe another image."""

    def consistent(store):
        ok = []
        for c, text in enumerate(store.captions):
            colours = {k % len(COLOURS) for k in object_classes(store.image(int(store.caption_image[c])))}
            said = {COLOURS.index(w) for w in words(text) if w in COLOURS}
            ok.append(said <= colours)
        return np.mean(ok)

    clean = open_store(synthesize(tmp_path / "clean", "coco", n=60, seed=1))
    noisy = open_store(synthesize(tmp_path / "noisy", "coco", n=60, seed=1, noise=0.5))
    assert consistent(clean) == 1.0
    assert 0.35 < consistent(noisy) < 0.8  # 50% kept + some noisy captions that happen to fit


def test_noise_is_a_controlled_knob(tmp_path):
    """Stores that differ only in --noise hold the same images and clean captions; about P of the captions are
    swapped at noise P, and every caption swapped at 0.2 is swapped at 0.5 too."""
    stores = {p: synthesize(tmp_path / str(p), "coco", n=80, seed=3, noise=p) for p in (0.0, 0.2, 0.5)}
    for f in ("feats.f16", "boxes.f32", "cls.f16", "pixels.u8", "region_offsets.i64"):
        assert len({(s / f).read_bytes() for s in stores.values()}) == 1, f
    caps = {p: open_store(s).captions for p, s in stores.items()}
    swapped = {p: {i for i, (a, b) in enumerate(zip(caps[0.0], caps[p])) if a != b} for p in (0.2, 0.5)}
    n = len(caps[0.0])
    assert 0.12 < len(swapped[0.2]) / n < 0.28 and 0.4 < len(swapped[0.5]) / n < 0.6
    assert swapped[0.2] <= swapped[0.5]


def test_regions_follow_the_detector(tmp_path):
    """Same object class -> similar features across images and styles (the detector is shared)."""
    a = open_store(synthesize(tmp_path / "a", "coco", n=40, seed=0))
    b = open_store(synthesize(tmp_path / "b", "flickr", n=40, seed=0))
    feats, labels = [], []
    for s in (a, b):
        for i in range(s.n_images):
            im = s.image(i)
            c = im["cls"].astype(np.float32).argmax(1)
            feats.append(im["feats"].astype(np.float32))
            labels.append(c)
    X, y = np.concatenate(feats), np.concatenate(labels)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    sim = X @ X.T
    same = y[:, None] == y[None, :]
    np.fill_diagonal(same, False)
    diff = ~same
    np.fill_diagonal(diff, False)
    assert sim[same].mean() > sim[diff].mean() + 0.3


def test_hard_negatives(tmp_path):
    s = open_store(synthesize(tmp_path / "h", "flickr", n=200, seed=0))
    classes = [object_classes(s.image(i)) for i in range(200)]
    shared = np.mean([len(classes[i] & classes[i + 1]) > 0 for i in range(199)])
    assert shared > 0.35  # one-attribute edits of the previous scene (random scenes rarely share a class)
    assert len({frozenset(c) for c in classes}) > 150  # but images are still mostly distinct


def test_language_is_graded_towards_flickr():
    ref = sample_captions("flickr", 300, seed=1)
    o = {st: overlap(sample_captions(st, 300, seed=2), ref) for st in STYLES}
    assert o["flickr"]["bigram_tokens"] > 90
    assert o["coco"]["word_tokens"] >= 85  # shared words ...
    assert o["coco"]["bigram_tokens"] < o["flickr"]["bigram_tokens"] - 10  # ... in other templates
    for far in ("cc", "sbu", "coco-narratives", "oi-narratives"):
        assert o["coco"]["bigram_tokens"] > o[far]["bigram_tokens"] + 10, far
    assert o["coco-narratives"]["word_tokens"] > o["oi-narratives"]["word_tokens"]  # OI has other words
    assert all(o[st]["captions"] < 5 for st in STYLES if st != "flickr")


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="valid styles: coco, flickr"):
        synthesize(tmp_path / "x", "mscoco")
    with pytest.raises(ConfigError, match="noise"):
        synthesize(tmp_path / "x", "coco", n=10, noise=1.5)
    assert not (tmp_path / "x").exists()


def test_every_image_has_the_same_number_of_regions(tmp_path):
    """Like a detector that keeps a fixed number of boxes: the region count says nothing about the objects
    (a count that grew with them let a cross-encoder match caption length to region count)."""
    from mmtlab.data.synth import REGIONS

    s = open_store(synthesize(tmp_path / "r", "coco", n=50, seed=0))
    counts = {len(s.image(i)["feats"]) for i in range(s.n_images)}
    assert counts == {REGIONS}
    objects = {len(object_classes(s.image(i))) for i in range(s.n_images)}
    assert len(objects) > 2  # while scenes still hold 1-4 objects


def test_regions_option_sets_the_distractor_fill(tmp_path):
    """``regions``: objects and parts first, background distractors up to the count; at 8 (4 objects and 4
    parts at most) every image still has the same count; the meta records it."""
    s = open_store(synthesize(tmp_path / "r8", "coco", n=50, seed=0, regions=8))
    assert {len(s.image(i)["feats"]) for i in range(s.n_images)} == {8} and s.meta["regions"] == 8
    few = open_store(synthesize(tmp_path / "r6", "coco", n=50, seed=0, regions=6))
    counts = [len(few.image(i)["feats"]) for i in range(few.n_images)]
    assert min(counts) == 6 and max(counts) <= 8
    with pytest.raises(ConfigError, match="--regions 0"):
        synthesize(tmp_path / "r0", "coco", n=10, regions=0)
