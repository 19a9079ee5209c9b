"""DICOM CT series: read one as an input volume, write a volume as one.

Frames. cbct's world frame ``(x, y, z)`` in mm is identified with DICOM's patient frame (LPS: x to the patient's
left, y to posterior, z to superior), so a volume ``(z, y, x)`` is a stack of axial slices with
``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]`` (rows run along +x, columns along +y), slice ``k`` at
``ImagePositionPatient`` = world position of voxel ``(k, 0, 0)``, ``PixelSpacing = [dy, dx]`` and
``SliceThickness = SpacingBetweenSlices = dz``.

Units. Volumes are linear attenuation in mm⁻¹; DICOM CT stores Hounsfield units
``HU = 1000 (mu - mu_water) / mu_water`` with ``mu_water = 0.02 mm⁻¹`` by default (water near 70 keV, the value the
Shepp–Logan phantom uses for density 1). Stored values are int16 with ``HU = RescaleSlope * stored + RescaleIntercept``
(slope 1, intercept 0 unless the range needs a larger slope), i.e. a resolution of ``mu_water / 1000`` mm⁻¹.

Reading. Files in a folder (or a list of files) are grouped by ``SeriesInstanceUID``, sorted by position along the
slice normal, and checked: one orientation, one pixel grid, no duplicate positions, and even slice spacing
(within ``spacing_tolerance``, relative). Uneven spacing raises :class:`~cbct.io.errors.UnevenSpacingError` naming the
gaps, unless ``resample=True`` interpolates the slices linearly onto an even grid with the median spacing.
Orientations that are signed permutations of the axes are reoriented to ``(z, y, x)``; oblique series are refused.
"""

from __future__ import annotations

