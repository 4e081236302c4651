"""Study reports, regenerated from the cell records: ``results.csv``, ``results.md`` (one table per comparison,
with where each cell's ITM loss left ln 2, and a verdict per claim) and PNG plots (text→image R@1 per axis value
with the seed spread; each comparison's training curves)."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

from .grid import AXES, Claim, Grid
from .layout import dataset_dir, load_records, training_log

METRICS = [("text_to_image", "R@1"), ("text_to_image", "R@5"), ("text_to_image", "R@10"), ("text_to_image", "median_rank"),
           ("image_to_text", "R@1"), ("image_to_text", "R@5"), ("image_to_text", "R@10")]  # fmt: skip
MIN_MARGIN = 1.0  # R@1 points: a difference smaller than this (or than 2 seed std) is not a difference
ITM_LEFT = 0.6  # a classification ITM loss below this has left its ln 2 = 0.693 plateau
Logs = dict[str, list[dict]]  # cell key -> training lines of its metrics.jsonl


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def group(records: list[dict], key: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in records:
        out.setdefault(tuple(r[k] for k in key), []).append(r)
    return out


def r1(records: list[dict]) -> list[float]:
    return [r["results"]["text_to_image"]["R@1"] for r in records]


def held_out(records: list[dict], name: str) -> list[dict]:
    """The results on the held-out set ``name`` (``eval.also``) of the records that have them (a cell whose
    trained model was gone when the set was added to the grid has none)."""
    return [r["also"][name] for r in records if name in r.get("also", {})]


def comparison_rows(grid: Grid, records: dict[str, dict]) -> dict[str, list[dict[str, Any]]]:
    """Per comparison: one row per (data, preset, loss), metrics averaged over seeds."""
    tables = {}
    for comp in grid.comparisons:
        recs = [records[c.key] for c in comp.cells if c.key in records]
        rows = []
        for (d, p, lo), rs in group(recs, AXES).items():
            row: dict[str, Any] = {"data": d, "preset": p, "loss": lo, "seeds": len(rs)}
            for direction, metric in METRICS:
                row[f"{direction}/{metric}"] = _mean_std([r["results"][direction][metric] for r in rs])
            for name in grid.eval["also"]:
                res = held_out(rs, name)
                row[f"also/{name}"] = (
                    _mean_std([x["text_to_image"]["R@1"] for x in res]) if res else (math.nan, math.nan)
                )
                row[f"also/{name}/n"] = len(res)
                row[f"also/{name}/chance"] = 100.0 / res[0]["n_images"] if res else math.nan
            row["scorer"] = rs[0]["results"].get("scorer")
            row["chance"] = 100.0 / rs[0]["results"]["n_images"]
            rows.append(row)
        tables[comp.name] = rows
    return tables


def select(grid: Grid, records: dict[str, dict], sel: dict[str, str]) -> list[dict]:
    comp = next(c for c in grid.comparisons if c.name == sel["comparison"])
    return [
        records[c.key]
        for c in comp.cells
        if c.key in records and all(getattr(c, a) == sel[a] for a in AXES if a in sel)
    ]


def verdict(grid: Grid, records: dict[str, dict], claim: Claim) -> dict[str, Any]:
    """Is ``claim`` supported? ``better`` must beat ``worse`` in mean text→image R@1 by more than the margin
    (max of 1 point and twice the larger seed std); a ``not_better`` claim holds unless it does."""
    a, b = r1(select(grid, records, claim.better)), r1(select(grid, records, claim.worse))
    if not a or not b:
        return {"claim": claim.text, "verdict": "not evaluated (cells missing)", "better": a, "worse": b}
    (ma, sa), (mb, sb) = _mean_std(a), _mean_std(b)
    margin = max(MIN_MARGIN, 2 * max(sa, sb))
    beats = ma - mb > margin
    supported = beats if claim.kind == "better" else not beats
    return {
        "claim": claim.text, "kind": claim.kind, "supported": supported,
        "verdict": "supported" if supported else "not supported",
        "better": {"cells": claim.better, "mean": ma, "std": sa, "n": len(a)},
        "worse": {"cells": claim.worse, "mean": mb, "std": sb, "n": len(b)},
        "difference": ma - mb, "margin": margin,
    }  # fmt: skip


def itm_progress(logs: list[list[dict]]) -> str:
    """ "ITM loss at the end (first step under ITM_LEFT)" over a row's seeds, e.g. ``0.14 (250)`` or
    ``0.69 (never) / 0.31 (400)``; empty when the cells log no classification ITM loss."""
    parts = []
    for log in logs:
        itm = [(line["step"], line["itm"]) for line in log if "itm" in line]
        if itm:
            end = statistics.fmean(v for _, v in itm[-3:])
            left = next((step for step, v in itm if v < ITM_LEFT), None)
            parts.append(f"{end:.2f} ({'never' if left is None else left})")
    return " / ".join(parts)


def claim_lines(grid: Grid, records: dict[str, dict]) -> list[str]:
    """One Markdown bullet per claim of ``grid``: its verdict on ``records``, both sides' mean R@1 and the margin."""
    lines = []
    for v in (verdict(grid, records, c) for c in grid.claims):
        if "supported" not in v:
            lines.append(f"- **{v['claim']}**: {v['verdict']}.")
            continue
        b, w = v["better"], v["worse"]
        lines.append(
            f"- **{v['claim']}**: **{v['verdict']}** by this run — {_label(b['cells'])}: R@1 {b['mean']:.1f}"
            f" (n={b['n']}, std {b['std']:.1f}) vs {_label(w['cells'])}: {w['mean']:.1f} (n={w['n']}, std {w['std']:.1f});"
            f" difference {v['difference']:+.1f} points, margin {v['margin']:.1f}."
        )
    return lines


