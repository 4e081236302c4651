"""Exhaustive ITM scoring speed, with and without the unimodal cache (issue 5).

For each preset and scale, scores every pair of ``--captions`` x ``--images`` random inputs of the base benchmark
shape (40 word pieces, 36 regions + the global token, 2048-d features; docs/design.md, "Benchmark shape") two ways:

* ``cache``: :func:`mmtlab.eval.scorers.encode_texts` / ``encode_images`` once per caption and image (embeddings
  + the unimodal prefix), then :func:`~mmtlab.eval.scorers.exhaustive_scores` runs the rest per pair (the
  encoding time is included);
* ``no cache``: the full model (embeddings + every layer + the ITM head) on every pair, with the same pair
  order and padding cuts as the cached path.

Prints pairs/s and the speed-up, both for the whole matrix and for its per-pair part alone (the encoding is
amortised over ``n_images`` pairs per caption, so on Flickr30k's 1,000 x 5,000 the whole approaches the per-pair
part; small grids show it less). bf16 autocast on CUDA. Not a test: run it by hand and quote the numbers.

    python scripts/bench_scoring.py                               # CPU: tiny and base, small grids
    python scripts/bench_scoring.py --device cuda --captions 512 --images 256 --batch-size 2048
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import mmtlab
from mmtlab.eval.scorers import autocast, encode_images, encode_texts, exhaustive_scores

T, R, FEAT = 40, 36, 2048


def random_inputs(n_captions: int, n_images: int, vocab: int, seed: int = 0) -> dict:
    """Captions of 8..40 pieces (right-padded to 40), images of 10..36 regions plus the global token."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, T + 1, (n_captions,), generator=g)
    regions = torch.randint(10, R + 1, (n_images,), generator=g) + 1
    return {
        "text_ids": torch.randint(1000, vocab, (n_captions, T), generator=g),
        "text_mask": torch.arange(T)[None] < lengths[:, None],
        "img_feats": torch.randn(n_images, R + 1, FEAT, generator=g),
        "img_boxes": torch.rand(n_images, R + 1, 5, generator=g),
        "img_mask": torch.arange(R + 1)[None] < regions[:, None],
    }


def batches(x: dict, keys: tuple[str, ...], n: int, size: int, device):
    def gen():
        for s in range(0, n, size):
            idx = torch.arange(s, min(s + size, n))
            yield idx, {k: x[k][idx].to(device) for k in keys}

    return gen


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def with_cache(model, x: dict, nc: int, ni: int, batch_size: int) -> tuple[float, float]:
    """Seconds for the whole matrix (encoding included) and for its per-pair part alone."""
    device = next(model.parameters()).device
    start = time.perf_counter()
    texts = batches(x, ("text_ids", "text_mask"), nc, 256, device)
    t = encode_texts(model, lambda: ((i, b["text_ids"], b["text_mask"]) for i, b in texts()), nc)
    v = encode_images(model, batches(x, ("img_feats", "img_boxes", "img_mask"), ni, 256, device), ni)
    sync(device)
    encoded = time.perf_counter()
    exhaustive_scores(model, t, v, batch_size)
    sync(device)
    end = time.perf_counter()
    return end - start, end - encoded


@torch.inference_mode()
def without_cache(model, x: dict, nc: int, ni: int, batch_size: int) -> float:
    """Seconds for the matrix with the full model on every pair; pairs in the same caption-length order and
    batches cut to their longest caption / most regions, as the cached path, so only the cache differs."""
    device = next(model.parameters()).device
    text_len = x["text_mask"][:nc].sum(1)
    order = torch.argsort(text_len, descending=True, stable=True)
    ci, ii = order.repeat_interleave(ni), torch.arange(ni).repeat(nc)
    start = time.perf_counter()
    with autocast(device):
        for s in range(0, nc * ni, batch_size):
            c, i = ci[s : s + batch_size], ii[s : s + batch_size]
            T, R = int(text_len[c].max()), int(x["img_mask"][i].sum(1).max())
            pair = {k: x[k][c, :T].to(device) for k in ("text_ids", "text_mask")}
            pair |= {k: x[k][i, :R].to(device) for k in ("img_feats", "img_boxes", "img_mask")}
            model(pair)["itm_logits"].float().cpu()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["merged", "mixed-modality"])
    p.add_argument("--scales", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--captions", type=int, default=None, help="default: 256 on CUDA, 32 (tiny) / 8 (base) on CPU")
    p.add_argument("--images", type=int, default=None, help="default: 128 on CUDA, 16 (tiny) / 8 (base) on CPU")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per forward (default 2048 CUDA, 256 CPU)")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats after one warm-up; the fastest is kept")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    bs = args.batch_size or (2048 if cuda else 256)
    rows = []
    for scale in args.scales:
        nc = args.captions or (256 if cuda else 32 if scale == "tiny" else 8)
        ni = args.images or (128 if cuda else 16 if scale == "tiny" else 8)
        x = random_inputs(nc, ni, vocab=30522)
        for preset in args.presets:
            torch.manual_seed(0)
            model = (
                mmtlab.build_model(preset, scale="tiny" if scale == "tiny" else "paper", feat_dim=FEAT)
                .to(device)
                .eval()
            )
            row = {
                "preset": preset,
                "scale": scale,
                "schedule": model.config.schedule,
                "pairs": nc * ni,
                "batch_size": bs,
                "device": torch.cuda.get_device_name() if cuda else "cpu",
            }
            with_cache(model, x, min(nc, 8), min(ni, 8), bs)  # warm-up
            without_cache(model, x, min(nc, 8), min(ni, 8), bs)
            total, per_pair = min(with_cache(model, x, nc, ni, bs) for _ in range(args.repeats))
            plain = min(without_cache(model, x, nc, ni, bs) for _ in range(args.repeats))
            row.update(
                cache_pairs_per_s=nc * ni / total,
                cache_pair_part_per_s=nc * ni / per_pair,
                no_cache_pairs_per_s=nc * ni / plain,
            )
            row["speedup"] = row["cache_pairs_per_s"] / row["no_cache_pairs_per_s"]
            row["speedup_pair_part"] = row["cache_pair_part_per_s"] / row["no_cache_pairs_per_s"]
            rows.append(row)
            print(
                f"  {preset:<16} {scale:<5} cache {row['cache_pairs_per_s']:>9,.0f} pairs/s "
                f"(pair part {row['cache_pair_part_per_s']:,.0f})   no cache {row['no_cache_pairs_per_s']:>9,.0f} pairs/s",
                flush=True,
            )
            del model
    print()
    fmt = "{:<16} {:<5} {:<8} {:>6} {:>14} {:>15} {:>16} {:>9} {:>10}"
    print(
        fmt.format(
            "preset",
            "scale",
            "schedule",
            "pairs",
            "cache pairs/s",
            "pair part only",
            "no cache pairs/s",
            "speed-up",
            "pair part",
        )
    )
    for r in rows:
        print(
            fmt.format(
                r["preset"],
                r["scale"],
                r["schedule"],
                r["pairs"],
                f"{r['cache_pairs_per_s']:,.0f}",
                f"{r['cache_pair_part_per_s']:,.0f}",
                f"{r['no_cache_pairs_per_s']:,.0f}",
                f"{r['speedup']:.2f}x",
                f"{r['speedup_pair_part']:.2f}x",
            )
        )
    print(
        f"device: {rows[0]['device'] if rows else args.device}, batch {bs} pairs, "
        f"{'bf16 autocast' if cuda else 'fp32'}; captions {T} pieces max, images {R} regions + global, {FEAT}-d"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
