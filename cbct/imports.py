"""Importing what a ``"package.module:function"`` reference names (pipeline stages, command entry points)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["import_function"]


def import_function(ref: str, what: str, hint: str) -> Callable[..., Any]:
    """The function that ``ref`` (``"package.module:function"``) names, imported.

    Raises:
        ImportError: the module cannot be imported (the message names ``what``, the import error and ``hint``,
            what to do about it), or it has no such function.
    """
    module_name, _, func_name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"{what} ({ref}) cannot be imported: {exc}. {hint}") from exc
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ImportError(f"{what}: module {module_name} has no function {func_name!r}")
    return fn