def _fmt(ms: tuple[float, float], seeds: int) -> str:
    m, s = ms
    if math.isnan(m):
        return "—"
    return f"{m:.1f} ± {s:.1f}" if seeds > 1 else f"{m:.1f}"


def _label(sel: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sel.items() if k != "comparison")


def write_csv(records: dict[str, dict], path: Path, also: list[str] = ()) -> None:
    """One row per finished cell: the test set's metrics, then the text→image R@1 on each ``eval.also`` set."""
    fields = ["key", "data", "preset", "loss", "seed", "scorer", "n_images", "n_captions"]
    fields += [f"{d}/{m}" for d, m in METRICS]
    fields += [f"{name}/{column}" for name in also for column in ("text_to_image/R@1", "n_images")]
    fields += ["train_seconds", "eval_seconds", "train_samples_per_s"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in records.values():
            res = r["results"]
            row = {k: r.get(k) for k in fields if k in r}
            row.update(scorer=res.get("scorer"), n_images=res["n_images"], n_captions=res["n_captions"])
            row.update({f"{d}/{m}": res[d][m] for d, m in METRICS})
            for n in also:
                for check in held_out([r], n):
                    row.update(
                        {f"{n}/text_to_image/R@1": check["text_to_image"]["R@1"], f"{n}/n_images": check["n_images"]}
                    )
            w.writerow(row)


def markdown(
    grid: Grid,
    records: dict[str, dict],
    properties: dict[str, dict[str, float]] | None = None,
    logs: Logs | None = None,
) -> str:
    tables = comparison_rows(grid, records)
    total = sum(r["train_seconds"] + r["eval_seconds"] for r in records.values())
    lines = [f"# Study `{grid.name}`", ""]
    lines.append(
        f"Scale `{grid.scale}`, seeds {grid.seeds}, evaluation: zero-shot retrieval on `{grid.eval['data']}` "
        f"(split `{grid.eval['split']}`, scorer `{grid.eval['scorer']}`). {len(records)}/{len(grid.cells)} cells finished, "
        f"{total / 60:.1f} min of training + evaluation. Values are mean ± std over seeds (text→image = image retrieval)."
    )
    if grid.eval["also"]:
        names = ", ".join(f"`{n}`" for n in grid.eval["also"])
        lines += ["", f"Also scored on held-out {names} (same split and scorer): the `R@1 on` columns. A model that "
                      "stays near chance on the test set but not there learned its training data and did not transfer."]  # fmt: skip
    if grid.overrides:
        lines += ["", "Settings of every cell: " + ", ".join(f"`{k}={v}`" for k, v in grid.overrides.items()) + "."]
    for comp in grid.comparisons:
        rows = tables[comp.name]
        lines += ["", f"## {comp.name} (varying {comp.axis})", ""]
        extra = ["noise", "similarity"] if comp.axis == "data" and properties else []
        head = [
            "data",
            "preset",
            "loss",
            *extra,
            "T→I R@1",
            "T→I R@5",
            "T→I R@10",
            "T→I med. rank",
            "I→T R@1",
            "I→T R@5",
            "I→T R@10",
            *(f"T→I R@1 on `{n}`" for n in grid.eval["also"]),
        ]
        if logs:
            head.append(f"ITM loss at the end (first step < {ITM_LEFT})")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            props = properties.get(row["data"], {}) if properties else {}
            cells = [f"`{row['data']}`", f"`{row['preset']}`", f"`{row['loss']}`"]
            cells += [f"{props.get(k, float('nan')):.2f}" for k in extra]
            cells += [_fmt(row[f"{d}/{m}"], row["seeds"]) for d, m in METRICS]
            for n in grid.eval["also"]:
                seeds = row[f"also/{n}/n"]
                cells.append(_fmt(row[f"also/{n}"], seeds) + (f" (n={seeds})" if 0 < seeds < row["seeds"] else ""))
            if logs:
                keys = [
                    c.key for c in comp.cells if (c.data, c.preset, c.loss) == (row["data"], row["preset"], row["loss"])
                ]
                cells.append(itm_progress([logs[k] for k in keys if k in logs]) or "—")
            lines.append("| " + " | ".join(cells) + " |")
        if rows:
            curves = f", training curves: `{comp.name}-training.png`" if logs else ""
            chance = ""
            for n in grid.eval["also"]:
                known = [row[f"also/{n}/chance"] for row in rows if not math.isnan(row[f"also/{n}/chance"])]
                chance += f", on `{n}` {known[0]:.1f}%" if known else ""
            lines.append(f"\nChance R@1: {rows[0]['chance']:.1f}%{chance}. Plot: `{comp.name}.png`{curves}.")
    if grid.claims:
        lines += ["", "## The paper's claims", "", *claim_lines(grid, records)]
        if len(grid.seeds) == 1:
            lines.append(
                "\nOne seed per cell: the margin is the 1-point floor, not a measured spread; treat verdicts as indicative."
            )
    return "\n".join(lines) + "\n"


def _save(plt, fig, path: Path) -> Path:
    """Lay out, write (PNG) and close one report figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(
    grid: Grid, records: dict[str, dict], root: Path, properties: dict[str, dict[str, float]] | None = None
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    tables = comparison_rows(grid, records)
    for comp in grid.comparisons:
        rows = tables[comp.name]
        if not rows:
            continue
        varying = [
            a for a in AXES if a == comp.axis or len({r[a] for r in rows}) > 1
        ]  # e.g. a flat grid's cross product
        labels = [" / ".join(r[a] for a in varying) for r in rows]
        means = [r["text_to_image/R@1"][0] for r in rows]
        series = [(f"test: {grid.eval['data']}", "text_to_image/R@1")]
        series += [(f"held out: {n}", f"also/{n}") for n in grid.eval["also"]]
        width = 0.8 / len(series)
        fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(rows) * len(series) + 2), 3.6))
        for j, (name, column) in enumerate(series):
            xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, [r[column][0] for r in rows], width, yerr=[r[column][1] for r in rows], capsize=3,
                   color=f"C{j}", label=name if len(series) > 1 else None)  # fmt: skip
        ax.axhline(
            rows[0]["chance"], color="grey", ls="--", lw=1, label="chance (test)" if len(series) > 1 else "chance"
        )
        ax.set_xticks(range(len(rows)), labels, rotation=35, ha="right")
        ax.set_ylabel("text→image R@1 (%)")
        ax.set_title(f"{grid.name}: {comp.name}")
        ax.legend()
        paths.append(_save(plt, fig, root / f"{comp.name}.png"))
        if comp.axis == "data" and properties:
            fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=True)
            for ax, prop in zip(axes, ("similarity", "noise")):
                xs = [properties.get(r["data"], {}).get(prop, float("nan")) for r in rows]
                ax.scatter(xs, means)
                for x, y, lab in zip(xs, means, labels):
                    ax.annotate(lab, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
                ax.set_xlabel({"similarity": "language similarity to the test set", "noise": "caption noise"}[prop])
            axes[0].set_ylabel("text→image R@1 (%)")
            paths.append(_save(plt, fig, root / f"{comp.name}-properties.png"))
    return paths


def plot_training(grid: Grid, logs: Logs, root: Path) -> list[Path]:
    """Per comparison, ``<name>-training.png``: the ITM and MLM losses of each finished cell against the step
    (the evidence that a cell trained, or where it stalled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for comp in grid.comparisons:
        cells = [c for c in comp.cells if logs.get(c.key)]
        if not cells:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, term in ((axes[0], "itm"), (axes[1], "mlm")):
            for i, c in enumerate(cells):
                points = [(line["step"], line[term]) for line in logs[c.key] if term in line]
                if points:
                    label = getattr(c, comp.axis) + (f" s{c.seed}" if len(grid.seeds) > 1 else "")
                    ax.plot(*zip(*points), lw=1.2, label=label, color=f"C{i % 10}")
            ax.set_xlabel("step")
            ax.set_ylabel(f"{term} loss")
        axes[0].axhline(0.6931, color="grey", ls="--", lw=1)
        axes[0].set_title(f"{grid.name}: {comp.name}, ITM (ln 2 dashed)")
        axes[1].set_title("MLM")
        axes[0].legend(fontsize=7, ncol=2)
        paths.append(_save(plt, fig, root / f"{comp.name}-training.png"))
    return paths


def dataset_properties(grid: Grid, root: Path) -> dict[str, dict[str, float]]:
    """Noise and language similarity (fraction of word bigrams also in the evaluation captions, as
    ``mmtlab data stats``) of each training dataset; mixtures are pair-weighted."""
    from ..data import open_store
    from ..data.stats import overlap, sample_indices

    def captions(store, limit: int = 20_000) -> list[str]:
        return [store.captions[int(i)] for i in sample_indices(len(store), limit)]

    def store_dir(name: str) -> Path:
        spec = grid.datasets[name]
        return Path(spec["dir"]) if "dir" in spec else dataset_dir(root, name)

    ref = captions(open_store(store_dir(grid.eval["data"])))
    single: dict[str, dict[str, float]] = {}
    for name, spec in grid.datasets.items():
        if "mix" in spec or name in (grid.eval["data"], *grid.eval["also"]) or not store_dir(name).exists():
            continue
        store = open_store(store_dir(name))
        single[name] = {"noise": float(store.meta.get("noise", spec.get("noise", 0.0))),
                        "similarity": overlap(captions(store), ref)["bigram_tokens"] / 100.0, "pairs": float(len(store))}  # fmt: skip
    props = dict(single)
    for name, spec in grid.datasets.items():
        members = [single[m] for m in spec.get("mix", []) if m in single]
        if members:
            n = sum(m["pairs"] for m in members)
            props[name] = {k: sum(m[k] * m["pairs"] for m in members) / n for k in ("noise", "similarity")} | {
                "pairs": n
            }
    return props


def write_report(grid: Grid, root: str | Path, records: dict[str, dict] | None = None) -> Path:
    """(Re)generate results.csv, results.md and the plots of the study in ``root``."""
    root = Path(root)
    records = load_records(root) if records is None else records
    properties = dataset_properties(grid, root) if any(c.axis == "data" for c in grid.comparisons) else None
    logs = {key: log for key in records if (log := training_log(root, key))}
    write_csv(records, root / "results.csv", grid.eval["also"])
    plot(grid, records, root, properties)
    plot_training(grid, logs, root)
    path = root / "results.md"
    path.write_text(markdown(grid, records, properties, logs))
    return path
