"""Baselines for sparse-view CBCT: linear interpolation of the missing views along the gantry angle.

(The other baseline, FDK of the sparse views themselves, is plain :func:`cbct.fdk` on the sparse geometry: its
angular weights come from ``geom.angles``.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cbct._checks import check_array, check_geometry
from cbct.backend import array_module
from cbct.angles import CompletionPlan, plan_completion
from cbct.geometry import ConeGeometry
from cbct.signatures import borrow_keywords

__all__ = ["linear_completion", "interpolate_linear"]


def interpolate_linear(projections, plan: CompletionPlan):
    """Dense projections ``(1 - t) p[prev] + t p[next]`` for every view of ``plan`` (acquired views copied).

    Args:
        projections: (n_acquired, nv, nu) float32 (NumPy or CuPy) of the sparse scan the plan was made for.
        plan: from :func:`cbct.angles.plan_completion`.

    Returns:
        (n_dense, nv, nu) array on the device of ``projections``.
    """
    xp = array_module(projections)
    t = xp.asarray(plan.t, dtype=projections.dtype)[:, None, None]
    prev = xp.asarray(plan.prev)
    nxt = xp.asarray(plan.next)
    out = (1 - t) * projections[prev] + t * projections[nxt]
    acq = np.flatnonzero(plan.acquired)
    out[xp.asarray(acq)] = projections[xp.asarray(plan.prev[acq])]
    return out


@borrow_keywords(plan_completion)
def linear_completion(projections, geom: ConeGeometry, **plan_options: Any) -> tuple[np.ndarray, ConeGeometry]:
    """Complete a sparse scan by linear interpolation of neighbouring views along the angle.

    Args:
        projections: (n_views, nv, nu) float32 sparse projections (NumPy or CuPy).
        geom: their geometry.
        factor, angles, target: the dense views wanted (exactly one), see :func:`plan_completion`.
        full_circle: wrap-around between the last and the first view; ``None`` detects it.

    Returns:
        ``(dense_projections, dense_geometry)``.
    """
    geom = check_geometry(geom)
    projections = check_array(projections, "projections", geom.projection_shape, "the projection shape of the geometry")
    if projections.ndim != 3:
        raise ValueError(f"projections must be one scan (n_views, nv, nu), got shape {tuple(projections.shape)}")
    plan = plan_completion(geom, **plan_options)
    return interpolate_linear(projections, plan), plan.geometry
