"""Timing the contenders: interleaved medians, the bf16 check, an operator profile and the peak FLOP/s for MFU."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

# dense bf16 peak by device name, the more specific names first (NVIDIA's data sheets)
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H200 NVL": 835e12, "H100": 989e12, "H200": 989e12}


def time_interleaved(fns: dict[str, Callable[[], None]], steps: int, warmup: int, device) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn (ours, theirs, ours, ...)."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def check_bf16(model, inputs: dict, device) -> dict:
    """Our model's forward under bf16 autocast vs fp32 (eval mode, same inputs): relative error (norm of the
    difference / norm of the fp32 values) of the final states and of the ITM logits, and the largest ITM-logit
    difference. ``ok`` when both relative errors are below 5%."""
    import torch

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b).norm() / b.norm())

    batch = {k: inputs[k] for k in ("text_ids", "text_mask", "img_feats", "img_boxes", "img_mask")}
    model.eval()
    with torch.no_grad():
        ref = model(batch)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model(batch)
    states = max(rel(low[k], ref[k]) for k in ("text_states", "img_states"))
    itm = rel(low["itm_logits"], ref["itm_logits"])
    diff = float((low["itm_logits"].float() - ref["itm_logits"]).abs().max())
    return {
        "states_rel_err": states,
        "itm_logits_rel_err": itm,
        "itm_logits_max_abs_diff": diff,
        "ok": states < 0.05 and itm < 0.05,
    }


def profile_ops(fn: Callable[[], None], device, top: int = 8) -> list[dict]:
    """The ``top`` operators of one call of ``fn`` by self time (torch.profiler; device time on CUDA), with their
    share of the total."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    fn()  # warm
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        fn()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: -getattr(e, key))
    total = sum(getattr(e, key) for e in events) or 1
    return [{"op": e.key, "share": getattr(e, key) / total, "calls": e.count} for e in events[:top]]


def peak_flops(device, override_tflops: float | None) -> float | None:
    import torch

    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device))


def peak_for_name(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of the GPU called ``name`` (e.g. "NVIDIA H100 80GB HBM3"), None if unknown."""
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
