"""What budget a cell needs: train one run in stages and score zero-shot retrieval after each (issue 20).

Trains ``mmtlab train --preset P --loss L --data DIR --scale tiny`` to the first stage, evaluates it with
``mmtlab eval retrieval`` on ``--val`` (a validation store, never the test images a study reports), then extends the
same run with ``mmtlab train --resume RUN train.steps=N`` to each later stage and evaluates again. A resumed run
equals an uninterrupted one (tests/test_train_exact.py), and the tiny recipe's lr is constant, so the score at stage N is
that of an N-step run. Prints one Markdown row per stage (T->I R@1/5/10, the ITM loss of the last logged step); the
scores stay in ``OUT/val<N>.json``. ``--plot FILE`` draws R@1 and the ITM loss against steps for one or more such
run directories. Not a test:

    python scripts/budget_curve.py --preset single-modality --data coco --val flickr-val \\
        --stages 600 1200 1800 2400 --out runs/sm-long train.batch_size=64 data.max_regions=12
    python scripts/budget_curve.py --plot docs/paper-small/budget.png runs/sm-long runs/iq-long
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mmtlab.files import load_yaml
from mmtlab.train.metrics import training_lines


def mmtlab(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mmtlab.cli", *args], check=True)


def itm_curve(run: Path) -> list[tuple[int, float]]:
    """(step, ITM loss) of every logged step of a run that has an ITM term."""
    return [(r["step"], r["itm"]) for r in training_lines(run) if "itm" in r]


def run_curve(args: argparse.Namespace) -> None:
    run, stages = Path(args.out), sorted(args.stages)
    for i, steps in enumerate(stages):
        if i == 0:
            cmd = ["train", "--preset", args.preset, "--data", args.data, "--scale", "tiny", "--out", str(run)]
            mmtlab(*cmd, *(["--loss", args.loss] if args.loss else []), f"train.steps={steps}", *args.overrides)
        else:
            mmtlab("train", "--resume", str(run), f"train.steps={steps}")
        result = run / f"val{steps}.json"
        mmtlab("eval", "retrieval", "--run", str(run), "--data", args.val, "--out", str(result), "--no-progress")
        t2i, itm = json.loads(result.read_text())["text_to_image"], itm_curve(run)
        itm = f"{itm[-1][1]:.3f}" if itm else "—"
        print(f"| {args.preset} | {steps} | {itm} | {t2i['R@1']:.1f} | {t2i['R@5']:.1f} | {t2i['R@10']:.1f} |")


def stages(run: Path) -> list[tuple[int, float]]:
    """(steps, T->I R@1) of every ``val<N>.json`` in a run directory, by steps."""
    found = [(int(p.stem[3:]), json.loads(p.read_text())["text_to_image"]["R@1"]) for p in run.glob("val*.json")]
    return sorted(found)


def plot(out: Path, runs: list[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_itm) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        cfg = load_yaml(run / "config.yaml")
        label = f"{cfg['preset']} ({', '.join(Path(d).name for d in cfg['data_dirs'])})"
        points = stages(run)
        ax_r.plot([s for s, _ in points], [r for _, r in points], marker="o", label=label)
        itm = itm_curve(run)
        if itm:
            ax_itm.plot([s for s, _ in itm], [v for _, v in itm], lw=1, label=label)
    ax_r.set(xlabel="step", ylabel="T->I R@1 (%), validation images", title="zero-shot R@1 after N steps")
    ax_itm.axhline(0.6931, ls="--", c="gray", lw=1)
    ax_itm.set(xlabel="step", ylabel="ITM loss", title="ITM loss (ln 2 dashed)")
    ax_r.legend(fontsize=8)
    ax_itm.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plot", metavar="FILE", help="draw the run directories given as arguments into FILE and exit")
    p.add_argument("--preset", default="merged")
    p.add_argument("--loss", help="loss set (default: the preset's)")
    p.add_argument("--data", help="training store")
    p.add_argument("--val", help="validation store to score after each stage")
    p.add_argument("--stages", type=int, nargs="+", help="step counts at which to score, e.g. 600 1200 1800")
    p.add_argument("--out", help="run directory (must not exist)")
    p.add_argument(
        "overrides", nargs="*", help="config overrides for the first stage (or, with --plot, run directories)"
    )
    args = p.parse_args(argv)
    if args.plot:
        plot(Path(args.plot), [Path(c) for c in args.overrides])
        return
    if not (args.data and args.val and args.stages and args.out):
        p.error("--data, --val, --stages and --out are needed to train a curve")
    run_curve(args)


if __name__ == "__main__":
    main()
