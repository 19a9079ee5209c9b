"""Input validation shared by the public functions: errors name the argument and what was expected."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cbct.backend import array_module
from cbct.geometry import ConeGeometry

FLOAT_DTYPES = ("float32", "float64")


def check_fields(cls: type, d: object, what: str) -> dict[str, Any]:
    """``d`` as a new dict, after checking that it is a mapping whose keys are all fields of the dataclass ``cls``.

    ``what`` names the keys in the error, e.g. ``"motion estimation keys"``: "unknown motion estimation keys [...];
    expected some of [...]".
    """
    if not isinstance(d, Mapping):
        raise TypeError(f"expected a mapping of {what}, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; expected some of {sorted(names)}")
    return dict(d)


def check_geometry(geom: object, name: str = "geom") -> ConeGeometry:
    if not isinstance(geom, ConeGeometry):
        raise TypeError(f"{name} must be a cbct.ConeGeometry, got {type(geom).__name__}")
    return geom


def check_array(x, name: str, trailing_shape: tuple[int, ...], what: str):
    """Return ``x`` as a C-contiguous float array whose last dimensions equal ``trailing_shape``.

    Leading (batch) dimensions are allowed. Raises ``TypeError`` for a non-float dtype and ``ValueError`` for a
    wrong shape or non-finite values.
    """
    xp = array_module(x)
    if x.dtype.name not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 (or float64), got dtype {x.dtype}")
    n = len(trailing_shape)
    if x.ndim < n or tuple(x.shape[-n:]) != tuple(trailing_shape):
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, trailing_shape))}) ({what}), got {tuple(x.shape)}")
    if not bool(xp.isfinite(x).all()):
        bad = int((~xp.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite values")
    return xp.ascontiguousarray(x)
