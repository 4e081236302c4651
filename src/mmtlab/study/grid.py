"""A study grid: comparisons over data × preset × loss (× seeds), the datasets they use, and the claims they test.

A grid is YAML (``mmtlab study --grid GRID.yaml``; the shipped ones are in ``mmtlab/study/grids/``)::

    name: my-study
    scale: tiny                       # model scale of every cell
    seeds: [0, 1]
    overrides: {train.steps: 800}     # key=value overrides for every cell
    eval: {scorer: exhaustive, data: flickr-test, split: test}
    #   also: [coco-check]            # optional: more held-out sets, scored like the test set, reported beside it
    datasets:                         # names used by the comparisons
      coco: {style: coco, n: 3000}                 # a synthetic-world store, generated once
      coco-check: {style: coco, n: 100, split: test}   # held-out images of a training style (in-domain check)
      cc-noisy: {style: cc, n: 3000, noise: 0.3}
      flickr-test: {style: flickr, n: 200}
      coco-and-cc: {mix: [coco, cc-noisy], sampling: dataset}
      mine: {dir: /data/my-store}                  # an existing store
    comparisons:
      attention:                      # one table / plot each; cells = data × preset × loss (× seeds)
        axis: preset                  # the column being compared
        data: [coco]
        preset: [merged, mixed-modality]
        loss: [default]               # "default": the preset's own loss set
        extra: [{data: coco, preset: baseline, loss: default}]
    claims:
      - text: merged attention beats modality-specific attention
        better: {comparison: attention, preset: merged}
        worse: {comparison: attention, preset: mixed-modality}

The flat form is the full cross product, one comparison named ``grid`` (its axis: the first of preset / data /
loss with more than one value); data names that are styles and not defined under ``datasets`` are generated
with the style's size, and without ``eval`` the test set is 100 synthetic ``flickr`` images (``flickr-test``)::

    scale: tiny
    seeds: [0, 1]
    data: [coco, cc]                  # or datasets defined as above
    attention: [merged, single-modality]   # also: preset / presets
    loss: [itm+mlm]                   # also: losses; default: each preset's own loss set
    overrides: {train.steps: 400}

Every name is checked against the registered presets, loss sets, styles and the grid's own datasets before
anything trains; an unknown one is an error that lists the valid names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..data.config import SAMPLING
from ..eval import SCORERS
from ..files import parse_yaml
from ..presets import SCALES, list_loss_sets, list_presets, preset_info

AXES = ("data", "preset", "loss")
FLAT_KEYS = {
    "data": "data",
    "attention": "preset",
    "preset": "preset",
    "presets": "preset",
    "loss": "loss",
    "losses": "loss",
}
FLAT_EVAL = ("flickr-test", {"style": "flickr", "n": 100})  # the flat form's default test set (chance R@1 1%)
CLAIM_KINDS = ("better", "not_better")


@dataclass(frozen=True)
class Cell:
    """One training run + its evaluation."""

    data: str
    preset: str
    loss: str  # a loss-set name (``default`` already resolved)
    seed: int

    @property
    def key(self) -> str:
        return f"{self.data}__{self.preset}__{self.loss}__s{self.seed}"


@dataclass
class Comparison:
    name: str
    axis: str
    cells: list[Cell]


@dataclass
class Claim:
    text: str
    kind: str  # "better": `better` beats `worse`; "not_better": `better` does not beat `worse`
    better: dict[str, str]
    worse: dict[str, str]


@dataclass
class Grid:
    name: str
    scale: str
    seeds: list[int]
    overrides: dict[str, Any]
    eval: dict[str, Any]
    datasets: dict[str, dict[str, Any]]
    comparisons: list[Comparison]
    claims: list[Claim] = field(default_factory=list)

    @property
    def cells(self) -> list[Cell]:
        """Every distinct cell, in the order the comparisons list them (shared cells run once)."""
        seen: dict[str, Cell] = {}
        for comp in self.comparisons:
            for cell in comp.cells:
                seen.setdefault(cell.key, cell)
        return list(seen.values())

    def train_datasets(self, name: str) -> list[str]:
        """The store names a data entry trains on (one, or the members of a mixture)."""
        spec = self.datasets[name]
        return list(spec["mix"]) if "mix" in spec else [name]


def _names(what: str, valid: list[str]) -> str:
    return f"valid {what}: {', '.join(valid)}"


def _as_list(value: Any, key: str) -> list:
    if value is None:
        raise ConfigError(f"grid: {key} is missing")
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_dataset(name: str, spec: Any, names: list[str]) -> dict[str, Any]:
    from ..data import STYLES

    if not isinstance(spec, dict):
        raise ConfigError(f"grid: datasets.{name} must be a mapping with one of style / mix / dir")
    kinds = [k for k in ("style", "mix", "dir") if k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"grid: datasets.{name} needs exactly one of style / mix / dir, got {sorted(spec)}")
    allowed = {
        "style": {"style", "n", "noise", "seed", "split", "regions"},
        "mix": {"mix", "sampling", "weights"},
        "dir": {"dir", "split"},
    }[kinds[0]]
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"grid: datasets.{name}: unknown key(s) {unknown}; valid: {', '.join(sorted(allowed))}")
    if "style" in spec and spec["style"] not in STYLES:
        raise ConfigError(f"grid: datasets.{name}: unknown style {spec['style']!r}; {_names('styles', list(STYLES))}")
    if "mix" in spec:
        for member in spec["mix"]:
            if member not in names:
                raise ConfigError(
                    f"grid: datasets.{name}: unknown dataset {member!r} in mix; {_names('datasets', names)}"
                )
        if spec.get("sampling", "instance") not in SAMPLING:
            raise ConfigError(f"grid: datasets.{name}: sampling {spec['sampling']!r}; valid: {', '.join(SAMPLING)}")
    return dict(spec)


def _expand_flat(raw: dict[str, Any]) -> dict[str, Any]:
    """The flat form (top-level ``data`` / ``attention`` / ``loss`` lists) as the comparisons form."""
    from ..data import STYLES

    given = [k for k in FLAT_KEYS if k in raw]
    if not given:
        return raw
    if "comparisons" in raw:
        raise ConfigError(f"grid: give either comparisons or the flat axes ({', '.join(given)}), not both")
    axes: dict[str, list] = {}
    for key in given:
        if FLAT_KEYS[key] in axes:
            raise ConfigError(f"grid: {key} repeats the {FLAT_KEYS[key]} axis given by another key")
        axes[FLAT_KEYS[key]] = _as_list(raw[key], key)
    axes.setdefault("data", ["coco"])
    datasets = dict(raw.get("datasets") or {})
    for name in axes["data"]:
        if name not in datasets and name in STYLES:
            datasets[name] = {"style": name}
    ev = dict(raw.get("eval") or {})
    if "data" not in ev:
        datasets.setdefault(*FLAT_EVAL)
        ev["data"] = FLAT_EVAL[0]
    varying = [a for a in ("preset", "data", "loss") if len(axes.get(a, [])) > 1] or ["preset"]
    comparison = {"axis": varying[0], "data": axes["data"], "preset": axes.get("preset", ["merged"]),
                  "loss": axes.get("loss", ["default"])}  # fmt: skip
    rest = {k: v for k, v in raw.items() if k not in FLAT_KEYS}
    return {**rest, "datasets": datasets, "eval": ev, "comparisons": {"grid": comparison}}


def parse_grid(raw: dict[str, Any]) -> Grid:
    """Check a grid's names and structure (either form above); raises :class:`ConfigError` before anything runs."""
    from ..data.synth import default_split

    if not isinstance(raw, dict):
        raise ConfigError("grid: expected a YAML mapping")
    raw = _expand_flat(raw)
    known = {"name", "scale", "seeds", "overrides", "eval", "datasets", "comparisons", "claims", "description"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"grid: unknown key(s) {unknown}; valid keys: {', '.join(sorted(known))} "
            f"(or the flat form's {', '.join(FLAT_KEYS)})"
        )
    scale = raw.get("scale", "tiny")
    if scale not in SCALES:
        raise ConfigError(f"grid: scale {scale!r}; valid scales: {', '.join(SCALES)}")
    datasets_raw = raw.get("datasets") or {}
    names = list(datasets_raw)
    datasets = {n: _check_dataset(n, s, names) for n, s in datasets_raw.items()}
    for n, s in datasets.items():
        if "mix" in s and any("mix" in datasets[m] for m in s["mix"]):
            raise ConfigError(f"grid: datasets.{n}: a mixture cannot contain another mixture")
    ev = dict(raw.get("eval") or {})
    if ev.get("data") not in datasets or "mix" in datasets.get(ev.get("data"), {}):
        raise ConfigError(
            f"grid: eval.data {ev.get('data')!r} must name a (non-mixture) dataset; {_names('datasets', names)}"
        )
    ev.setdefault("scorer", "exhaustive")
    if ev["scorer"] not in SCORERS:
        raise ConfigError(f"grid: eval.scorer {ev['scorer']!r}; valid: {', '.join(SCORERS)}")
    ev.setdefault("split", "test")
    also = [str(n) for n in _as_list(ev.get("also") or [], "eval.also")]
    for n in also:
        if n not in datasets:
            raise ConfigError(f"grid: eval.also {n!r} is not a dataset; {_names('datasets', names)}")
        if "mix" in datasets[n]:
            raise ConfigError(f"grid: eval.also {n!r} is a mixture; name a held-out dataset that is not one")
        if n == ev["data"]:
            raise ConfigError(f"grid: eval.also {n!r} is eval.data already; name another held-out dataset")
    ev["also"] = list(dict.fromkeys(also))
    presets, losses = list_presets(), list_loss_sets()
    seeds = [int(s) for s in _as_list(raw.get("seeds", [0]), "seeds")]

    comparisons = []
    for cname, comp in (raw.get("comparisons") or {}).items():
        axis = comp.get("axis")
        if axis not in AXES:
            raise ConfigError(f"grid: comparisons.{cname}.axis {axis!r}; valid axes: {', '.join(AXES)}")
        combos = []
        if any(k in comp for k in AXES):
            for d in _as_list(comp.get("data"), f"comparisons.{cname}.data"):
                for p in _as_list(comp.get("preset"), f"comparisons.{cname}.preset"):
                    for lo in _as_list(comp.get("loss", ["default"]), f"comparisons.{cname}.loss"):
                        combos.append((d, p, lo))
        for extra in comp.get("extra") or []:
            combos.append((extra.get("data"), extra.get("preset"), extra.get("loss", "default")))
        cells = []
        for d, p, lo in combos:
            if d not in datasets:
                raise ConfigError(f"grid: comparisons.{cname}: unknown dataset {d!r}; {_names('datasets', names)}")
            trained_on = datasets[d].get("mix", [d])
            for held_out in (ev["data"], *ev["also"]):
                if held_out in trained_on:
                    which = "the evaluation set" if held_out == ev["data"] else "an eval.also set"
                    raise ConfigError(
                        f"grid: comparisons.{cname}: dataset {d!r} trains on {held_out!r}, which is {which}; train on another"
                    )
            if p not in presets:
                raise ConfigError(f"grid: comparisons.{cname}: unknown preset {p!r}; {_names('presets', presets)}")
            loss = preset_info(p)["loss"] if lo == "default" else lo
            if loss not in losses:
                raise ConfigError(
                    f"grid: comparisons.{cname}: unknown loss set {lo!r}; {_names('loss sets', ['default', *losses])}"
                )
            cells += [Cell(d, p, loss, s) for s in seeds]
        if not cells:
            raise ConfigError(f"grid: comparisons.{cname} has no cells")
        comparisons.append(Comparison(cname, axis, cells))
    if not comparisons:
        raise ConfigError("grid: no comparisons")
    for n in (ev["data"], *ev["also"]):  # after the comparisons: a trained-on set is reported as that first
        spec = datasets[n]
        made = spec.get("split") or (default_split(spec["style"]) if "style" in spec else ev["split"])
        if made != ev["split"]:
            how = "holds" if "dir" in spec else "is generated as"
            raise ConfigError(
                f"grid: datasets.{n} {how} split {made!r} but is evaluated on split {ev['split']!r}; "
                f"give it split: {ev['split']}"
            )

    claims = []
    comp_names = [c.name for c in comparisons]
    for i, c in enumerate(raw.get("claims") or []):
        kind = c.get("kind", "better")
        if kind not in CLAIM_KINDS:
            raise ConfigError(f"grid: claims[{i}].kind {kind!r}; valid: {', '.join(CLAIM_KINDS)}")
        for side in ("better", "worse"):
            sel = c.get(side) or {}
            if sel.get("comparison") not in comp_names:
                raise ConfigError(
                    f"grid: claims[{i}].{side}.comparison {sel.get('comparison')!r}; {_names('comparisons', comp_names)}"
                )
            bad = sorted(set(sel) - {"comparison", *AXES})
            if bad:
                raise ConfigError(
                    f"grid: claims[{i}].{side}: unknown key(s) {bad}; valid: comparison, {', '.join(AXES)}"
                )
        claims.append(Claim(str(c.get("text", f"claim {i}")), kind, dict(c["better"]), dict(c["worse"])))
    return Grid(
        name=str(raw.get("name", "study")), scale=scale, seeds=seeds, overrides=dict(raw.get("overrides") or {}),
        eval=ev, datasets=datasets, comparisons=comparisons, claims=claims,
    )  # fmt: skip


def shipped_grids() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files(__package__).joinpath("grids").iterdir()
        if p.name.endswith(".yaml")
    )


def load_grid(name_or_path: str | Path, seeds: list[int] | None = None) -> Grid:
    """A shipped grid by name (``paper-small``, ``paper``) or a YAML file; ``seeds`` replaces the grid's."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"grid file not found: {path}")
        text, source = path.read_text(), path
    else:
        if str(name_or_path) not in shipped_grids():
            raise ConfigError(
                f"unknown study {str(name_or_path)!r}; valid studies: {', '.join(shipped_grids())} (or --grid GRID.yaml)"
            )
        text, source = (
            resources.files(__package__).joinpath("grids", f"{name_or_path}.yaml").read_text(),
            f"study {name_or_path}",
        )
    raw = parse_yaml(text, source)
    if seeds is not None and isinstance(raw, dict):
        raw["seeds"] = list(seeds)
    return parse_grid(raw)
