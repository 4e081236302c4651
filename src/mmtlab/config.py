"""Typed configuration: dataclasses, YAML presets and ``key=value`` overrides.

A run is described by a :class:`RunConfig` with one section per concern (``model``, ``loss``, ``train``,
``data``). Every section is a dataclass; values coming from YAML or the command line are checked against
the field types, and an unknown key or a wrong type raises :class:`ConfigError` naming the key and listing
the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import MmtlabError

LAYER_CODES = "MCLIU"
UNK_ID = 100  # [UNK] in bert-base-uncased: the row of every word piece outside model.vocab_ids
CROSS_CODES = "MCLI"  # codes in which at least one stream sees the other


class ConfigError(MmtlabError, ValueError):
    """A configuration key or value is invalid. The message names the key and the valid choices."""


# ---------------------------------------------------------------------------------------------------
# The model section (the other sections live next to the code that uses them)
# ---------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Architecture of one multimodal transformer (docs/design.md, "The model")."""

    schedule: str = "MMMMMM"  # one layer code per layer: M C L I U
    shared: bool = False  # single stream: one set of layer weights for text and image
    width: int = 768
    heads: int = 12
    ffn: int = 3072
    feat_dim: int = 2048  # region feature width
    box_dim: int = 5  # x1, y1, x2, y2, area
    vocab_size: int = 30522  # bert-base-uncased WordPiece
    # The word-piece ids with their own embedding row and MLM output, sorted (None: every id below vocab_size);
    # any other id reads the [UNK] row. Written by the trainer with data.vocab=train.
    vocab_ids: list[int] | None = None
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attn_dropout: float = 0.1
    n_region_classes: int = 1601  # detector classes for MRM (VG: 1600 + background)
    proj_dim: int = 256  # contrastive / dual-encoder embedding width
    hloss: bool = False  # an ITM head after every layer (read it as .itm_every_layer; the key is the paper's tag)
    text_init: str | None = None  # local Hugging Face BERT directory for the text stream
    image_input: str = "regions"  # "regions" (features + boxes) or "pixels" (ViLT-style patches)
    image_size: int = 64  # pixel path: input resolution
    patch_size: int = 8  # pixel path: patch side
    ln_eps: float = 1e-12
    init_std: float = 0.02  # std of the normal init of every weight matrix and embedding (BERT's 0.02)
    norm_first: bool = False  # pre-LN layers (LayerNorm before attention and FFN, one more at the top); BERT is post-LN

    def __post_init__(self) -> None:
        self.schedule = str(self.schedule).upper()
        if not self.schedule:
            raise ConfigError("model.schedule: empty; give one layer code per layer, e.g. 'MMMMMM'")
        bad = sorted(set(self.schedule) - set(LAYER_CODES))
        if bad:
            raise ConfigError(
                f"model.schedule: unknown layer code(s) {bad} in {self.schedule!r}; valid codes: "
                + ", ".join(LAYER_CODES)
            )
        for name in ("width", "heads", "ffn", "feat_dim", "vocab_size", "max_positions", "proj_dim", "init_std"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}: must be positive, got {getattr(self, name)}")
        if self.vocab_ids is not None:
            ids = self.vocab_ids
            if ids != sorted(set(ids)) or not ids or ids[0] < 0 or ids[-1] >= self.vocab_size or UNK_ID not in ids:
                raise ConfigError(
                    f"model.vocab_ids: give sorted, distinct word-piece ids in [0, {self.vocab_size}) that include "
                    f"[UNK] ({UNK_ID}); got {len(ids)} ids"
                )
        if self.width % self.heads:
            raise ConfigError(f"model.width={self.width} is not divisible by model.heads={self.heads}")
        if self.image_input not in ("regions", "pixels"):
            raise ConfigError(f"model.image_input: {self.image_input!r}; valid: 'regions', 'pixels'")
        if self.norm_first and self.text_init:
            raise ConfigError(
                "model.norm_first=true with model.text_init: BERT checkpoints are post-LN; drop one of them"
            )
        if self.image_input == "pixels" and self.image_size % self.patch_size:
            raise ConfigError(f"model.image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")

    @property
    def n_words(self) -> int:
        """Rows of the word embeddings and outputs of the MLM head."""
        return self.vocab_size if self.vocab_ids is None else len(self.vocab_ids)

    @property
    def layers(self) -> int:
        return len(self.schedule)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def n_unimodal_prefix(self) -> int:
        """Number of leading layers in which neither stream sees the other (``U`` codes)."""
        for i, code in enumerate(self.schedule):
            if code != "U":
                return i
        return len(self.schedule)

    @property
    def is_dual(self) -> bool:
        """True when no layer mixes the modalities (all ``U``): a dual encoder."""
        return self.n_unimodal_prefix == len(self.schedule)

    @property
    def itm_every_layer(self) -> bool:
        """An ITM head after every layer, the ITM loss averaged over them (the paper's "hloss" release; the
        config key stays ``model.hloss``)."""
        return self.hloss