import datetime
import logging
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from cbct.constants import MU_WATER
from cbct.geometry import VolumeGrid
from cbct.io.atomic import atomic_directory
from cbct.io.errors import FormatError, UnevenSpacingError
from cbct.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["read_dicom_series", "write_dicom_series", "MU_WATER", "mu_to_hu", "hu_to_mu"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def mu_to_hu(mu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    return 1000.0 * (np.asarray(mu, np.float64) - mu_water) / mu_water


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    return mu_water * (1.0 + np.asarray(hu, np.float64) / 1000.0)


# ---------------------------------------------------------------------------------------------------- reading
def _collect(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    if isinstance(path, (str, os.PathLike)):
        p = pathlib.Path(path)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.name.upper() != "DICOMDIR" and not f.name.startswith("."))
        elif p.is_file():
            files = [p]
        else:
            raise FileNotFoundError(f"DICOM series not found: {p}")
    else:
        files = [pathlib.Path(f) for f in path]
    if not files:
        raise FileNotFoundError(f"no files in DICOM series folder {path}")
    return files


def _axis_map(directions: np.ndarray, where: str) -> list[tuple[int, float]]:
    """For array axes with world ``directions`` (3, 3): (world axis, sign) of each; refuses oblique ones."""
    out = []
    for d in directions:
        axis = int(np.argmax(np.abs(d)))
        if abs(abs(d[axis]) - 1.0) > 1e-3:
            raise FormatError(f"{where}: oblique slice orientation {np.round(directions, 4).tolist()} is not supported "
                              "(reslice the series onto the patient axes first)")
        out.append((axis, float(np.sign(d[axis]))))
    if sorted(a for a, _ in out) != [0, 1, 2]:
        raise FormatError(f"{where}: degenerate orientation {directions.tolist()}")
    return out


def read_dicom_series(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    series_uid: str | None = None,
    resample: bool = False,
    spacing_tolerance: float = 0.01,
    units: str = "mu",
    mu_water: float = MU_WATER,
) -> Volume:
    """Read a DICOM CT series as a :class:`Volume` (see the module notes for frames, units and checks).

    Args:
        path: folder of slice files, one file, or a list of files.
        series_uid: pick this series when the folder holds several.
        resample: interpolate unevenly spaced slices onto an even grid instead of raising.
        spacing_tolerance: relative spacing deviation accepted as even.
        units: ``"mu"`` (mm⁻¹, from HU with ``mu_water``; negative values clipped to 0) or ``"hu"``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if units not in ("mu", "hu"):
        raise ValueError(f"units must be 'mu' or 'hu', got {units!r}")
    where = str(path) if isinstance(path, (str, os.PathLike)) else f"{len(path)} DICOM files"
    slices = []
    for f in _collect(path):
        try:
            ds = pydicom.dcmread(f)
        except InvalidDicomError:
            log.debug("skipping non-DICOM file %s", f)
            continue
        except Exception as exc:
            raise FormatError(f"{f}: cannot read DICOM file (truncated or corrupt?): {exc}") from None
        if "PixelData" not in ds or "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            log.debug("skipping %s: no image or no position/orientation", f)
            continue
        slices.append((f, ds))
    if not slices:
        raise FormatError(f"{where}: no DICOM image slices with position and orientation found")
    series: dict[str, list] = {}
    for f, ds in slices:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    if series_uid is not None:
        if series_uid not in series:
            raise FormatError(f"{where}: no series {series_uid!r}; found {sorted(series)}")
        slices = series[series_uid]
    elif len(series) > 1:
        listing = ", ".join(f"{uid} ({len(s)} slices, {s[0][1].get('SeriesDescription', '')!r})" for uid, s in series.items())
        raise FormatError(f"{where}: holds {len(series)} series; choose one with series_uid: {listing}")
    f0, ds0 = slices[0]
    iop = np.asarray(ds0.ImageOrientationPatient, dtype=np.float64)
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    spacing = np.asarray(ds0.PixelSpacing, dtype=np.float64)  # [between rows, between columns]
    for f, ds in slices[1:]:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, np.float64), iop, atol=1e-4):
            raise FormatError(f"{f}: ImageOrientationPatient differs from {f0.name}'s: slices of one series must share it")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols) or not np.allclose(np.asarray(ds.PixelSpacing, np.float64), spacing, rtol=1e-5):
            raise FormatError(f"{f}: image size or PixelSpacing differs from {f0.name}'s")
    row_dir, col_dir = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.asarray(ds.ImagePositionPatient, np.float64) for _, ds in slices])
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    slices = [slices[i] for i in order]
    depth, positions = depth[order], positions[order]
    gaps = np.diff(depth)
    if gaps.size and np.any(gaps < 1e-6):
        i = int(np.argmin(gaps))
        raise FormatError(f"{where}: slices {slices[i][0].name} and {slices[i + 1][0].name} share position {depth[i]:.4f} mm "
                          "(duplicate slices or several acquisitions in one series)")
    # the in-plane position of every slice must agree (a stack, not a tilted gantry)
    inplane = positions - np.outer(depth, normal)
    if np.max(np.abs(inplane - inplane[0])) > 1e-2:
        raise FormatError(f"{where}: slice positions are not stacked along the slice normal (gantry tilt?)")
    hu_stack = np.empty((len(slices), rows, cols), dtype=np.float32)
    for k, (f, ds) in enumerate(slices):
        try:
            pix = ds.pixel_array.astype(np.float64)
        except Exception as exc:
            raise FormatError(f"{f}: cannot decode pixel data: {exc}") from None
        hu_stack[k] = pix * float(ds.get("RescaleSlope", 1.0)) + float(ds.get("RescaleIntercept", 0.0))
    if gaps.size:
        dz = float(np.median(gaps))
        uneven = np.abs(gaps - dz) > spacing_tolerance * dz + 1e-4
        if np.any(uneven):
            bad = [(slices[i][0].name, slices[i + 1][0].name, round(float(gaps[i]), 4)) for i in np.flatnonzero(uneven)]
            if not resample:
                raise UnevenSpacingError(
                    f"{where}: uneven slice spacing (median {dz:.4f} mm; gaps off by more than "
                    f"{100 * spacing_tolerance:g} %: {bad[:5]}{' ...' if len(bad) > 5 else ''}); missing slices? "
                    "Pass resample=True to interpolate onto an even grid")
            n_new = int(round((depth[-1] - depth[0]) / dz)) + 1
            new_depth = depth[0] + dz * np.arange(n_new)
            idx = np.clip(np.searchsorted(depth, new_depth, side="right") - 1, 0, len(depth) - 2)
            w = ((new_depth - depth[idx]) / (depth[idx + 1] - depth[idx]))[:, None, None].astype(np.float32)
            hu_stack = (1 - w) * hu_stack[idx] + w * hu_stack[idx + 1]
            log.warning("%s: resampled %d unevenly spaced slices onto %d slices of %.4f mm", where, len(depth), n_new, dz)
            depth = new_depth
    else:
        dz = float(ds0.get("SpacingBetweenSlices", ds0.get("SliceThickness", 1.0)) or 1.0)
    dr, dc = float(spacing[0]), float(spacing[1])
    centre = positions[0] - depth[0] * normal + (depth[0] + depth[-1]) / 2 * normal \
        + (cols - 1) / 2 * dc * row_dir + (rows - 1) / 2 * dr * col_dir
    # array axes (slice, row, column) run along (normal, col_dir, row_dir): reorient to world (z, y, x)
    mapping = _axis_map(np.stack([normal, col_dir, row_dir]), where)
    sizes = {0: dz, 1: dr, 2: dc}
    data = hu_stack
    for array_axis, (_, sign) in enumerate(mapping):
        if sign < 0:
            data = np.flip(data, axis=array_axis)
    world_of_array = [axis for axis, _ in mapping]  # world axis (x=0, y=1, z=2) of each array axis
    perm = [world_of_array.index(w) for w in (2, 1, 0)]  # array axes in (z, y, x) order
    data = np.ascontiguousarray(np.transpose(data, perm))
    voxel = tuple(sizes[a] for a in perm)
    grid = VolumeGrid(data.shape, voxel, tuple(centre[::-1]))
    if units == "mu":
        data = np.clip(hu_to_mu(data, mu_water), 0.0, None).astype(np.float32)
    meta = {
        "units": "mm^-1" if units == "mu" else "HU",
        "mu_water_mm-1": mu_water,
        "source": where,
        "series_uid": str(ds0.get("SeriesInstanceUID", "")),
        "series_description": str(ds0.get("SeriesDescription", "")),
        "n_slices_read": len(slices),
    }
    return Volume(data.astype(np.float32, copy=False), grid, meta)


# ---------------------------------------------------------------------------------------------------- writing
def _ds_number(x: float) -> str:
    return f"{x:.10g}"[:16]


def write_dicom_series(
    volume: Volume,
    path: str | os.PathLike,
    *,
    mu_water: float = MU_WATER,
    series_description: str = "cbct reconstruction",
    patient_name: str = "Anonymous^",
    patient_id: str = "cbct",
    study_uid: str | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write ``volume`` (mm⁻¹) as a DICOM CT series folder, one file per axial slice (see the module notes).

    The folder appears complete or not at all (written under a temporary name, then renamed).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = pathlib.Path(path)
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise ValueError(f"volume must be 3-D (z, y, x), got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("volume contains NaN or infinite values; DICOM cannot store them")
    hu = mu_to_hu(data, mu_water)
    limit = float(np.max(np.abs(hu))) if hu.size else 0.0
    slope = 1.0 if limit <= 32000 else float(_ds_number(limit / 32000 * 1.0001))
    intercept = 0.0
    stored = np.round((hu - intercept) / slope).astype(np.int16)
    nz, ny, nx = data.shape
    dz, dy, dx = volume.grid.voxel_size
    origin = np.asarray(volume.origin)[::-1]  # (x, y, z) of voxel (0, 0, 0)
    now = datetime.datetime.now()
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    with atomic_directory(path, overwrite=overwrite) as tmp:
        for k in range(nz):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            sop_uid = generate_uid()
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.Modality = "CT"
            ds.Manufacturer = "cbct"
            ds.PatientName = patient_name
            ds.PatientID = patient_id
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.StudyID = "1"
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
            ds.SeriesNumber = 1
            ds.InstanceNumber = k + 1
            ds.SeriesDescription = series_description[:64]
            ds.PatientPosition = "HFS"  # Type 2C for CT: cbct's world frame is the patient's LPS frame
            ds.BodyPartExamined = "HEAD"  # dental CBCT; an unpaired part, so Laterality (Type 2C) is absent
            ds.KVP = ""
            ds.AcquisitionNumber = ""
            ds.ImagePositionPatient = [_ds_number(origin[0]), _ds_number(origin[1]), _ds_number(origin[2] + k * dz)]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.SliceLocation = _ds_number(origin[2] + k * dz)
            ds.SliceThickness = _ds_number(dz)
            ds.SpacingBetweenSlices = _ds_number(dz)
            ds.PixelSpacing = [_ds_number(dy), _ds_number(dx)]
            ds.Rows, ds.Columns = ny, nx
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = _ds_number(intercept)
            ds.RescaleSlope = _ds_number(slope)
            ds.RescaleType = "HU"
            ds.WindowCenter = "500"
            ds.WindowWidth = "3000"
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            ds.save_as(tmp / f"slice_{k:04d}.dcm", enforce_file_format=True)
    return path
