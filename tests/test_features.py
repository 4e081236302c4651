"""Feature extraction: EfficientNet-Lite0 on real photographs, the grid / box regions, and the store it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmtlab.data.store import DataError, open_store
from mmtlab.features import extract as ex
from mmtlab.features.efficientnet import SameConv2d, class_names, load_efficientnet_lite0, preprocess

# ImageNet-1k indices (imagenet_classes.txt, 0-based): cats and coffee
CAT_CLASSES = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"}
COFFEE_CLASSES = {504: "coffee mug", 967: "espresso", 968: "cup"}


@pytest.fixture(scope="module")
def net():
    return load_efficientnet_lite0()


def _photo(name: str) -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photographs")
    return getattr(skimage_data, name)()


def test_class_names_file_matches_the_documented_indices():
    names = class_names()
    assert len(names) == 1000 and len(set(names)) >= 998  # two ImageNet names are duplicated ("crane", "maillot")
    for idx, name in {**CAT_CLASSES, **COFFEE_CLASSES}.items():
        assert names[idx] == name


@pytest.mark.parametrize("photo, expected", [("chelsea", CAT_CLASSES), ("coffee", COFFEE_CLASSES)])
def test_top_imagenet_class_of_real_photographs(net, photo, expected):
    im = Image.fromarray(_photo(photo)).convert("RGB")
    x = torch.from_numpy(ex.to_uint8_chw(im, 224))[None]  # (1, 3, 224, 224)
    with torch.no_grad():
        probs = net(preprocess(x)).softmax(-1)[0]
    top = int(probs.argmax())
    assert top in expected, f"{photo}: top class {class_names()[top]!r}"
    assert float(probs[list(expected)].sum()) > 0.5  # confident, not a lucky argmax


def test_same_padding_is_tensorflow_style():
    conv = SameConv2d(1, 1, 3, stride=2)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = conv(x)
    assert y.shape == (1, 1, 2, 2)  # ceil(4 / 2)
    # padding total 1 goes to the bottom/right: the first output sees rows 0-2, cols 0-2 unpadded
    assert y[0, 0, 0, 0] == x[0, 0, :3, :3].sum()
    assert y[0, 0, 1, 1] == x[0, 0, 2:, 2:].sum()  # the bottom-right window has one zero row and column


def test_grid_boxes_hand_computed():
    b = ex.grid_boxes(2, 2)
    expected = [[0, 0, 0.5, 0.5, 0.25], [0.5, 0, 1, 0.5, 0.25], [0, 0.5, 0.5, 1, 0.25], [0.5, 0.5, 1, 1, 0.25]]
    np.testing.assert_allclose(b, expected)


def test_roi_align_samples_inside_the_box():
    h, w = 4, 6
    fmap = torch.randn(2, 3, h, w)
    # one sample at a cell's box centre is exactly that cell's feature
    boxes = torch.tensor([[2 / w, 1 / h, 3 / w, 2 / h], [5 / w, 3 / h, 1.0, 1.0]])
    out = ex.roi_align(fmap, boxes, torch.tensor([0, 1]), samples=1)
    torch.testing.assert_close(out, torch.stack([fmap[0, :, 1, 2], fmap[1, :, 3, 5]]))
    # on a map linear in x, the pooled value of an interior box is the map at the box's centre
    ramp = ((torch.arange(w) + 0.5) / w).expand(1, 1, h, w).contiguous()
    val = ex.roi_align(ramp, torch.tensor([[0.25, 0.2, 0.55, 0.8]]), torch.tensor([0]), samples=4)
    assert val.item() == pytest.approx(0.4, abs=1e-5)


def _images(tmp_path, n_good=2, n_bad=1):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n_good):
        arr = rng.integers(0, 256, (40 + 10 * i, 50, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / ("sub" if i % 2 else ".") / f"img{i}.png")
    for i in range(n_bad):
        (root / f"bad{i}.jpg").write_bytes(b"this is not a JPEG")
    return root


def test_extract_grid_store(tmp_path, net):
    root = _images(tmp_path)
    items = ex.list_images(images_dir=root)
    assert [it.key for it in items] == ["bad0.jpg", "img0.png", "sub/img1.png"]
    summary = ex.extract_store(items, tmp_path / "store", pixels=16, max_bad_fraction=0.5, progress=False)
    assert summary["images"] == 2 and summary["skipped"] == 1 and "bad0.jpg" in summary["first_skipped"][0]
    assert not (tmp_path / "store.parts").exists()

    store = open_store(tmp_path / "store")
    assert store.meta["feat_dim"] == 1280 and store.meta["n_classes"] == 1000 and store.n_images == 2
    assert store.image_keys == ["img0.png", "sub/img1.png"]
    im = store.image(0)
    assert im["feats"].shape == (49, 1280) and im["feats"].dtype == np.float16
    np.testing.assert_allclose(im["boxes"], ex.grid_boxes(7, 7), atol=1e-6)
    np.testing.assert_allclose(im["cls"].astype(np.float32).sum(1), 1.0, atol=5e-3)
    assert im["pixels"].shape == (3, 16, 16) and im["pixels"].dtype == np.uint8

    # the global token (mean of the regions) is the network's pooled feature: it gives the network's logits
    pil = ex.load_rgb(root / "img0.png")
    x = preprocess(torch.from_numpy(ex.to_uint8_chw(pil, 224))[None])
    with torch.no_grad():
        logits = net(x)[0]
        from_store = net._fc(torch.from_numpy(im["feats"].astype(np.float32)).mean(0))
    torch.testing.assert_close(from_store, logits, atol=0.05, rtol=0.01)  # float16 storage


def test_extract_stops_past_the_bad_fraction_and_leaves_nothing(tmp_path):
    root = _images(tmp_path, n_good=2, n_bad=1)
    items = ex.list_images(images_dir=root)
    with pytest.raises(ex.FeatureError, match=r"1 of 3 images are unreadable .*bad0.jpg.*no store was written"):
        ex.extract_store(items, tmp_path / "store", chunk_size=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]  # no store, no store.parts/
    summary = ex.extract_store(items, tmp_path / "store", chunk_size=1, max_bad_fraction=0.5, progress=False)
    assert summary["chunks_reused"] == 0 and summary["images"] == 2 and summary["skipped"] == 1


def test_interrupted_extraction_resumes_to_the_same_store(tmp_path, monkeypatch):
    root = _images(tmp_path, n_good=3, n_bad=0)
    items = ex.list_images(images_dir=root)
    ex.extract_store(items, tmp_path / "full", chunk_size=1, progress=False)

    calls = {"n": 0}
    original = ex.EfficientNetExtractor.__call__

    def flaky(self, images, boxes=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, images, boxes)

    monkeypatch.setattr(ex.EfficientNetExtractor, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        ex.extract_store(items, tmp_path / "resumed", chunk_size=1, progress=False)
    assert not (tmp_path / "resumed").exists()
    monkeypatch.setattr(ex.EfficientNetExtractor, "__call__", original)
    summary = ex.extract_store(items, tmp_path / "resumed", chunk_size=1, progress=False)
    assert summary["chunks_reused"] == 2
    a, b = open_store(tmp_path / "full"), open_store(tmp_path / "resumed")
    for i in range(3):
        np.testing.assert_array_equal(a.image(i)["feats"], b.image(i)["feats"])
    # other options with the parts of another run present: a clear error, not a silent mix
    (tmp_path / "other.parts").mkdir()
    with pytest.raises(ex.FeatureError, match="interrupted extraction"):
        ex.extract_store(items, tmp_path / "other", size=256, progress=False)


def test_extract_checks_its_inputs_before_any_work(tmp_path, monkeypatch):
    """Options and the output directory are checked before the network is loaded or OUT.parts/ is made."""

    def no_network(*args, **kwargs):
        raise AssertionError("the network was loaded before the inputs were checked")

    monkeypatch.setattr(ex, "make_extractor", no_network)
    items = [ex.ImageItem(tmp_path / "a.png", key="a.png")]
    out = tmp_path / "store"
    with pytest.raises(ex.FeatureError, match="--batch-size and the chunk size must be >= 1"):
        ex.extract_store(items, out, batch_size=0, progress=False)
    with pytest.raises(ex.FeatureError, match="--batch-size and the chunk size must be >= 1"):
        ex.extract_store(items, out, chunk_size=0, progress=False)
    with pytest.raises(ex.FeatureError, match="--resize 'fit': valid: pad, crop, stretch"):
        ex.extract_store(items, out, resize="fit", progress=False)
    with pytest.raises(ex.FeatureError, match="no images to extract"):
        ex.extract_store([], out, progress=False)
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(DataError, match="exists and is not an mmtlab store"):
        ex.extract_store(items, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_extract_given_boxes(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.full((50, 100, 3), 120, np.uint8)).save(root / "a.png")
    Image.fromarray(np.full((60, 60, 3), 30, np.uint8)).save(root / "b.png")
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text(
        json.dumps({"image": "a.png", "boxes": [[0, 0, 50, 25], [10, 10, 100, 50]]})
        + "\n"
        + json.dumps({"image": "b.png", "boxes": [[0, 0, 60, 60]]})
        + "\n"
    )
    items = ex.list_images(images_dir=root)
    ex.extract_store(items, tmp_path / "store", boxes_file=boxes, progress=False)
    store = open_store(tmp_path / "store")
    assert store.meta["regions"] == "boxes"
    a, b = store.image(0), store.image(1)
    assert a["feats"].shape == (2, 1280) and b["feats"].shape == (1, 1280)
    np.testing.assert_allclose(a["boxes"], [[0, 0, 0.5, 0.5, 0.25], [0.1, 0.2, 1, 1, 0.72]], atol=1e-6)
    np.testing.assert_allclose(a["cls"].astype(np.float32).sum(1), 1.0, atol=5e-3)

    boxes.write_text(json.dumps({"image": "a.png", "boxes": [[0, 0, 5, 5]]}) + "\n")
    with pytest.raises(ex.FeatureError, match="no boxes for 1 image"):
        ex.extract_store(items, tmp_path / "store2", boxes_file=boxes, progress=False)
    boxes.write_text(json.dumps({"image": "a.png", "boxes": [[5, 5, 5, 9]]}) + "\n")
    with pytest.raises(ex.FeatureError, match=r"boxes.jsonl:1: .*x2 > x1"):
        ex.read_boxes(boxes)


def test_list_file_with_captions(tmp_path):
    root = _images(tmp_path, n_good=2, n_bad=0)
    lst = root / "list.tsv"
    lst.write_text("# path<TAB>caption\nimg0.png\ta noisy picture\nsub/img1.png\nimg0.png\tanother caption\n\n")
    items = ex.list_images(list_file=lst)
    assert [(it.key, it.captions) for it in items] == [
        ("img0.png", ["a noisy picture", "another caption"]),
        ("sub/img1.png", []),
    ]
    summary = ex.extract_store(items, tmp_path / "store", progress=False, classes=False)
    store = open_store(tmp_path / "store")
    assert summary["captions"] == 2 and list(store.captions) == ["a noisy picture", "another caption"]
    assert not store.has_classes


@pytest.mark.parametrize(
    "backbone, message",
    [
        ("torchvision:resnet50", "needs torchvision"),
        ("frcnn", "needs torchvision"),
        ("vgg", "unknown; valid: efficientnet-lite0"),
    ],
)
def test_unavailable_backbones_say_why(backbone, message):
    with pytest.raises(ex.FeatureError, match=message):
        ex.make_extractor(backbone)


def test_input_errors(tmp_path):
    with pytest.raises(ex.FeatureError, match="exactly one of"):
        ex.list_images()
    with pytest.raises(ex.FeatureError, match="no such directory"):
        ex.list_images(images_dir=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ex.FeatureError, match="no image files"):
        ex.list_images(images_dir=tmp_path / "empty")
    with pytest.raises(ex.FeatureError, match="multiple of 32"):
        ex.make_extractor("efficientnet-lite0", size=100)
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 state dict"):
        load_efficientnet_lite0(bad)


def test_cli_extract_and_errors(tmp_path, capsys):
    from mmtlab.cli import main

    root = _images(tmp_path, n_good=1, n_bad=0)
    assert main(["features", "extract", "--images", str(root), "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
    assert main(["features", "classify", str(root / "img0.png"), "--top", "2"]) == 0
    assert capsys.readouterr().out.count("%") == 2
    assert (
        main(["features", "extract", "--images", str(root), "--backbone", "frcnn", "--out", str(tmp_path / "t")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmtlab: error: --backbone frcnn: needs torchvision") and "\n" not in err


# ------------------------------------------------------------------- formats: every PNG mode, SVG, resizing
SVG = (
    '<svg width="60" height="20" xmlns="http://www.w3.org/2000/svg"><rect width="60" height="20" fill="#0000ff"/></svg>'
)


def _every_mode(root):
    """A 24x48 PNG of each mode Pillow writes (its left half transparent where the mode can say so), an SVG,
    and a text file: {file name: mode}."""
    root.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((24, 48, 3), np.uint8)
    rgb[:, 24:] = (250, 220, 220)  # the right half light, the left half black (the colour key)
    im = Image.fromarray(rgb)
    alpha = np.full((24, 48), 255, np.uint8)
    alpha[:, :24] = 0
    modes = {
        "m1.png": im.convert("1", dither=Image.Dither.NONE),
        "mL.png": im.convert("L"),
        "mP.png": im.convert("P"),
        "mRGB.png": im,
        "mLA.png": Image.merge("LA", (im.convert("L"), Image.fromarray(alpha))),
        "mRGBA.png": Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
        "mI16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),  # 16-bit grey: 250 -> 64250
    }
    for name, img in modes.items():
        img.save(root / name)
    im.save(root / "mRGBt.png", transparency=(0, 0, 0))  # RGB with a tRNS colour key
    im.convert("P").save(root / "mPt.png", transparency=int(np.asarray(im.convert("P"))[0, 0]))
    im.convert("L").save(root / "mLt.png", transparency=0)
    (root / "pic.svg").write_text(SVG)
    (root / "notes.txt").write_text("not an image")
    return {p.name: Image.open(p).mode for p in root.glob("*.png")}


def test_every_png_mode_decodes_with_transparency_on_white(tmp_path):
    modes = _every_mode(tmp_path / "imgs")
    assert set(modes.values()) == {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}
    for name in modes:
        rgb = np.asarray(ex.load_rgb(tmp_path / "imgs" / name))
        assert rgb.shape == (24, 48, 3), name
        left, right = rgb[12, 5], rgb[12, 40]
        if name in ("mLA.png", "mRGBA.png", "mRGBt.png", "mPt.png", "mLt.png"):  # transparent left half
            assert (left == 255).all(), f"{name}: transparency on {left}, not on white"
        else:
            assert (left <= 1).all(), name
        assert right.min() > 200, name
    np.testing.assert_array_equal(np.asarray(ex.load_rgb(tmp_path / "imgs" / "mI16.png"))[12, 40], [250] * 3)
    grey16 = np.array([[0, 5, 51400]], np.uint16)
    Image.fromarray(grey16).save(tmp_path / "key16.png", transparency=0)  # a 16-bit colour key: only 0 is clear
    np.testing.assert_array_equal(np.asarray(ex.load_rgb(tmp_path / "key16.png"))[0, :, 0], [255, 0, 200])
    with pytest.raises(ex.UnsupportedFormat, match=r"not an image file \(\.txt\)"):
        ex.load_rgb(tmp_path / "imgs" / "notes.txt")


def test_fit_square_pads_crops_or_stretches_and_maps_pixels():
    im = Image.fromarray(np.full((50, 100, 3), 10, np.uint8))  # 100 wide, 50 high
    pad, a = ex.fit_square(im, 32, "pad")
    px = np.asarray(pad)
    assert (px[0, 0] == 255).all() and (px[16, 16] == 10).all()  # white bars above and below
    np.testing.assert_allclose([a[0] * 100 + a[1], a[2] * 0 + a[3], a[2] * 50 + a[3]], [1, 0.25, 0.75])
    crop, a = ex.fit_square(im, 32, "crop")
    assert (np.asarray(crop) == 10).all()
    np.testing.assert_allclose([a[0] * 25 + a[1], a[0] * 75 + a[1], a[2] * 50 + a[3]], [0, 1, 1])
    stretch, a = ex.fit_square(im, 32, "stretch")
    assert (np.asarray(stretch) == 10).all()
    np.testing.assert_allclose(a, [1 / 100, 0, 1 / 50, 0])
    with pytest.raises(ex.FeatureError, match="--resize 'fit'"):
        ex.fit_square(im, 32, "fit")


def test_boxes_are_pooled_where_the_resized_picture_puts_them(tmp_path, monkeypatch):
    Image.fromarray(np.full((50, 100, 3), 90, np.uint8)).save(tmp_path / "a.png")
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text(json.dumps({"image": "a.png", "boxes": [[0, 0, 100, 50]]}) + "\n")
    seen = []
    original = ex.EfficientNetExtractor.__call__

    def spy(self, images, given=None):
        seen.append(given[0].copy())
        return original(self, images, given)

    monkeypatch.setattr(ex.EfficientNetExtractor, "__call__", spy)
    ex.extract_store(
        [ex.ImageItem(tmp_path / "a.png", key="a.png")], tmp_path / "s", boxes_file=boxes, size=32, progress=False
    )
    np.testing.assert_allclose(seen[0], [[0, 0.25, 1, 0.75]])  # --resize pad: the picture's band of the square
    np.testing.assert_allclose(open_store(tmp_path / "s").image(0)["boxes"], [[0, 0, 1, 1, 1]])  # kept on the image


def _without_svg_renderer(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "resvg_py", None)  # `import resvg_py` raises ImportError


def test_svg_without_renderer_is_counted_never_fatal_and_leaves_no_parts(tmp_path, monkeypatch):
    _without_svg_renderer(monkeypatch)
    root = tmp_path / "imgs"
    _every_mode(root)
    items = ex.list_images(images_dir=root)
    assert {"pic.svg", "notes.txt"} <= {it.key for it in items}  # counted at extraction, not silently dropped
    summary = ex.extract_store(items, tmp_path / "store", size=32, progress=False)
    assert summary["images"] == 10 and summary["skipped"] == 0 and summary["unsupported"] == 2
    assert any(
        "pic.svg: SVG is not supported without the optional package resvg-py" in u for u in summary["first_unsupported"]
    )
    assert summary["resize"] == {
        "mode": "pad",
        "input": 32,
        "background": "white",
        "not_square": 10,
        "upscaled": 0,
        "over_3_to_1": 0,
    }
    meta = open_store(tmp_path / "store").meta
    assert meta["resize"] == "pad" and meta["extract"]["unsupported"] == 2 and meta["extract"]["svg_renderer"] is None
    assert not (tmp_path / "store.parts").exists()

    only_svg = [ex.ImageItem(root / "pic.svg", key="pic.svg")]
    with pytest.raises(
        ex.FeatureError, match="no image could be read .1 unsupported, 0 unreadable.*SVG is not supported"
    ):
        ex.extract_store(only_svg, tmp_path / "svg", size=32, progress=False)
    assert not (tmp_path / "svg").exists() and not (tmp_path / "svg.parts").exists()


def test_svg_is_rendered_with_resvg_py(tmp_path):
    pytest.importorskip("resvg_py", reason="the optional SVG renderer (pip install resvg-py)")
    (tmp_path / "pic.svg").write_text(SVG)
    im = ex.load_rgb(tmp_path / "pic.svg", svg_side=64)
    assert im.size == (192, 64) and tuple(np.asarray(im)[32, 96]) == (0, 0, 255)
    summary = ex.extract_store(
        [ex.ImageItem(tmp_path / "pic.svg", key="pic.svg")], tmp_path / "s", size=32, progress=False
    )
    assert summary["images"] == 1 and summary["unsupported"] == 0
    assert open_store(tmp_path / "s").meta["extract"]["svg_rendered"] == 1


def test_every_mode_list_then_split_then_subsampled_evaluation(tmp_path, capsys):
    """What a user does with a folder of captioned pictures: extract a list holding PNGs of every mode, an SVG
    and colour-keyed PNGs, split the store by image, evaluate zero-shot on a seeded subsample."""
    from mmtlab.cli import main
    from mmtlab.config import save_yaml
    from mmtlab.model import build_from_config
    from mmtlab.train.checkpoint import save_weights
    from mmtlab.train.config import make_run_config

    root = tmp_path / "imgs"
    _every_mode(root)
    names = sorted(p.name for p in root.iterdir() if p.suffix in (".png", ".svg"))
    lines = [f"{n}\ta picture called {n[:-4]}" for n in names] + [
        f"{n}\ta picture" for n in names[:2]
    ]  # a shared caption
    (root / "list.tsv").write_text("\n".join(lines) + "\n")
    store = tmp_path / "store"
    assert main(["features", "extract", "--list", str(root / "list.tsv"), "--no-progress", "--out", str(store)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] + summary["unsupported"] == 11 and summary["skipped"] == 0
    assert not (tmp_path / "store.parts").exists()

    assert main(["data", "split", str(store), "--test-fraction", "0.5", "--seed", "0"]) == 0
    assert "features not copied" in capsys.readouterr().out
    test = open_store(store).split("test")
    assert test.n_images == round(0.5 * summary["images"])

    cfg = make_run_config("merged", "itm", scale="tiny", overrides={"model.feat_dim": 1280, "data.max_regions": 49})
    run = tmp_path / "run"
    run.mkdir()
    save_yaml(cfg, run / "config.yaml")
    save_weights(build_from_config(cfg.model), run / "model.safetensors")
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--run",
                str(run),
                "--data",
                str(store),
                "--max-images",
                "3",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["split"] == "test" and r["n_images"] == 3 and r["subsample"]["split_images"] == test.n_images
    assert r["subsample"]["seed"] == 0 and "subsample" in " ".join(r["notes"]) and "3 images" in printed
    assert set(r["r1_cap"]) == {"text_to_image", "image_to_text", "captions_sharing_text", "shared_texts"}
