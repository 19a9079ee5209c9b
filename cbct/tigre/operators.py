"""TIGRE's ``Ax`` and ``Atb`` on cbct's operators, in TIGRE's shapes, units and scaling, for NumPy and CuPy arrays.

Images are ``geo.nVoxel`` = ``(z, y, x)`` in mm⁻¹; projections ``(angles, v, u)`` line integrals with row 0 at the
bottom of the detector, as TIGRE's. Both projection types map to cbct's one projector (ray-driven, trilinear
interpolation along the ray, exact path lengths: Joseph's method).
"""

from __future__ import annotations

import logging

import numpy as np

from cbct.backend import array_module
from cbct.operators import backproject, project
from cbct.tigre.geometry import cone_geometry

__all__ = ["Ax", "Atb"]

log = logging.getLogger("cbct.tigre")

PROJECTION_TYPES = ("interpolated", "Siddon", "ray-voxel")
BACKPROJECTION_TYPES = ("FDK", "matched")


def _check_float32(x, name: str):
    array_module(x)  # a NumPy or CuPy array, else TypeError naming the type
    if x.dtype != np.float32:
        raise TypeError(f"{name}: input data should be float32, not {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"{name} must be 3-D, got shape {tuple(x.shape)}")


def _ignore_tigre_only(kwargs: dict) -> None:
    unknown = set(kwargs) - {"gpuids"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)} (TIGRE's gpuids is accepted and ignored)")
    if kwargs.get("gpuids") is not None:
        log.debug("gpuids ignored: cbct runs on the device that holds the data")


def Ax(img, geo, angles, projection_type: str = "interpolated", **kwargs):  # noqa: N802 (TIGRE's name)
    """Forward projection: ``(len(angles), nv, nu)`` line integrals of ``img`` (float32 ``geo.nVoxel``), on the
    device of ``img``. ``projection_type`` ``"interpolated"``, ``"Siddon"`` or ``"ray-voxel"`` all run cbct's projector."""
    _check_float32(img, "img")
    if projection_type not in PROJECTION_TYPES:
        raise ValueError(f"projection_type must be one of {PROJECTION_TYPES}, got {projection_type!r}")
    _ignore_tigre_only(kwargs)
    geom = cone_geometry(geo, angles)
    if tuple(img.shape) != geom.volume.shape:
        raise ValueError(f"Input data should be of shape geo.nVoxel: {list(geom.volume.shape)} not: {tuple(img.shape)}")
    return project(img, geom)


def Atb(proj, geo, angles, backprojection_type: str = "FDK", **kwargs):  # noqa: N802
    """Backprojection of ``proj`` (float32 ``(len(angles), nv, nu)``) onto ``geo.nVoxel``, on its device.

    ``"FDK"``: voxel-driven with bilinear detector interpolation and TIGRE's FDK weight ``(DSO / depth)**2`` per view;
    ``"matched"``: the exact adjoint of :func:`Ax` (``<Ax, y> = <x, Atb(y, 'matched')>``).
    """
    _check_float32(proj, "proj")
    if backprojection_type not in BACKPROJECTION_TYPES:
        raise ValueError(f"backprojection_type must be one of {BACKPROJECTION_TYPES}, got {backprojection_type!r}")
    _ignore_tigre_only(kwargs)
    geom = cone_geometry(geo, angles)
    if tuple(proj.shape) != geom.projection_shape:
        raise ValueError(f"Expected data shape: {geom.projection_shape} not compatible with: {tuple(proj.shape)}")
    return backproject(proj, geom, "fdk" if backprojection_type == "FDK" else "matched")
