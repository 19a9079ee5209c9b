"""Files shipped inside the package (built-in pipelines and manifests, their schemas, the learned stages' weights)
and the YAML reader that loads
them and users' pipeline, manifest and geometry files, with errors that name the file and line."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import yaml

from cbct.schema import SchemaError

__all__ = ["builtin_dir", "load_yaml", "shipped_weights"]


def builtin_dir(kind: str) -> pathlib.Path:
    """The folder of shipped ``pipelines`` or ``manifests`` (``cbct/builtin_<kind>``, a link in a source checkout)."""
    path = pathlib.Path(__file__).resolve().parent / f"builtin_{kind}"
    if not path.is_dir():
        raise FileNotFoundError(f"built-in {kind} folder is missing ({path}); reinstall cbct")
    return path


def shipped_weights(filename: str) -> pathlib.Path:
    """The path of a learned network's weights file shipped in the package (``cbct/models/<filename>``)."""
    return pathlib.Path(__file__).resolve().parent / "models" / filename


def load_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parse a YAML file; a missing file or a syntax error gives an error naming the file (and line)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          f"save the {what} file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SchemaError(f"{path}: not valid YAML{where}: {problem}") from None
