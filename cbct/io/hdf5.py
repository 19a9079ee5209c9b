"""The project's HDF5 files: scans (``cbct-scan``, see ``docs/scan_format.md``) and volumes (``cbct-volume``)."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from cbct.geometry import VolumeGrid
from cbct.io.atomic import atomic_path
from cbct.io.errors import FormatError
from cbct.io.geometry_io import geometry_from_hdf5, geometry_to_hdf5
from cbct.scan import Scan, ScanError
from cbct.volume import Volume

__all__ = ["SCAN_FORMAT", "SCAN_FORMAT_VERSION", "VOLUME_FORMAT", "write_scan", "read_scan", "write_volume",
           "read_volume", "open_hdf5", "is_cbct_scan"]

SCAN_FORMAT = "cbct-scan"
SCAN_FORMAT_VERSION = 2  # 2 adds the optional /target_angles; files without it are written as version 1
VOLUME_FORMAT = "cbct-volume"
VOLUME_FORMAT_VERSION = 1


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (pathlib.Path,)):
        return str(obj)
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON-serialisable")


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """``metadata`` as JSON (NumPy scalars and arrays become numbers and lists)."""
    return json.dumps(dict(metadata), default=_json_default, sort_keys=True)


def open_hdf5(path: str | os.PathLike):
    """Open an HDF5 file read-only; missing and unreadable (truncated, corrupt) files give clear errors."""
    import h5py

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path}: cannot open as HDF5 (truncated or corrupt file?): {exc}") from None


def is_cbct_scan(path: str | os.PathLike) -> bool:
    with open_hdf5(path) as f:
        return f.attrs.get("format") == SCAN_FORMAT


def _read(dataset, where: str) -> np.ndarray:
    try:
        return dataset[...]
    except (OSError, ValueError, KeyError) as exc:  # truncated data shows up on reading, not on opening
        raise FormatError(f"{where}: cannot read dataset (truncated or corrupt file?): {exc}") from None


def write_scan(scan: Scan, path: str | os.PathLike, *, overwrite: bool = True, compression: str | None = "gzip") -> pathlib.Path:
    """Write a :class:`cbct.Scan` to ``path`` in the ``cbct-scan`` HDF5 format (atomically)."""
    import h5py

    path = pathlib.Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = SCAN_FORMAT
        # version 1 readers would ignore /target_angles: only files that carry them need version 2
        f.attrs["format_version"] = SCAN_FORMAT_VERSION if scan.target_angles is not None else 1
        f.attrs["metadata"] = metadata_json(scan.metadata)
        if scan.target_angles is not None:
            ds = f.create_dataset("target_angles", data=np.asarray(scan.target_angles, dtype=np.float64))
            ds.attrs["units"] = "rad"
        opts = {"compression": compression, "chunks": (1, *scan.geometry.detector_shape)} if compression else {}
        if scan.projections is not None:
            ds = f.create_dataset("projections", data=scan.projections, **opts)
            ds.attrs["units"] = "line integral (dimensionless)"
        else:
            raw = f.create_group("raw")
            raw.create_dataset("counts", data=scan.counts, **opts)
            raw.create_dataset("flat", data=scan.flat)
            if scan.dark is not None:
                raw.create_dataset("dark", data=scan.dark)
        geometry_to_hdf5(f.create_group("geometry"), scan.geometry)
        if scan.reference is not None:
            ref = f.create_dataset("reference/volume", data=np.asarray(scan.reference.data, dtype=np.float32),
                                   compression=compression)
            ref.attrs["units"] = "mm^-1"
            ref.attrs["metadata"] = metadata_json(scan.reference.metadata)
    return path


def read_scan(path: str | os.PathLike, *, id: str | None = None):
    """Read a ``cbct-scan`` HDF5 file into a :class:`cbct.Scan` (``id`` overrides the stored ``metadata["id"]``)."""
    path = pathlib.Path(path)
    with open_hdf5(path) as f:
        fmt = f.attrs.get("format")
        if fmt != SCAN_FORMAT:
            raise FormatError(f"{path}: not a cbct scan file (attribute format={fmt!r}, expected {SCAN_FORMAT!r})")
        version = int(f.attrs.get("format_version", 0))
        if version > SCAN_FORMAT_VERSION:
            raise FormatError(f"{path}: scan format version {version} is newer than this cbct reads ({SCAN_FORMAT_VERSION})")
        try:
            metadata = json.loads(f.attrs.get("metadata", "{}"))
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path}: metadata attribute is not valid JSON: {exc}") from None
        if "geometry" not in f:
            raise FormatError(f"{path}: missing group 'geometry'")
        geom = geometry_from_hdf5(f["geometry"], f"{path}:/geometry")
        arrays: dict[str, Any] = {}
        if "projections" in f:
            arrays["projections"] = _read(f["projections"], f"{path}:/projections")
        elif "raw" in f and "counts" in f["raw"]:
            raw = f["raw"]
            arrays["counts"] = _read(raw["counts"], f"{path}:/raw/counts")
            if "flat" not in raw:
                raise FormatError(f"{path}: raw counts without flat frames (missing dataset /raw/flat)")
            arrays["flat"] = _read(raw["flat"], f"{path}:/raw/flat")
            if "dark" in raw:
                arrays["dark"] = _read(raw["dark"], f"{path}:/raw/dark")
        else:
            raise FormatError(f"{path}: holds neither /projections nor /raw/counts")
        target_angles = None
        if "target_angles" in f:
            target_angles = _read(f["target_angles"], f"{path}:/target_angles")
            if target_angles.ndim != 1 or target_angles.dtype.kind != "f":
                raise FormatError(f"{path}:/target_angles must be a 1-D float array of angles (radians), got "
                                  f"shape {target_angles.shape} dtype {target_angles.dtype}")
        reference = None
        if "reference/volume" in f:
            ds = f["reference/volume"]
            reference = Volume(_read(ds, f"{path}:/reference/volume"), geom.volume,
                               json.loads(ds.attrs.get("metadata", "{}")))
    metadata.setdefault("id", path.stem)
    if id is not None:
        metadata["id"] = id
    metadata.setdefault("source_file", str(path))
    try:
        return Scan.from_arrays(geom, metadata=metadata, reference=reference, target_angles=target_angles, **arrays)
    except ScanError as exc:
        raise ScanError(f"{path}: {exc}") from None


def write_volume(volume: Volume, path: str | os.PathLike, *, overwrite: bool = True, compression: str | None = "gzip") -> pathlib.Path:
    """Write a volume as HDF5: dataset ``/volume`` (z, y, x) float32 with its grid and affine as attributes."""
    import h5py

    path = pathlib.Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = VOLUME_FORMAT
        f.attrs["format_version"] = VOLUME_FORMAT_VERSION
        ds = f.create_dataset("volume", data=np.asarray(volume.data, dtype=np.float32), compression=compression)
        ds.attrs["axes"] = "z, y, x"
        ds.attrs["units"] = str(volume.metadata.get("units", "mm^-1"))
        ds.attrs["voxel_size"] = np.asarray(volume.grid.voxel_size)
        ds.attrs["offset"] = np.asarray(volume.grid.offset)
        ds.attrs["origin"] = np.asarray(volume.origin)
        ds.attrs["index_to_world"] = volume.grid.index_to_world()
        f.attrs["metadata"] = metadata_json(volume.metadata)
    return path


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a volume written by :func:`write_volume`."""
    path = pathlib.Path(path)
    with open_hdf5(path) as f:
        if "volume" not in f:
            raise FormatError(f"{path}: missing dataset /volume (not a cbct volume file)")
        ds = f["volume"]
        data = _read(ds, f"{path}:/volume")
        if data.ndim != 3:
            raise FormatError(f"{path}:/volume must be 3-D (z, y, x), got shape {data.shape}")
        grid = VolumeGrid(data.shape, tuple(ds.attrs.get("voxel_size", (1.0, 1.0, 1.0))),
                          tuple(ds.attrs.get("offset", (0.0, 0.0, 0.0))))
        metadata = json.loads(f.attrs.get("metadata", "{}"))
    return Volume(data.astype(np.float32, copy=False), grid, metadata)
