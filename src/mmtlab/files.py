"""Config and result files: YAML read with one-line errors (:func:`load_yaml`, :func:`parse_yaml`), and YAML,
JSON or any bytes written atomically (:func:`save_yaml`, :func:`write_json`, :func:`write_atomic`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from .errors import ConfigError


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


def write_atomic(path: str | Path, write: Callable[[IO], Any], mode: str = "wb") -> None:
    """Write ``path`` through ``write(file)`` into ``PATH.tmp``, then rename it into place: a reader sees the old
    file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, mode) as f:
        write(f)
    tmp.replace(path)


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON, atomically (the parent directory is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1) + "\n"), mode="w")


class _Dumper(yaml.SafeDumper):
    """Safe YAML with lists of scalars in flow style (``model.vocab_ids`` holds hundreds of ids)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(x, (list, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass (or dict) as YAML, atomically."""
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    write_atomic(path, lambda f: yaml.dump(data, f, Dumper=_Dumper, sort_keys=False), mode="w")


__all__ = ["parse_yaml", "load_yaml", "write_atomic", "write_json", "save_yaml"]
