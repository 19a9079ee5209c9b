"""Geometry on disk: ASTRA ``cone_vec`` text files, HDF5 groups and plain dictionaries (YAML/JSON manifests).

cbct's geometry *is* ASTRA's 3D ``cone_vec`` layout (source, detector centre, u, v per view, in mm) in the same world
frame (volume arrays ``(z, y, x)`` with coordinates increasing with the index), so ``cone_vec`` rows are used as they
are. A ``cone_vec`` file carries neither the detector shape nor the volume grid, so both are given separately.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.io.atomic import atomic_path
from cbct.io.errors import FormatError

__all__ = ["read_cone_vec", "write_cone_vec", "geometry_to_hdf5", "geometry_from_hdf5", "geometry_from_dict",
           "geometry_to_dict", "grid_from_dict", "angles_from_vectors"]


def read_cone_vec(path: str | os.PathLike) -> np.ndarray:
    """(n_views, 12) float64 rows of an ASTRA ``cone_vec`` text file (whitespace separated, ``#`` comments)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"geometry file not found: {path}")
    try:
        vec = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=2)
    except ValueError as exc:
        raise FormatError(f"{path}: not a cone_vec geometry file (12 numbers per line): {exc}") from None
    if vec.ndim != 2 or vec.shape[1] != 12 or vec.shape[0] == 0:
        raise FormatError(f"{path}: a cone_vec geometry file has 12 numbers per line (one line per view), got shape {vec.shape}")
    if not np.all(np.isfinite(vec)):
        raise FormatError(f"{path}: cone_vec geometry contains NaN or infinite values")
    return vec


def write_cone_vec(path: str | os.PathLike, geom: ConeGeometry) -> None:
    """Write the geometry's view vectors as an ASTRA ``cone_vec`` text file (atomically)."""
    with atomic_path(path) as tmp:
        np.savetxt(tmp, geom.vectors, fmt="%.10g", header="cone_vec: src(3) det_centre(3) u(3) v(3), mm")


def angles_from_vectors(vectors: np.ndarray) -> np.ndarray:
    """Gantry angles (radians) of the sources about the ``z`` axis, unwrapped (for orbits about ``z``)."""
    src = np.asarray(vectors)[:, 0:3]
    return np.unwrap(np.arctan2(src[:, 1], src[:, 0]))


def geometry_to_hdf5(group, geom: ConeGeometry) -> None:
    """Store ``geom`` in an open h5py group (see ``docs/scan_format.md``)."""
    group.create_dataset("vectors", data=geom.vectors)
    group.create_dataset("angles", data=geom.angles)
    group.attrs["detector_shape"] = np.asarray(geom.detector_shape, dtype=np.int64)
    group.attrs["units"] = "mm, radians"
    group.attrs["layout"] = "cone_vec: src(3) det_centre(3) u(3) v(3)"
    vol = group.create_group("volume")
    vol.attrs["shape"] = np.asarray(geom.volume.shape, dtype=np.int64)
    vol.attrs["voxel_size"] = np.asarray(geom.volume.voxel_size)
    vol.attrs["offset"] = np.asarray(geom.volume.offset)


def _need(group, key: str, where: str, attr: bool = False):
    holder = group.attrs if attr else group
    if key not in holder:
        raise FormatError(f"{where}: missing {'attribute' if attr else 'dataset'} '{key}'")
    return holder[key]


def geometry_from_hdf5(group, where: str) -> ConeGeometry:
    """Read a geometry written by :func:`geometry_to_hdf5`; ``where`` names the file/group in errors."""
    vectors = np.asarray(_need(group, "vectors", where)[...], dtype=np.float64)
    angles = np.asarray(_need(group, "angles", where)[...], dtype=np.float64) if "angles" in group else angles_from_vectors(vectors)
    det = tuple(int(s) for s in _need(group, "detector_shape", where, attr=True))
    vol = _need(group, "volume", where)
    grid = VolumeGrid(
        tuple(int(s) for s in _need(vol, "shape", f"{where}/volume", attr=True)),
        tuple(float(s) for s in _need(vol, "voxel_size", f"{where}/volume", attr=True)),
        tuple(float(s) for s in vol.attrs.get("offset", (0.0, 0.0, 0.0))),
    )
    try:
        return ConeGeometry(vectors, det, grid, angles)
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{where}: invalid geometry: {exc}") from None