# ---------------------------------------------------------------------------------------------------
# Generic dataclass <-> dict machinery
# ---------------------------------------------------------------------------------------------------


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to type ``tp`` or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: cannot interpret {value!r} as {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (dict, Mapping) or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): (_coerce(f"{key}.{k}", v, vt) if vt is not Any else v) for k, v in value.items()}
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        et = args[0] if args else Any
        out = [(_coerce(f"{key}[{i}]", v, et) if et is not Any else v) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple or tp is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{key}: expected a bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an int, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                pass
            else:
                if f.is_integer():
                    return int(f)
        raise ConfigError(f"{key}: expected an int, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a float, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a float, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types. Keys in the class's ``RETIRED_KEYS``
    (removed fields that files written by an older mmtlab still hold) are ignored."""
    types_ = _field_types(cls)
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{prefix or cls.__name__}: expected a mapping of keys to values, got {type(values).__name__}"
        )
    kwargs = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k in getattr(cls, "RETIRED_KEYS", ()):
            continue
        if k not in types_:
            raise ConfigError(
                f"unknown key {key!r}; valid keys{' of ' + prefix if prefix else ''}: {', '.join(types_)}"
            )
        kwargs[k] = _coerce(key, v, types_[k])
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain (YAML/JSON-serialisable) dict of a dataclass, recursively."""
    return dataclasses.asdict(obj)


def replace(obj: Any, prefix: str = "", **changes: Any) -> Any:
    """Like :func:`dataclasses.replace`, but with checked keys and coerced types."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    values.update(changes)
    return from_dict(type(obj), values, prefix)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Parse ``["model.width=256", "train.lr=1e-4"]`` into a dict; a malformed item is a ConfigError."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. model.width=256)")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"override {item!r} has an empty key")
        out[k] = v
    return out


def apply_overrides(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """Return a copy of dataclass ``cfg`` with dotted-key overrides applied (``{"model.width": "256"}``)."""
    tree = to_dict(cfg)
    types_root = type(cfg)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node, cls = tree, types_root
        for i, part in enumerate(parts):
            ftypes = _field_types(cls)
            here = ".".join(parts[: i + 1])
            if part not in ftypes:
                parent = ".".join(parts[:i])
                valid = ", ".join((f"{parent}.{n}" if parent else n) for n in ftypes)
                raise ConfigError(f"unknown key {here!r}; valid keys: {valid}")
            tp = ftypes[part]
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise ConfigError(
                        f"{here!r} is a section; set one of its keys, e.g. {here}.{next(iter(_field_types(tp)))}=..."
                    )
                node[part] = _coerce(dotted, value, tp)
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"{here!r} is a value, not a section, in {dotted!r}")
                node, cls = node[part], tp
    return from_dict(types_root, tree)


def parse_yaml(text: str, source: str | Path) -> Any:
    """The YAML document ``text`` read from ``source``; a syntax error or a refused tag is a one-line
    :class:`ConfigError` naming ``source`` and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ConfigError(f"{source}:{where} not valid YAML ({problem}); fix or replace the file") from None


def load_yaml(path: str | Path) -> Any:
    """The YAML file ``path`` (see :func:`parse_yaml`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    return parse_yaml(text, path)


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON, atomically (the parent directory is created)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


class _Dumper(yaml.SafeDumper):
    """Safe YAML with lists of scalars in flow style (``model.vocab_ids`` holds hundreds of ids)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(x, (list, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass (or dict) as YAML, atomically."""
    path = Path(path)
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        yaml.dump(data, f, Dumper=_Dumper, sort_keys=False)
    tmp.replace(path)


__all__ = [
    "ConfigError",
    "LAYER_CODES",
    "CROSS_CODES",
    "ModelConfig",
    "from_dict",
    "to_dict",
    "replace",
    "parse_overrides",
    "apply_overrides",
    "load_yaml",
    "parse_yaml",
    "save_yaml",
]
