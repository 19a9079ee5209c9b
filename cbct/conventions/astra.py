"""ASTRA's 3D geometries (``vol_geom`` and ``cone_vec``/``cone`` ``proj_geom`` dicts) to and from :class:`ConeGeometry`.

ASTRA's ``cone_vec`` rows are exactly ours (source, detector centre, u = pixel (0,0)→(0,1), v = (0,0)→(1,0)).
ASTRA stores projections as ``(v, view, u)``: ``astra_data = projections.transpose(1, 0, 2)``. Its 3D volume is
``(slice, row, col) = (z, y, x)`` with every axis increasing from ``WindowMin`` to ``WindowMax``, as ours.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid


def to_astra(geom: ConeGeometry) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(vol_geom, proj_geom)`` dicts as ``astra.create_vol_geom`` / ``astra.create_proj_geom('cone_vec', ...)`` make."""
    nz, ny, nx = geom.volume.shape
    half = np.array(geom.volume.size) / 2
    oz, oy, ox = geom.volume.offset
    vol_geom = {
        "GridRowCount": ny,
        "GridColCount": nx,
        "GridSliceCount": nz,
        "option": {
            "WindowMinX": ox - half[2], "WindowMaxX": ox + half[2],
            "WindowMinY": oy - half[1], "WindowMaxY": oy + half[1],
            "WindowMinZ": oz - half[0], "WindowMaxZ": oz + half[0],
        },
    }
    proj_geom = {
        "type": "cone_vec",
        "DetectorRowCount": geom.detector_shape[0],
        "DetectorColCount": geom.detector_shape[1],
        "Vectors": np.array(geom.vectors),
    }
    return vol_geom, proj_geom


def _cone_to_vectors(proj_geom: dict[str, Any]) -> np.ndarray:
    """ASTRA's circular ``cone`` geometry as ``cone_vec`` rows (ASTRA's own formulas)."""
    angles = np.asarray(proj_geom["ProjectionAngles"], dtype=np.float64)
    dso, odd = float(proj_geom["DistanceOriginSource"]), float(proj_geom["DistanceOriginDetector"])
    du, dv = float(proj_geom["DetectorSpacingX"]), float(proj_geom["DetectorSpacingY"])
    s, c, z = np.sin(angles), np.cos(angles), np.zeros_like(angles)
    return np.stack([s * dso, -c * dso, z, -s * odd, c * odd, z, c * du, s * du, z, z, z, z + dv], axis=1)


def from_astra(vol_geom: dict[str, Any], proj_geom: dict[str, Any], angles: np.ndarray | None = None) -> ConeGeometry:
    """A :class:`ConeGeometry` from ASTRA dicts (``cone_vec`` or ``cone``).

    ``angles`` (nominal gantry angles, radians) default to the azimuth of each source position (unwrapped).
    """
    kind = proj_geom.get("type")
    if kind == "cone_vec":
        vectors = np.asarray(proj_geom["Vectors"], dtype=np.float64)
    elif kind == "cone":
        vectors = _cone_to_vectors(proj_geom)
    else:
        raise ValueError(f"proj_geom type must be 'cone_vec' or 'cone', got {kind!r}")
    opt = vol_geom["option"]
    shape = (int(vol_geom["GridSliceCount"]), int(vol_geom["GridRowCount"]), int(vol_geom["GridColCount"]))
    lo = np.array([opt["WindowMinZ"], opt["WindowMinY"], opt["WindowMinX"]], dtype=np.float64)
    hi = np.array([opt["WindowMaxZ"], opt["WindowMaxY"], opt["WindowMaxX"]], dtype=np.float64)
    grid = VolumeGrid(shape, tuple((hi - lo) / np.array(shape)), tuple((hi + lo) / 2))
    if angles is None:
        angles = np.unwrap(np.arctan2(vectors[:, 1], vectors[:, 0]))
    detector = (int(proj_geom["DetectorRowCount"]), int(proj_geom["DetectorColCount"]))
    return ConeGeometry(vectors, detector, grid, np.asarray(angles, dtype=np.float64))
