"""TIFF projection stacks with an ASTRA ``cone_vec`` geometry file.

Two layouts:

``walnut``: one orbit folder of the CWI Walnut CBCT data (Der Sarkissian et al., Sci. Data 6, 215, 2019;
doi:10.1038/s41597-019-0235-y), e.g. ``Walnut1/Projections/tubeV2/``: ``scan_000000.tif`` ... ``scan_001200.tif``
(raw counts; the last repeats the first angle and is dropped), ``di000000.tif`` (dark), ``io000000.tif`` and
``io000001.tif`` (flat fields before and after the scan, averaged), ``scan_geom_corrected.geom`` (1201 ``cone_vec``
rows in mm). As in the dataset's reference scripts: images are read out in portrait mode, so each image is flipped
upside down and transposed (972 rows × 768 columns), and view ``k`` of the geometry (row ``k * step``) is image
``1199 - k * step``. The default grid is the scripts' default: 251³ voxels of 0.2 mm about the origin.

``tiff-conevec``: a generic folder: projection images matching ``pattern`` in name order, one per row of the geometry
file, optional dark and flat frames (``dark_pattern``, ``flat_pattern``); images are used as stored (row 0 = detector
row ``v = 0``). Without flat frames give ``kind="line_integrals"``.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.io.errors import FormatError
from cbct.io.geometry_io import angles_from_vectors, grid_from_dict, read_cone_vec
from cbct.scan import Scan

log = logging.getLogger(__name__)

__all__ = ["read_walnut", "read_tiff_conevec", "WALNUT_GEOMETRY_FILES", "default_grid"]

WALNUT_GEOMETRY_FILES = ("scan_geom_corrected.geom", "scan_geom_original.geom")
WALNUT_N_ANGLES = 1200


def _imread(path: pathlib.Path) -> np.ndarray:
    import tifffile

    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        img = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for truncated/corrupt files
        raise FormatError(f"{path}: cannot read TIFF image (truncated or corrupt?): {exc}") from None
    if img.ndim != 2:
        raise FormatError(f"{path}: expected a 2-D grayscale image, got shape {img.shape}")
    return img


def _grid(volume: VolumeGrid | Mapping[str, Any] | None, fallback: VolumeGrid, where: str) -> VolumeGrid:
    if volume is None:
        return fallback
    if isinstance(volume, VolumeGrid):
        return volume
    return grid_from_dict(volume, where)


def default_grid(vectors: np.ndarray, detector_shape: tuple[int, int]) -> VolumeGrid:
    """A grid about the origin covering the detector's field of view: ``nu × nu × nv`` voxels of the pixel size
    divided by the (median) magnification."""
    src, det, u = vectors[:, 0:3], vectors[:, 3:6], vectors[:, 6:9]
    normal = np.cross(u, vectors[:, 9:12])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    dsd = np.abs(np.einsum("ij,ij->i", det - src, normal))
    dso = np.abs(np.einsum("ij,ij->i", -src, normal))
    voxel = float(np.median(np.linalg.norm(u, axis=1) * dso / dsd))
    nv, nu = detector_shape
    return VolumeGrid((nv, nu, nu), voxel)


def _stack(files: Sequence[pathlib.Path], transform, shape: tuple[int, int] | None = None) -> np.ndarray:
    first = transform(_imread(files[0]))
    out = np.empty((len(files), *first.shape), dtype=np.float32)
    out[0] = first
    for i, f in enumerate(files[1:], start=1):
        img = transform(_imread(f))
        if img.shape != first.shape:
            raise FormatError(f"{f}: image shape {img.shape} differs from the first image's {first.shape}")
        out[i] = img
    return out


def _walnut_transform(img: np.ndarray) -> np.ndarray:
    return np.transpose(np.flipud(img))


def read_walnut(
    path: str | os.PathLike,
    *,
    step: int = 1,
    geometry_file: str | None = None,
    volume: VolumeGrid | Mapping[str, Any] | None = None,
    id: str | None = None,
):
    """Read one orbit folder of the Walnut CBCT data as a :class:`cbct.Scan` of raw counts (see module notes).

    Args:
        path: the orbit folder (``.../Projections/tubeV1``).
        step: angular subsampling (every ``step``-th of the 1200 views).
        geometry_file: name of the ``cone_vec`` file in the folder; default the corrected one.
        volume: reconstruction grid (:class:`VolumeGrid` or ``{shape, voxel_size, offset}``).
        id: scan id (default: ``Walnut<n>_<tube>`` from the path).
    """
    folder = pathlib.Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"Walnut scan folder not found: {folder}")
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    names = [geometry_file] if geometry_file else list(WALNUT_GEOMETRY_FILES)
    geom_path = next((folder / n for n in names if (folder / n).is_file()), None)
    if geom_path is None:
        raise FileNotFoundError(f"{folder}: no geometry file ({' or '.join(names)})")
    vectors_all = read_cone_vec(geom_path)
    if vectors_all.shape[0] < WALNUT_N_ANGLES:
        raise FormatError(f"{geom_path}: a Walnut orbit has {WALNUT_N_ANGLES + 1} views, the file has {vectors_all.shape[0]}")
    rows = list(range(0, WALNUT_N_ANGLES, step))
    files = [folder / f"scan_{WALNUT_N_ANGLES - 1 - r:06d}.tif" for r in rows]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: {len(missing)} projection image(s) missing, e.g. {missing[:3]}")
    counts = _stack(files, _walnut_transform)
    dark = _walnut_transform(_imread(folder / "di000000.tif")).astype(np.float32)
    flats = [folder / n for n in ("io000000.tif", "io000001.tif") if (folder / n).is_file()]
    if not flats:
        raise FileNotFoundError(f"{folder}: no flat field (io000000.tif, io000001.tif)")
    flat = np.stack([_walnut_transform(_imread(f)).astype(np.float32) for f in flats])
    vectors = vectors_all[rows]
    det_shape = counts.shape[1:]
    grid = _grid(volume, VolumeGrid(251, 0.2), "volume")
    try:
        geom = ConeGeometry(vectors, det_shape, grid, angles_from_vectors(vectors))
    except ValueError as exc:
        raise FormatError(f"{geom_path}: invalid geometry: {exc}") from None
    parts = folder.parts
    default_id = f"{parts[-3]}_{parts[-1]}" if len(parts) >= 3 and parts[-2] == "Projections" else folder.name
    metadata = {"id": id or default_id, "source_file": str(folder), "format": "walnut",
                "geometry_file": geom_path.name, "angular_step": step}
    return Scan.from_arrays(geom, counts=counts, dark=dark, flat=flat, metadata=metadata)


def read_tiff_conevec(
    path: str | os.PathLike,
    *,
    geometry_file: str = "*.geom",
    pattern: str = "proj*.tif*",
    dark_pattern: str | None = "dark*.tif*",
    flat_pattern: str | None = "flat*.tif*",
    kind: str = "counts",
    volume: VolumeGrid | Mapping[str, Any] | None = None,
    id: str | None = None,
):
    """Read a generic TIFF stack + ``cone_vec`` folder as a :class:`cbct.Scan` (see module notes).

    Args:
        path: the folder.
        geometry_file: file name or glob of the ``cone_vec`` file (exactly one match).
        pattern: glob of the projection images, taken in name order.
        dark_pattern, flat_pattern: globs of dark and flat frames (averaged); ``None`` for none.
        kind: ``"counts"`` (raw, needs flat frames) or ``"line_integrals"``.
        volume: reconstruction grid; default :func:`default_grid`.
        id: scan id (default: the folder name).
    """
    folder = pathlib.Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"TIFF scan folder not found: {folder}")
    if kind not in ("counts", "line_integrals"):
        raise ValueError(f"kind must be 'counts' or 'line_integrals', got {kind!r}")
    geom_files = sorted(folder.glob(geometry_file))
    if len(geom_files) != 1:
        raise FileNotFoundError(f"{folder}: expected one geometry file matching {geometry_file!r}, found "
                                f"{[g.name for g in geom_files]}")
    vectors = read_cone_vec(geom_files[0])
    files = sorted(folder.glob(pattern))
    if not files:
        raise FileNotFoundError(f"{folder}: no projection images match {pattern!r}")
    if len(files) != vectors.shape[0]:
        raise FormatError(f"{folder}: {len(files)} projection images but {vectors.shape[0]} geometry rows in "
                          f"{geom_files[0].name}: projections and geometry do not match")
    data = _stack(files, lambda img: img)
    dark = flat = None
    if dark_pattern:
        dark_files = sorted(folder.glob(dark_pattern))
        dark = _stack(dark_files, lambda img: img) if dark_files else None
    if flat_pattern:
        flat_files = sorted(folder.glob(flat_pattern))
        flat = _stack(flat_files, lambda img: img) if flat_files else None
    det_shape = data.shape[1:]
    grid = _grid(volume, default_grid(vectors, det_shape), "volume")
    geom = ConeGeometry(vectors, det_shape, grid, angles_from_vectors(vectors))
    metadata = {"id": id or folder.name, "source_file": str(folder), "format": "tiff-conevec",
                "geometry_file": geom_files[0].name}
    if kind == "counts":
        if flat is None:
            raise FileNotFoundError(f"{folder}: raw counts need flat frames matching {flat_pattern!r} "
                                    "(or pass kind='line_integrals')")
        return Scan.from_arrays(geom, counts=data, dark=dark, flat=flat, metadata=metadata)
    return Scan.from_arrays(geom, projections=data, metadata=metadata)
