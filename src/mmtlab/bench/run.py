"""``run_bench``: the comparisons, each timed as train and score (docs/design.md, "Benchmark shape"), and the
printed table."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config import ConfigError
from .inputs import SCORE_CAPTIONS, VOCAB, bench_scale, bench_shape, make_inputs
from .ours import ABLATIONS, SINGLE_SCHEDULE, TWO_STREAM_SCHEDULE, _ours
from .peers import _hf
from .timing import check_bf16, peak_flops, profile_ops, time_interleaved

COMPARISONS = ("visualbert", "lxmert")
COMPILE_MODES = ("none", "all", "ours")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on CUDA, fp32 on CPU


@dataclass
class Options:
    """The checked options of one benchmark run."""

    scale: str
    device: object  # torch.device
    batch: int
    score_batch: int
    steps: int
    warmup: int
    compile: str
    bf16: bool
    peers: bool
    ablate: tuple[str, ...]
    profile: bool


def run_bench(
    scale: str = "tiny",
    device: str = "cpu",
    batch: int = 8,
    score_batch: int | None = None,
    precision: str = "auto",
    steps: int = 5,
    warmup: int = 2,
    compile: str = "none",
    compare: tuple[str, ...] = COMPARISONS,
    peers: bool = True,
    ablate: tuple[str, ...] = (),
    peak_tflops: float | None = None,
    threads: int | None = None,
    profile: bool = False,
    log: Callable[[str], None] = lambda s: None,
    on_row: Callable[[dict], None] = lambda results: None,
) -> dict:
    """Run the benchmark and return the results dict (what ``--out`` writes). ``on_row(results)`` is called after
    each finished comparison (``--out`` is rewritten then, so a run killed midway keeps what it measured)."""
    import torch

    opts = check_options(scale, device, batch, score_batch, precision, steps, warmup, compile, compare, ablate)
    opts = dataclasses.replace(opts, peers=peers, profile=profile)
    if threads:
        torch.set_num_threads(threads)
    shape = bench_shape(opts.scale)
    inputs = make_inputs(shape, batch, opts.device)
    score_inputs = inputs if opts.score_batch == batch else make_inputs(shape, opts.score_batch, opts.device, seed=1)
    results = results_header(opts, shape, inputs, peak_flops(opts.device, peak_tflops))
    for name in compare:
        results["comparisons"].append(time_comparison(name, opts, shape, inputs, score_inputs, results, log))
        on_row(results)
        if opts.device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def check_options(scale, device, batch, score_batch, precision, steps, warmup, compile, compare, ablate) -> Options:
    """The options of :func:`run_bench`, checked (one :class:`ConfigError` naming the option and its values)."""
    import torch

    scale = bench_scale(scale)
    score_batch = batch if score_batch is None else score_batch
    if min(batch, score_batch, steps) < 1 or warmup < 0:
        raise ConfigError(
            f"--batch, --score-batch and --steps must be >= 1 and --warmup >= 0 "
            f"(got {batch}, {score_batch}, {steps}, {warmup})"
        )
    for option, value, valid, what in (
        ("--precision", precision, PRECISIONS, "values"),
        ("--compile", compile, COMPILE_MODES, "modes"),
        *(("--compare", name, COMPARISONS, "comparisons") for name in compare),
        *(("--ablate", name, ABLATIONS, "levers") for name in ablate),
    ):
        if value not in valid:
            raise ConfigError(f"{option} {value!r}: valid {what} are {', '.join(valid)}")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: valid devices are cpu, cuda")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible; use --device cpu")
    bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    return Options(scale, dev, batch, score_batch, steps, warmup, compile, bf16, True, tuple(ablate), False)


def results_header(opts: Options, shape: dict, inputs: dict, peak: float | None) -> dict:
    """The results dict before any comparison: the machine, the versions, the shape and the options."""
    import torch

    dev = opts.device
    return {
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        # mmtlab.cpu: None on a quiet machine (OpenMP spins), else PASSIVE, or the user's own
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "transformers": _transformers_version(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scale": opts.scale,
        "shape": {
            **shape,
            "vocab": VOCAB,
            "mlm_positions": int(inputs["mlm_mask"][0].sum()),
            "score_block": [min(SCORE_CAPTIONS, opts.score_batch), math.ceil(opts.score_batch / SCORE_CAPTIONS)],
        },
        "batch": opts.batch,
        "score_batch": opts.score_batch,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "compile": opts.compile,
        "precision": "bf16 autocast" if opts.bf16 else "fp32",
        "loss": "ours: mmtlab.train.losses mlm_loss + itm_loss; HF: the model's own loss (labels, ITM label)",
        "ablate": list(opts.ablate),
        "peak_flops": peak,
        "comparisons": [],
    }


OURS_SPEC = {"visualbert": (SINGLE_SCHEDULE, True), "lxmert": (TWO_STREAM_SCHEDULE, False)}  # schedule, shared


def time_comparison(
    name: str, opts: Options, shape: dict, inputs: dict, score_inputs: dict, results: dict, log: Callable
) -> dict:
    """One comparison's row: ours (and the peer) timed on train and score, interleaved; MFU and the ratios. The
    first comparison under bf16 also writes ``results["bf16_check"]``."""
    import torch

    dev = opts.device
    torch.manual_seed(0)
    ours = _ours(*OURS_SPEC[name], shape, inputs, score_inputs, dev, opts.compile != "none", opts.ablate, opts.bf16)
    if "bf16_check" not in results and opts.bf16:
        results["bf16_check"] = check_bf16(ours.model, inputs, dev)
    contenders = {"ours": ours}
    if opts.peers:
        contenders["theirs"] = _hf(name, shape, inputs, score_inputs, dev, opts.compile == "all", opts.bf16)
    row: dict = {"comparison": f"ours vs {name}"}
    if opts.profile:
        row["ours_profile"] = {task: profile_ops(getattr(ours, task), dev) for task in ("train", "score")}
    for task, key, n in (
        ("train", "train_samples_per_s", opts.batch),
        ("score", "score_pairs_per_s", opts.score_batch),
    ):
        log(f"{row['comparison']}: timing {task} ({', '.join(c.name for c in contenders.values())})")
        secs = time_interleaved({k: getattr(c, task) for k, c in contenders.items()}, opts.steps, opts.warmup, dev)
        for k, c in contenders.items():
            entry = row.setdefault(
                k, {"name": c.name, "params": c.params, "train_gflops_per_sample": c.train_flops / 1e9}
            )
            entry[f"{task}_ms"] = secs[k] * 1e3
            entry[key] = n / secs[k]
    peak = results["peak_flops"]
    for k in contenders:
        e = row[k]
        e["mfu"] = e["train_samples_per_s"] * e["train_gflops_per_sample"] * 1e9 / peak if peak else None
    if opts.peers:
        row["ratio_train"] = row["ours"]["train_samples_per_s"] / row["theirs"]["train_samples_per_s"]
        row["ratio_score"] = row["ours"]["score_pairs_per_s"] / row["theirs"]["score_pairs_per_s"]
    return row


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def format_table(results: dict) -> str:
    """The printed summary: one line per contender, then the ratios ours / theirs."""
    head = f"{'contender':<64} {'train samples/s':>16} {'score pairs/s':>14} {'MFU':>6}"
    lines = [
        f"mmtlab bench: {results['device_name']} ({results['device']}), torch {results['torch']}, "
        f"transformers {results['transformers']}, scale {results['scale']}, batch {results['batch']} "
        f"(scoring {results['score_batch']}), "
        f"{results['precision']}, torch.compile: {results['compile']}"
        + (f", ablated: {', '.join(results['ablate'])}" if results["ablate"] else ""),
        head,
        "-" * len(head),
    ]
    for row in results["comparisons"]:
        for k in ("ours", "theirs"):
            if k in row:
                e = row[k]
                mfu = f"{100 * e['mfu']:5.1f}%" if e["mfu"] is not None else "   n/a"
                lines.append(
                    f"{e['name'][:64]:<64} {e['train_samples_per_s']:>16,.1f} {e['score_pairs_per_s']:>14,.1f} {mfu:>6}"
                )
        if "ratio_train" in row:
            lines.append(
                f"{'  ratio ours/theirs (' + row['comparison'] + ')':<64} {row['ratio_train']:>15.2f}x {row['ratio_score']:>13.2f}x"
            )
    for row in results["comparisons"]:
        for task, ops in row.get("ours_profile", {}).items():
            lines.append(
                f"profile of ours ({row['comparison']}, {task}): "
                + ", ".join(f"{o['op']} {100 * o['share']:.1f}%" for o in ops)
            )
    if "bf16_check" in results:
        c = results["bf16_check"]
        lines.append(
            f"bf16 autocast vs fp32 (ours): states rel. err {c['states_rel_err']:.2e}, "
            f"ITM logits rel. err {c['itm_logits_rel_err']:.2e} (max diff {c['itm_logits_max_abs_diff']:.2e}) "
            f"-> {'ok' if c['ok'] else 'MISMATCH'}"
        )
    return "\n".join(lines)
