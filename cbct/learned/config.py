"""Training configurations: defaults, a YAML file over them and ``--set section.key=value`` overrides over that.

The defaults are a nested mapping. A non-empty mapping in the defaults is a closed section: the file and the
overrides may only name its keys (an unknown key is an error that lists the known ones). An empty mapping is an open
section (a network's ``model``, a scan's ``scan``): it is replaced whole and checked by the dataclass that reads it.
"""

from __future__ import annotations

import copy
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

__all__ = ["load_config", "merge_config", "parse_override", "plain_json"]


def plain_json(value: Any) -> Any:
    """``value`` in plain JSON types (tuples as lists, NumPy scalars as numbers, anything else as its string), as
    checkpoints and weights files store configs and provenance (``weights_only`` loads only such types)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def merge_config(base: Mapping[str, Any], over: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``base`` with ``over`` merged into it (a new mapping); unknown keys of closed sections raise ``ValueError``."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if key not in base:
            raise ValueError(f"unknown setting {where}{key!r}; expected one of {sorted(base)}")
        if isinstance(base[key], Mapping) and base[key]:
            if not isinstance(value, Mapping):
                raise ValueError(f"setting {where}{key!r} must be a mapping, got {value!r}")
            out[key] = merge_config(base[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``"section.key=value"`` (value read as YAML) as the nested mapping ``{"section": {"key": value}}``."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"--set expects section.key=value, got {item!r}")
    value: Any = yaml.safe_load(text)
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _read_yaml(path: str | pathlib.Path) -> dict[str, Any]:
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML ({exc})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"the config must be a mapping, got {type(loaded).__name__}")
    return loaded


def load_config(defaults: Mapping[str, Any], path: str | pathlib.Path | None = None,
                overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``defaults``, then the YAML file ``path`` (if any), then each ``section.key=value`` of ``overrides``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a key the defaults do not have (naming the file or the override), a file that is no mapping.
    """
    cfg = copy.deepcopy(dict(defaults))
    if path is not None:
        try:
            cfg = merge_config(cfg, _read_yaml(path))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    for item in overrides:
        try:
            cfg = merge_config(cfg, parse_override(item))
        except ValueError as exc:
            raise ValueError(f"--set {item}: {exc}") from None
    return cfg
