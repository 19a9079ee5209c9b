"""Readers and writers: scans (projections + geometry) and volumes.

Scans: :func:`read_scan` with formats ``cbct-hdf5`` (this project's scan file, ``docs/scan_format.md``),
``dxchange`` (Data Exchange HDF5, parallel beam), ``walnut`` (CWI Walnut TIFF + ``cone_vec`` layout) and
``tiff-conevec`` (generic TIFF stack + ``cone_vec``).

Volumes: :func:`read_volume` (``hdf5``, ``nifti``, ``dicom`` series, ``metaimage``, ``mat``) and :func:`write_volume`
(``hdf5``, ``nifti``, ``dicom`` series, ``png`` preview). All writers are atomic.
"""

from __future__ import annotations

import importlib
import os
import pathlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from cbct.geometry import VolumeGrid
from cbct.io.errors import FormatError, UnevenSpacingError
from cbct.scan import Scan
from cbct.volume import Volume, as_volume

__all__ = ["read_scan", "write_scan", "detect_scan_format", "read_volume", "write_volume", "detect_volume_format", "Volume",
           "FormatError", "UnevenSpacingError", "SCAN_FORMATS", "VOLUME_READERS", "VOLUME_WRITERS", "output_name"]

SCAN_FORMATS: Mapping[str, str] = MappingProxyType({
    "cbct-hdf5": "cbct.io.hdf5:read_scan",
    "dxchange": "cbct.io.dxchange:read_dxchange",
    "walnut": "cbct.io.tiff:read_walnut",
    "tiff-conevec": "cbct.io.tiff:read_tiff_conevec",
})

VOLUME_READERS: Mapping[str, str] = MappingProxyType({
    "hdf5": "cbct.io.hdf5:read_volume",
    "nifti": "cbct.io.nifti:read_nifti",
    "dicom": "cbct.io.dicom:read_dicom_series",
    "metaimage": "cbct.io.metaimage:read_metaimage",
    "mat": "cbct.io.matlab:read_mat_volume",
})

VOLUME_WRITERS: Mapping[str, str] = MappingProxyType({
    "hdf5": "cbct.io.hdf5:write_volume",
    "nifti": "cbct.io.nifti:write_nifti",
    "dicom": "cbct.io.dicom:write_dicom_series",
    "png": "cbct.io.png:write_png_preview",
})

_OUTPUT_SUFFIX = {"hdf5": ".h5", "nifti": ".nii.gz", "dicom": "_dicom", "png": ".png"}
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".cxi")


def _load(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _choose(kind: str, table: Mapping[str, str], format: str) -> Callable[..., Any]:
    if format not in table:
        raise ValueError(f"unknown {kind} format {format!r}; known: {', '.join(table)}")
    return _load(table[format])


def detect_scan_format(path: str | os.PathLike) -> str:
    """The scan format of ``path`` from its name and content (see :data:`SCAN_FORMATS`)."""
    from cbct.io.tiff import WALNUT_GEOMETRY_FILES

    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"scan not found: {p}")
    if p.is_dir():
        if any((p / n).is_file() for n in WALNUT_GEOMETRY_FILES) and (p / "scan_000000.tif").is_file():
            return "walnut"
        if any(p.glob("*.geom")):
            return "tiff-conevec"
        raise FormatError(f"{p}: folder is neither a Walnut scan nor a TIFF stack with a .geom cone_vec file")
    if p.suffix.lower() in _HDF5_SUFFIXES:
        from cbct.io.hdf5 import SCAN_FORMAT, open_hdf5

        with open_hdf5(p) as f:
            if f.attrs.get("format") == SCAN_FORMAT:
                return "cbct-hdf5"
            if "exchange" in f:
                return "dxchange"
        raise FormatError(f"{p}: HDF5 file is neither a cbct scan (attribute format='{SCAN_FORMAT}') nor Data Exchange (/exchange)")
    raise FormatError(f"{p}: cannot tell the scan format from the name; pass format= one of {', '.join(SCAN_FORMATS)}")


def read_scan(path: str | os.PathLike, format: str | None = None, **options: Any) -> Scan:
    """Read a :class:`cbct.Scan`; ``options`` go to the format's reader (e.g. ``pixel_size`` for ``dxchange``)."""
    fmt = format or detect_scan_format(path)
    reader = _choose("scan", SCAN_FORMATS, fmt)
    try:
        return reader(path, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise TypeError(f"{fmt} reader: {exc}") from None
        raise


def write_scan(scan: Scan, path: str | os.PathLike, *, overwrite: bool = True) -> pathlib.Path:
    """Write ``scan`` in the project's HDF5 scan format (``docs/scan_format.md``), atomically; returns the path."""
    return _load("cbct.io.hdf5:write_scan")(scan, path, overwrite=overwrite)


def detect_volume_format(path: str | os.PathLike, *, for_writing: bool = False) -> str:
    """The volume format of ``path`` from its name (and, for folders, content)."""
    p = pathlib.Path(path)
    name = p.name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    if p.suffix.lower() in _HDF5_SUFFIXES:
        return "hdf5"
    if p.suffix.lower() == ".png":
        return "png"
    if p.suffix.lower() in (".mha", ".mhd"):
        return "metaimage"
    if p.suffix.lower() == ".mat":
        return "mat"
    if p.suffix.lower() == ".dcm" or p.is_dir() or (for_writing and not p.suffix):
        return "dicom"
    raise ValueError(f"cannot tell the volume format of {p}; pass format= one of "
                     f"{', '.join(VOLUME_WRITERS if for_writing else VOLUME_READERS)}")


def read_volume(path: str | os.PathLike, format: str | None = None, **options: Any) -> Volume:
    """Read a :class:`Volume` (``options`` go to the reader, e.g. ``resample=True`` for DICOM)."""
    if not pathlib.Path(path).exists():
        raise FileNotFoundError(f"volume not found: {path}")
    fmt = format or detect_volume_format(path)
    return _choose("volume", VOLUME_READERS, fmt)(path, **options)


def write_volume(volume: Volume | Any, path: str | os.PathLike, format: str | None = None, *,
                 grid: VolumeGrid | None = None, **options: Any) -> pathlib.Path:
    """Write ``volume`` (atomically) as ``format`` (default: from the name: .h5, .nii[.gz], .png, a folder = DICOM).

    ``volume`` is a :class:`Volume`, or a (z, y, x) array (NumPy, CuPy or torch) on ``grid`` (default 1 mm voxels
    centred on the origin; see :func:`cbct.volume.as_volume`). ``options`` go to the format's writer.
    """
    fmt = format or detect_volume_format(path, for_writing=True)
    return _choose("volume", VOLUME_WRITERS, fmt)(as_volume(volume, grid), path, **options)


def output_name(format: str, stem: str = "volume") -> str:
    """The file (or folder) name a volume in ``format`` gets in an output directory."""
    if format not in _OUTPUT_SUFFIX:
        raise ValueError(f"unknown output format {format!r}; known: {', '.join(_OUTPUT_SUFFIX)}")
    return stem + _OUTPUT_SUFFIX[format]
