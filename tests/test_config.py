"""Configuration: typed presets, overrides, and errors that name the key and the valid choices."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

import mmtlab
from mmtlab.config import (
    ConfigError,
    ModelConfig,
    apply_overrides,
    from_dict,
    load_yaml,
    parse_overrides,
    save_yaml,
    to_dict,
)
from mmtlab.presets import list_loss_sets, loss_set, model_config, preset_info


@dataclass
class _Run:
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 10
    lr: float = 1e-4
    tags: list[str] = field(default_factory=list)
    note: str | None = None


def test_overrides_are_typed():
    cfg = apply_overrides(
        _Run(),
        parse_overrides(
            ["model.width=256", "model.heads=4", "model.shared=true", "lr=3e-4", "steps=1e3", "tags=a,b", "note=none"]
        ),
    )
    assert (cfg.model.width, cfg.model.heads, cfg.model.shared) == (256, 4, True)
    assert cfg.lr == 3e-4 and cfg.steps == 1000 and cfg.tags == ["a", "b"] and cfg.note is None


@pytest.mark.parametrize(
    "item, pattern",
    [
        ("model.widht=256", r"unknown key 'model.widht'; valid keys: model.schedule, model.shared, model.width"),
        ("modle.width=256", r"unknown key 'modle'; valid keys: model, steps, lr, tags, note"),
        ("model.width=wide", r"model.width: expected an int, got 'wide'"),
        ("model.shared=maybe", r"model.shared: expected a bool"),
        ("steps=1.5", r"steps: expected an int"),
        ("model=3", r"'model' is a section"),
        ("model.width.x=3", r"'model.width' is a value, not a section"),
        ("model.schedule=MMX", r"unknown layer code\(s\) \['X'\].*valid codes: M, C, L, I, U"),
        ("model.heads=5", r"model.width=768 is not divisible by model.heads=5"),
    ],
)
def test_bad_overrides_name_the_key(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        apply_overrides(_Run(), parse_overrides([item]))


def test_malformed_override():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["model.width"])


def test_presets_resolve_with_overrides():
    cfg = model_config("mixed-modality", "tiny", width=64, heads=2)
    assert (cfg.schedule, cfg.width, cfg.heads, cfg.ffn) == ("UUUUUM", 64, 2, 512)
    assert cfg.n_unimodal_prefix == 5 and not cfg.is_dual
    with pytest.raises(ConfigError, match="unknown preset 'merge'; valid presets: merged, vilbert-1block"):
        model_config("merge")
    with pytest.raises(ConfigError, match="unknown scale 'huge'; valid scales: paper, tiny"):
        model_config("merged", "huge")
    with pytest.raises(ConfigError, match="unknown key 'model.colour'"):
        model_config("merged", colour="red")
    assert preset_info("baseline")["loss"] == "contrastive1024"
    assert preset_info("merged")["loss"] == "itm+mlm+mrm"


def test_build_model_api_overrides():
    model = mmtlab.build_model(
        "merged", scale="tiny", schedule="UUM", shared=True, width=64, heads=4, ffn=128, feat_dim=48, vocab_size=500
    )
    c = model.config
    assert (c.schedule, c.shared, c.width, c.heads, c.ffn, c.feat_dim, c.vocab_size) == (
        "UUM",
        True,
        64,
        4,
        128,
        48,
        500,
    )
    assert model.text_embed.word.num_embeddings == 500


def test_loss_sets():
    assert list_loss_sets()[:5] == ["itm+mlm+mrm", "itm+mrm", "itm+mlm", "contrastive32", "contrastive1024"]
    assert loss_set("contrastive4")["contrastive_k"] == 4
    assert set(loss_set("itm+mlm")["weights"]) == {"itm", "mlm"} and set(loss_set("itm")["weights"]) == {"itm"}
    with pytest.raises(ConfigError, match="unknown loss set 'itm\\+mln'; valid loss sets: itm\\+mlm\\+mrm"):
        loss_set("itm+mln")


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(_Run(), {"model.schedule": "UUUUUM", "steps": "7"})
    save_yaml(cfg, tmp_path / "config.yaml")
    again = from_dict(_Run, load_yaml(tmp_path / "config.yaml"))
    assert to_dict(again) == to_dict(cfg)
    assert not (tmp_path / "config.yaml.tmp").exists()


def test_import_is_light():
    """``import mmtlab`` (and listing presets) does not load torch."""
    code = "import sys, mmtlab; mmtlab.list_presets(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_each_scale_has_its_training_recipe_and_overrides_win(tmp_path):
    """The tiny scale's recipe (presets/recipes.yaml) fills the run config under the user's overrides, the paper
    scale keeps the paper's settings, and the resolved values are what config.yaml records."""
    from mmtlab.presets import scale_recipe
    from mmtlab.train.config import load_run_config, make_run_config

    paper = make_run_config("merged", scale="paper")
    assert (paper.model.dropout, paper.train.lr, paper.train.grad_clip, paper.loss.itm_inputs) == (
        0.1,
        1e-4,
        1.0,
        "masked",
    )
    assert paper.train.warmup == paper.train.steps // 10
    tiny = make_run_config("merged", scale="tiny")
    recipe = scale_recipe("tiny")
    assert recipe and scale_recipe("paper") == {}
    for key, value in recipe.items():
        section, name = key.split(".")
        assert getattr(getattr(tiny, section), name) == value, key
    assert model_config("merged", "tiny").dropout == recipe["model.dropout"]  # build_model(scale="tiny") agrees
    mine = make_run_config(
        "merged", scale="tiny", overrides={"train.lr": 3e-4, "model.dropout": 0.1, "loss.itm_inputs": "masked"}
    )
    assert (mine.train.lr, mine.model.dropout, mine.loss.itm_inputs) == (3e-4, 0.1, "masked")
    assert mine.train.grad_clip == recipe["train.grad_clip"]
    save_yaml(tiny, tmp_path / "config.yaml")
    assert load_run_config(tmp_path) == tiny


def test_choices_come_from_one_list_each():
    """Scales, sampling modes and scorers are each listed once; the command line and the grid check read them."""
    from mmtlab.cli import build_parser
    from mmtlab.data.config import SAMPLING
    from mmtlab.eval import SCORERS
    from mmtlab.presets import SCALES
    from mmtlab.study.grid import parse_grid

    def choices(*command: str, option: str) -> tuple:
        parser = build_parser()
        for name in command:
            parser = next(a for a in parser._actions if a.dest.endswith("command")).choices[name]
        return tuple(next(a for a in parser._actions if option in a.option_strings).choices)

    assert choices("train", option="--scale") == SCALES
    assert choices("eval", "retrieval", option="--scorer") == SCORERS
    grid = {"data": ["coco"], "attention": ["merged"]}
    for key, value, names in (("scale", "huge", SCALES), ("eval", {"scorer": "best"}, SCORERS)):
        with pytest.raises(ConfigError, match=", ".join(names)):
            parse_grid({**grid, key: value})
    mix = {"datasets": {"a": {"style": "coco"}, "b": {"mix": ["a"], "sampling": "x"}}, "data": ["b"]}
    with pytest.raises(ConfigError, match=", ".join(SAMPLING)):
        parse_grid({**grid, **mix})


def test_config_keeps_exporting_what_moved():
    import mmtlab.config as config
    from mmtlab import errors, files, typed_config

    assert config.ConfigError is errors.ConfigError
    assert config.from_dict is typed_config.from_dict and config.apply_overrides is typed_config.apply_overrides
    assert config.load_yaml is files.load_yaml and config.write_json is files.write_json
