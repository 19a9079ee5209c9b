"""NIfTI-1 volumes via nibabel.

NIfTI stores arrays in ``(i, j, k)`` = (x, y, z) order and an affine to **RAS+** world coordinates. cbct's volumes are
``(z, y, x)`` and its world frame is identified with DICOM's patient frame **LPS** (see :mod:`cbct.io.dicom`), so

    data_nifti = volume.transpose(2, 1, 0)
    affine     = diag(-1, -1, 1, 1) @ grid.index_to_world()

(x and y change sign from LPS to RAS). The affine is stored as both qform and sform (code 1, scanner) with mm units,
so viewers place the volume where DICOM viewers place the same volume written by :mod:`cbct.io.dicom`.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from cbct.geometry import VolumeGrid
from cbct.io.atomic import atomic_path
from cbct.io.errors import FormatError
from cbct.volume import Volume

__all__ = ["write_nifti", "read_nifti", "nifti_affine", "LPS_TO_RAS"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_affine(grid: VolumeGrid) -> np.ndarray:
    """(4, 4) affine from NIfTI voxel ``(i, j, k)`` = (x, y, z) indices to RAS+ mm."""
    return LPS_TO_RAS @ grid.index_to_world()


def write_nifti(volume: Volume, path: str | os.PathLike, *, overwrite: bool = True) -> pathlib.Path:
    """Write ``volume`` as NIfTI-1 (``.nii`` or ``.nii.gz``), float32, atomically."""
    import nibabel as nib

    path = pathlib.Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI file name must end in .nii or .nii.gz, got {path.name}")
    affine = nifti_affine(volume.grid)
    img = nib.Nifti1Image(np.asarray(volume.data, dtype=np.float32).transpose(2, 1, 0), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    img.header["descrip"] = str(volume.metadata.get("units", "mm^-1"))[:79].encode()
    # nibabel picks the compression from the file name: write under a temporary name with the same suffix
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp_named = tmp.with_name(tmp.name + suffix)
        try:
            nib.save(img, tmp_named)
            os.replace(tmp_named, tmp)
        finally:
            tmp_named.unlink(missing_ok=True)
    return path


def read_nifti(path: str | os.PathLike) -> Volume:
    """Read a NIfTI volume whose affine is axis-aligned (as :func:`write_nifti` writes) back to ``(z, y, x)``."""
    import nibabel as nib

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise FormatError(f"{path}: cannot read NIfTI (truncated or corrupt?): {exc}") from None
    if data.ndim != 3:
        raise FormatError(f"{path}: expected a 3-D image, got shape {data.shape}")
    lps = LPS_TO_RAS @ img.affine
    lin = lps[:3, :3]
    if not np.allclose(lin, np.diag(np.diag(lin)), atol=1e-6 * np.abs(lin).max()) or np.any(np.diag(lin) <= 0):
        raise FormatError(f"{path}: affine is not an axis-aligned LPS grid with positive spacing; reorient it first")
    spacing = np.diag(lin)  # x, y, z
    shape_xyz = np.array(data.shape)
    centre = lps[:3, 3] + (shape_xyz - 1) / 2 * spacing
    grid = VolumeGrid(data.shape[::-1], tuple(spacing[::-1]), tuple(centre[::-1]))
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), grid, {"source": str(path)})
