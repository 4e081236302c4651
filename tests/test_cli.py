"""The `mmtlab` command line: the preset listing, the README kept in sync with it, one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mmtlab
from mmtlab.cli import main
from mmtlab.presets import model_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_preset_table_matches_the_code(capsys):
    assert main(["presets", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    text = README.read_text()
    block = text.split("<!-- presets:start -->")[1].split("<!-- presets:end -->")[0].strip()
    assert block == table, "README preset table is stale: regenerate it with `mmtlab presets --markdown`"


def test_presets_lists_every_preset_with_true_parameter_counts(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split() and line.split()[0] in mmtlab.list_presets()
    }
    assert set(rows) == set(mmtlab.list_presets())
    for name in ("merged", "single-stream", "heads6-64", "single-modality-hloss"):
        model = mmtlab.build_model(name, scale="tiny")
        n = sum(p.numel() for p in model.parameters())
        printed = rows[name][9]  # tiny params column, e.g. "7.2M"
        assert printed == f"{n / 1e6:.1f}M"
        cfg = model_config(name)
        with torch.device("meta"):
            big = mmtlab.model.MultimodalTransformer(cfg)
        assert rows[name][7] == f"{sum(p.numel() for p in big.parameters()) / 1e6:.1f}M"
        assert rows[name][1] == cfg.schedule and rows[name][4] == str(cfg.width) and rows[name][5] == str(cfg.heads)
    from mmtlab.data import STYLES

    for name in [*mmtlab.list_loss_sets(), *STYLES]:
        assert re.search(rf"^\s+{re.escape(name)}\s", out, re.M)


def test_user_errors_are_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "mmtlab.cli", "presets", "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


def test_config_errors_exit_2_and_debug_shows_traceback(monkeypatch, capsys):
    import mmtlab.model.catalog

    monkeypatch.setattr(mmtlab.model.catalog, "preset_table", lambda markdown: mmtlab.build_model("no-such-preset"))
    assert main(["presets"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("mmtlab: error: unknown preset 'no-such-preset'; valid presets: merged")
        and "Traceback" not in err
    )
    with pytest.raises(ValueError):
        main(["--debug", "presets"])


def test_readme_python_example_runs():
    """The README's Python API example is executed as written."""
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    out = scope["out"]
    assert out["itm_logits"].shape == (2, 2) and out["text_states"].shape == (2, 12, 128)


def test_progress_bars_are_quiet_in_log_files(capsys):
    """stderr is not a terminal under pytest (as in a cluster job's log): the bar redraws every 30 s, not 10/s."""
    from mmtlab.progress import progress_bar

    bar = progress_bar(total=5)
    assert bar.mininterval == 30.0
    bar.close()
    assert progress_bar(total=5, mininterval=1.0).mininterval == 1.0


def test_documented_torchrun_commands_reach_mmtlab():
    """torchrun's parser takes abbreviations, so `--run` alone reads as its --run-path: the documented form puts
    `--` before the mmtlab command, and torchrun hands every argument after it to mmtlab unchanged."""
    from torch.distributed.run import config_from_args, get_args_parser

    ours = ["eval", "retrieval", "--run", "RUN", "--data", "DIR", "--out", "r.json"]
    args = get_args_parser().parse_args(["--nproc_per_node", "2", "-m", "mmtlab.cli", "--", *ours])
    _, _, cmd_args = config_from_args(args)
    assert cmd_args[-len(ours) - 2 :] == ["-m", "mmtlab.cli", *ours]
    with pytest.raises(SystemExit):  # without `--`: "ambiguous option: --run could match --run-path, --run_path"
        get_args_parser().parse_args(["--nproc_per_node", "2", "-m", "mmtlab.cli", *ours])
    readme = README.read_text() + (README.parent / "docs" / "evaluation.md").read_text()
    assert "-m mmtlab.cli -- eval retrieval --run" in readme and "-m mmtlab.cli -- train" in readme


def test_a_leading_separator_is_dropped(capsys):
    """`python -m mmtlab.cli -- presets` (a torchrun command line copied without torchrun) runs the command."""
    assert main(["--", "presets"]) == 0
    assert "single-modality" in capsys.readouterr().out
