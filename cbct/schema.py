"""A small JSON-Schema validator (the subset the pipeline and manifest schemas use) whose errors name the field.

Supported keywords: ``type`` (one or a list), ``required``, ``properties``, ``additionalProperties`` (bool or schema),
``enum``, ``items``, ``minItems``, ``maxItems``, ``minimum``, ``exclusiveMinimum``, ``maximum``, ``pattern``,
``minLength``; ``description``, ``title``, ``$schema``, ``$comment``, ``default`` and ``examples`` are ignored.
Messages look like ``fdk.yaml: stages[1].params.cutoff: expected a number, got 'high' (str)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["SchemaError", "validate", "join_path"]

_IGNORED = {"description", "title", "$schema", "$comment", "default", "examples", "$id"}
_KNOWN = {"type", "required", "properties", "additionalProperties", "enum", "items", "minItems", "maxItems", "minimum",
          "exclusiveMinimum", "maximum", "pattern", "minLength"} | _IGNORED

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "number": "a number",
               "integer": "an integer", "boolean": "true or false", "null": "null"}


class SchemaError(ValueError):
    """A document does not match its schema; ``field`` is the dotted path of the offending entry."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, Mapping)
    if kind == "array":
        return isinstance(value, (list, tuple))
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "null":
        return value is None
    raise ValueError(f"schema uses unknown type {kind!r}")


def _show(value: Any) -> str:
    text = repr(value)
    return (text[:60] + "...") if len(text) > 60 else text


def validate(instance: Any, schema: Mapping[str, Any], where: str = "", path: str = "") -> None:
    """Raise :class:`SchemaError` naming ``where`` (e.g. the file) and the field path at the first mismatch."""

    def fail(msg: str, at: str = path) -> None:
        prefix = f"{where}: " if where else ""
        raise SchemaError(f"{prefix}{at or '(top level)'}: {msg}", at)

    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"schema keyword(s) not supported by cbct's validator: {sorted(unknown)}")
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(instance, k) for k in kinds):
            expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
            fail(f"expected {expected}, got {_show(instance)} ({type(instance).__name__})")
    if "enum" in schema and instance not in schema["enum"]:
        fail(f"must be one of {', '.join(map(repr, schema['enum']))}, got {_show(instance)}")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            fail(f"must be >= {schema['minimum']}, got {instance}")
        if "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]:
            fail(f"must be > {schema['exclusiveMinimum']}, got {instance}")
        if "maximum" in schema and instance > schema["maximum"]:
            fail(f"must be <= {schema['maximum']}, got {instance}")
    if isinstance(instance, str):
        if "minLength" in schema and len(instance) < schema["minLength"]:
            fail(f"must have at least {schema['minLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            fail(f"{_show(instance)} does not match the pattern {schema['pattern']}")
    if isinstance(instance, Mapping):
        for key in schema.get("required", ()):
            if key not in instance:
                fail("required field missing", join_path(path, key))
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            sub = join_path(path, str(key))
            if key in props:
                validate(value, props[key], where, sub)
            elif extra is False:
                allowed = ", ".join(props) or "none"
                fail(f"unknown field (allowed here: {allowed})", sub)
            elif isinstance(extra, Mapping):
                validate(value, extra, where, sub)
    if isinstance(instance, (list, tuple)):
        if "minItems" in schema and len(instance) < schema["minItems"]:
            fail(f"needs at least {schema['minItems']} entries, got {len(instance)}")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            fail(f"takes at most {schema['maxItems']} entries, got {len(instance)}")
        if "items" in schema:
            for i, item in enumerate(instance):
                validate(item, schema["items"], where, join_path(path, i))
