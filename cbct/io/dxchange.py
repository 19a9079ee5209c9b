"""Data Exchange HDF5 (APS/tomopy layout), e.g. tomopy's ``tooth.h5``: a **parallel-beam** scan of raw counts.

Layout read: ``/exchange/data`` (n_views, rows, columns) raw counts, ``/exchange/data_white`` and
``/exchange/data_dark`` (n, rows, columns) flat and dark frames, ``/exchange/theta`` (n_views,) angles in degrees.

cbct has one geometry type, the cone beam, so a parallel beam is represented as its limit: a source at
``distance`` (default 10⁶ mm) from the rotation axis and the detector ``100 mm`` behind the axis. Rays then diverge by
less than ``half detector width / 10⁶`` radians (below 10⁻⁵ for a 10 mm detector): numerically parallel. The pixel
size is not stored in the file; ``pixel_size`` (mm) sets it (``tooth.h5``: 0.025 mm assumed, documented in
``data_manifests/shared_data.yaml``). It scales the reconstructed attenuation (mm⁻¹) but not the image.

The rotation axis rarely projects onto the detector centre. ``center`` gives its detector column (0 = first column
centre); ``None`` estimates it from the data: in a parallel beam the centre of mass of each projection follows
``c + a cos(theta) + b sin(theta)`` (the projection of the object's centre of mass), a linear least-squares fit.
The detector is then shifted so that column ``center`` lies on the axis.
"""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np

from cbct.geometry import ConeGeometry
from cbct.io.errors import FormatError
from cbct.io.hdf5 import _read, open_hdf5
from cbct.preprocess import counts_to_line_integrals
from cbct.scan import Scan

log = logging.getLogger(__name__)

__all__ = ["read_dxchange", "estimate_rotation_center", "PARALLEL_SOURCE_DISTANCE", "DEFAULT_PIXEL_SIZE"]

PARALLEL_SOURCE_DISTANCE = 1.0e6  # mm: a parallel beam as a cone beam with a very distant source
DETECTOR_BEHIND_AXIS = 100.0  # mm
DEFAULT_PIXEL_SIZE = 0.025  # mm, used when the file does not say


def estimate_rotation_center(line_integrals: np.ndarray, theta: np.ndarray) -> float:
    """Detector column of the rotation axis of a parallel-beam scan (see the module notes).

    Args:
        line_integrals: (n_views, rows, columns) after dark/flat and ``-log``.
        theta: (n_views,) angles in radians.
    """
    profile = np.clip(line_integrals.sum(axis=1), 0.0, None)  # (views, columns); negative noise would bias the mass
    mass = profile.sum(axis=1)
    good = mass > 0.05 * np.median(mass)
    if good.sum() < 3:
        raise ValueError("cannot estimate the rotation centre: the projections are (nearly) empty")
    com = (profile * np.arange(profile.shape[1])).sum(axis=1)[good] / mass[good]
    design = np.stack([np.ones(good.sum()), np.cos(theta[good]), np.sin(theta[good])], axis=1)
    coef, *_ = np.linalg.lstsq(design, com, rcond=None)
    return float(coef[0])


def read_dxchange(
    path: str | os.PathLike,
    *,
    pixel_size: float = DEFAULT_PIXEL_SIZE,
    center: float | None = None,
    source_distance: float = PARALLEL_SOURCE_DISTANCE,
    volume_shape: tuple[int, int, int] | None = None,
    voxel_size: float | None = None,
    id: str | None = None,
):
    """Read a Data Exchange file as a :class:`cbct.Scan` of raw counts with a (near-)parallel cone geometry.

    Args:
        path: the ``.h5`` file.
        pixel_size: detector pixel pitch in mm (square pixels).
        center: detector column of the rotation axis; ``None`` estimates it.
        source_distance: source to rotation axis distance in mm (large: parallel beam).
        volume_shape: reconstruction grid ``(nz, ny, nx)``; default ``(rows, columns, columns)``.
        voxel_size: reconstruction voxel size in mm; default the pixel size (no magnification).
        id: scan id (default: the file stem).
    """
    path = pathlib.Path(path)
    if pixel_size <= 0:
        raise ValueError(f"pixel_size must be positive, got {pixel_size}")
    with open_hdf5(path) as f:
        if "exchange" not in f:
            raise FormatError(f"{path}: not a Data Exchange file (no /exchange group)")
        ex = f["exchange"]
        for key in ("data", "data_white", "theta"):
            if key not in ex:
                raise FormatError(f"{path}: Data Exchange file lacks /exchange/{key}")
        counts = _read(ex["data"], f"{path}:/exchange/data")
        flat = _read(ex["data_white"], f"{path}:/exchange/data_white")
        dark = _read(ex["data_dark"], f"{path}:/exchange/data_dark") if "data_dark" in ex else None
        theta_deg = np.asarray(_read(ex["theta"], f"{path}:/exchange/theta"), dtype=np.float64).reshape(-1)
        title = ex["title"][()] if "title" in ex else None
    if counts.ndim != 3:
        raise FormatError(f"{path}:/exchange/data must be (n_views, rows, columns), got shape {counts.shape}")
    n_views, rows, cols = counts.shape
    if theta_deg.shape != (n_views,):
        raise FormatError(f"{path}:/exchange/theta has {theta_deg.size} angles for {n_views} projections")
    theta = np.radians(theta_deg)
    if center is None:
        center = estimate_rotation_center(counts_to_line_integrals(counts, dark=dark, flat=flat), theta)
        log.info("%s: estimated rotation centre at detector column %.2f (of %d)", path.name, center, cols)
    if not 0 < center < cols - 1:
        raise ValueError(f"rotation centre {center} lies outside the detector (columns 0 to {cols - 1})")
    voxel = float(pixel_size if voxel_size is None else voxel_size)
    shape = (rows, cols, cols) if volume_shape is None else tuple(volume_shape)
    # the detector centre sits (cols-1)/2 - center pixels from the axis along u
    offset_u = ((cols - 1) / 2 - center) * pixel_size
    dsd = source_distance + DETECTOR_BEHIND_AXIS
    mag = dsd / source_distance
    geom = ConeGeometry.circular(
        dso=source_distance, dsd=dsd, detector_shape=(rows, cols), detector_pixel_size=pixel_size * mag,
        volume_shape=shape, voxel_size=voxel, angles=theta, detector_offset=(0.0, offset_u * mag),
    )
    if isinstance(title, bytes):
        title = title.decode(errors="replace")
    metadata = {
        "id": id or path.stem,
        "source_file": str(path),
        "format": "dxchange",
        "beam": "parallel",
        "parallel_as_cone": {"source_distance_mm": source_distance, "detector_behind_axis_mm": DETECTOR_BEHIND_AXIS},
        "pixel_size_mm": pixel_size,
        "rotation_center_column": float(center),
        "title": None if title is None else str(title),
    }
    return Scan.from_arrays(geom, counts=counts, dark=dark, flat=flat, metadata=metadata)