def grid_from_dict(d: Mapping[str, Any], where: str) -> VolumeGrid:
    """A :class:`VolumeGrid` from ``{shape, voxel_size, offset}`` (numbers or (z, y, x) lists)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a mapping with shape, voxel_size and offset, got {type(d).__name__}")
    unknown = set(d) - {"shape", "voxel_size", "offset"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} (expected shape, voxel_size, offset)")
    if "shape" not in d:
        raise ValueError(f"{where}.shape: required")
    try:
        return VolumeGrid(d["shape"], d.get("voxel_size", 1.0), d.get("offset", (0.0, 0.0, 0.0)))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from None


_CIRCULAR_KEYS = {"dso", "dsd", "detector_shape", "detector_pixel_size", "volume_shape", "voxel_size", "n_views",
                  "angles_deg", "arc_deg", "start_angle_deg", "detector_offset", "volume_offset"}


def geometry_from_dict(d: Mapping[str, Any], where: str, base_dir: pathlib.Path | None = None) -> ConeGeometry:
    """A geometry from a manifest mapping.

    Two forms (``type`` selects):

    - ``circular``: TIGRE-style parameters ``dso, dsd, detector_shape [nv, nu], detector_pixel_size,
      volume_shape, voxel_size`` and ``n_views`` (with optional ``arc_deg``, ``start_angle_deg``) or ``angles_deg``;
      optional ``detector_offset [v, u]`` and ``volume_offset [z, y, x]`` in mm.
    - ``cone_vec``: ``vectors_file`` (ASTRA text file, relative to ``base_dir``) or ``vectors`` (list of 12-number
      rows), ``detector_shape [nv, nu]``, ``volume {shape, voxel_size, offset}`` and optional ``angles_deg``.

    Errors name the field (``where`` is its location, e.g. ``scans[1].geometry``).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    kind = d.get("type")
    if kind == "circular":
        unknown = set(d) - _CIRCULAR_KEYS - {"type"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} for a circular geometry "
                             f"(accepted: {sorted(_CIRCULAR_KEYS)})")
        for key in ("dso", "dsd", "detector_shape", "detector_pixel_size", "volume_shape", "voxel_size"):
            if key not in d:
                raise ValueError(f"{where}.{key}: required for a circular geometry")
        if ("n_views" in d) == ("angles_deg" in d):
            raise ValueError(f"{where}: give exactly one of n_views and angles_deg")
        kwargs: dict[str, Any] = dict(
            dso=float(d["dso"]), dsd=float(d["dsd"]), detector_shape=tuple(d["detector_shape"]),
            detector_pixel_size=d["detector_pixel_size"], volume_shape=d["volume_shape"], voxel_size=d["voxel_size"],
            detector_offset=tuple(d.get("detector_offset", (0.0, 0.0))),
            volume_offset=tuple(d.get("volume_offset", (0.0, 0.0, 0.0))),
        )
        if "n_views" in d:
            kwargs.update(n_views=int(d["n_views"]), arc=np.radians(float(d.get("arc_deg", 360.0))),
                          start_angle=np.radians(float(d.get("start_angle_deg", 0.0))))
        else:
            kwargs.update(angles=np.radians(np.asarray(d["angles_deg"], dtype=np.float64)))
        try:
            return ConeGeometry.circular(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    if kind == "cone_vec":
        allowed = {"type", "vectors_file", "vectors", "detector_shape", "volume", "angles_deg"}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} for a cone_vec geometry (accepted: {sorted(allowed)})")
        if ("vectors_file" in d) == ("vectors" in d):
            raise ValueError(f"{where}: give exactly one of vectors_file and vectors")
        if "vectors_file" in d:
            path = pathlib.Path(d["vectors_file"])
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            vectors = read_cone_vec(path)
        else:
            vectors = np.asarray(d["vectors"], dtype=np.float64)
        for key in ("detector_shape", "volume"):
            if key not in d:
                raise ValueError(f"{where}.{key}: required for a cone_vec geometry")
        grid = grid_from_dict(d["volume"], f"{where}.volume")
        angles = np.radians(np.asarray(d["angles_deg"], np.float64)) if "angles_deg" in d else angles_from_vectors(vectors)
        try:
            return ConeGeometry(vectors, tuple(d["detector_shape"]), grid, angles)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    raise ValueError(f"{where}.type: must be 'circular' or 'cone_vec', got {kind!r}")


def geometry_to_dict(geom: ConeGeometry) -> dict[str, Any]:
    """A JSON/YAML-serialisable ``cone_vec`` mapping that :func:`geometry_from_dict` reads back (angles to rounding)."""
    return {
        "type": "cone_vec",
        "vectors": geom.vectors.tolist(),
        "detector_shape": list(geom.detector_shape),
        "volume": {"shape": list(geom.volume.shape), "voxel_size": list(geom.volume.voxel_size),
                   "offset": list(geom.volume.offset)},
        "angles_deg": np.degrees(geom.angles).tolist(),
    }
