"""Typed dataclasses from plain values: :func:`from_dict` (YAML mappings), :func:`apply_overrides` (dotted
``key=value`` strings from the command line, parsed by :func:`parse_overrides`). Every value is checked against
the field's type and coerced (``"256"`` -> 256, ``"true"`` -> True, ``"a,b"`` -> a list); an unknown key or a
wrong type is a :class:`~mmtlab.errors.ConfigError` naming the key and the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml

from .errors import ConfigError


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


__all__ = ["from_dict", "to_dict", "replace", "parse_overrides", "apply_overrides"]
