"""Scans, readers, writers and preprocessing."""

from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import pytest

import cbct
from cbct.geometry import VolumeGrid
from cbct.io import FormatError, UnevenSpacingError, Volume, read_scan, read_volume, write_scan, write_volume
from cbct.io.atomic import atomic_directory, atomic_path
from cbct.preprocess import complete_parallel_half_scan, counts_to_line_integrals
from cbct.scan import Scan, ScanError


@pytest.fixture
def tiny_geometry() -> cbct.ConeGeometry:
    return cbct.ConeGeometry.circular(dso=300.0, dsd=450.0, detector_shape=(24, 32), detector_pixel_size=1.5,
                                      volume_shape=(16, 20, 24), voxel_size=1.0, n_views=12)


@pytest.fixture
def tiny_volume() -> Volume:
    grid = VolumeGrid((6, 8, 10), (2.0, 0.5, 0.75), (3.0, -4.0, 10.0))
    data = np.random.default_rng(0).uniform(0.0, 0.05, grid.shape).astype(np.float32)
    data[0, 0, 0] = 0.0  # air
    return Volume(data, grid, {"units": "mm^-1"})


# -------------------------------------------------------------------------------------------------- Scan
def test_scan_rejects_mismatched_shape_nan_and_missing_flat(tiny_geometry):
    good = np.zeros(tiny_geometry.projection_shape, np.float32)
    with pytest.raises(ScanError, match=r"scan 'a'.*shape \(12, 24, 31\).*do not match"):
        Scan.from_arrays(tiny_geometry, projections=good[..., :31], metadata={"id": "a"})
    bad = good.copy()
    bad[3, 2, 1] = np.nan
    with pytest.raises(ScanError, match=r"1 NaN or infinite values \(first at \(view, v, u\) = \(3, 2, 1\)\)"):
        Scan.from_arrays(tiny_geometry, projections=bad)
    with pytest.raises(ScanError, match="need flat"):
        Scan.from_arrays(tiny_geometry, counts=good)
    with pytest.raises(ScanError, match="exactly one"):
        Scan.from_arrays(tiny_geometry)


def test_cbct_hdf5_round_trip_projections_and_raw(tmp_path, tiny_geometry, rng):
    proj = rng.uniform(0, 2, tiny_geometry.projection_shape).astype(np.float32)
    ref = Volume(rng.uniform(0, 0.02, tiny_geometry.volume.shape).astype(np.float32), tiny_geometry.volume)
    scan = Scan.from_arrays(tiny_geometry, projections=proj, metadata={"id": "p1", "nested": {"k": [1, 2]}}, reference=ref)
    write_scan(scan, tmp_path / "p1.h5")
    back = read_scan(tmp_path / "p1.h5")
    assert back.geometry == tiny_geometry
    np.testing.assert_array_equal(back.projections, proj)
    np.testing.assert_array_equal(back.reference.data, ref.data)
    assert back.metadata["nested"] == {"k": [1, 2]} and back.id == "p1"

    counts = rng.integers(100, 1000, tiny_geometry.projection_shape).astype(np.uint16)
    flat = np.full((3, 24, 32), 1200, np.uint16)
    dark = np.full((24, 32), 10, np.uint16)
    raw = Scan.from_arrays(tiny_geometry, counts=counts, flat=flat, dark=dark, metadata={"id": "r1"})
    write_scan(raw, tmp_path / "r1.h5")
    back = read_scan(tmp_path / "r1.h5")
    assert back.is_raw and back.counts.dtype == np.uint16
    np.testing.assert_allclose(back.line_integrals(), -np.log((counts - 10.0) / 1190.0), rtol=1e-5)


def test_truncated_and_missing_files_give_clear_errors(tmp_path, tiny_geometry):
    scan = Scan.from_arrays(tiny_geometry, projections=np.ones(tiny_geometry.projection_shape, np.float32))
    path = tmp_path / "s.h5"
    write_scan(scan, path)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"cut\.h5.*truncated or corrupt"):
        read_scan(tmp_path / "cut.h5", format="cbct-hdf5")
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        read_scan(tmp_path / "nothere.h5")
    with pytest.raises(ValueError, match="unknown scan format 'xyz'"):
        read_scan(path, format="xyz")


# -------------------------------------------------------------------------------------------------- preprocessing
def test_counts_to_line_integrals_and_errors(rng):
    counts = rng.uniform(50, 900, (4, 3, 5)).astype(np.float32)
    flat = np.stack([np.full((3, 5), 990.0), np.full((3, 5), 1010.0)])
    dark = np.full((3, 5), 10.0)
    p = counts_to_line_integrals(counts, dark=dark, flat=flat)
    np.testing.assert_allclose(p, -np.log((counts - 10) / 990), rtol=1e-5)
    starved = counts.copy()
    starved[0, 0, 0] = 5.0  # below the dark level: refused (issue 14), or clipped and finite when asked
    with pytest.raises(ValueError, match=r"1 pixels .* at or below the dark level .* \(0, 0, 0\)"):
        counts_to_line_integrals(starved, dark=dark, flat=flat)
    assert np.isfinite(counts_to_line_integrals(starved, dark=dark, flat=flat, clip_counts=True)).all()
    with pytest.raises(ValueError, match=r"flat field does not exceed the dark field at 1 detector pixels \(first at \(v, u\) = \(1, 2\)\)"):
        bad_flat = flat.copy()
        bad_flat[:, 1, 2] = 5.0
        counts_to_line_integrals(counts, dark=dark, flat=bad_flat)
    nan_counts = counts.copy()
    nan_counts[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"counts \(view 2\) contains 1 NaN"):
        counts_to_line_integrals(nan_counts, dark=dark, flat=flat)
    with pytest.raises(ValueError, match=r"flat must have shape"):
        counts_to_line_integrals(counts, flat=np.ones((3, 4)))


def test_complete_parallel_half_scan_refuses_cone_beam(tiny_geometry):
    with pytest.raises(ValueError, match="parallel"):
        complete_parallel_half_scan(np.zeros(tiny_geometry.projection_shape, np.float32), tiny_geometry)


# -------------------------------------------------------------------------------------------------- real data
def test_tooth_dxchange_reconstructs_from_raw_counts(data_file):
    scan = read_scan(data_file("tooth.h5"))
    assert scan.is_raw and scan.counts.shape == (181, 2, 640)
    assert scan.metadata["beam"] == "parallel"
    assert 290 < scan.metadata["rotation_center_column"] < 302  # tomopy's tutorials use about 296
    grid = VolumeGrid((2, 160, 160), (0.025, 0.1, 0.1))  # 2 detector rows of 0.025 mm: keep dz at the pixel size
    proj, geom = complete_parallel_half_scan(scan.line_integrals(), scan.geometry.with_volume(grid))
    vol = cbct.fdk(proj, geom, filter="hann")[0]
    yy, xx = np.mgrid[:160, :160]
    r = np.hypot(yy - 79.5, xx - 79.5) * 0.1  # mm
    tooth = vol > 0.5 * np.percentile(vol, 99.5)
    background = vol[r > 7.0]  # the tooth spans less than 7 mm from the axis
    assert 0.05 < tooth.mean() < 0.5  # an object, not noise or an empty image
    assert vol[tooth].mean() > 10 * np.abs(background).mean()
    assert r[tooth].max() < 7.0  # and it is centred: a wrong rotation centre smears it into arcs


def test_metaimage_head(data_file):
    vol = read_volume(data_file("head.mha"))
    assert vol.data.shape == (93, 64, 64)
    np.testing.assert_allclose(vol.voxel_size, (1.5, 3.2, 3.2), rtol=1e-6)
    assert 3000 < vol.data.max() <= 3926 and vol.metadata["units"] == "stored"


# -------------------------------------------------------------------------------------------------- TIFF + cone_vec
def _write_tiff(path: pathlib.Path, img: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, img)


def test_walnut_layout(tmp_path, rng):
    geom_full = cbct.ConeGeometry.circular(dso=66.0, dsd=199.0, detector_shape=(6, 5), detector_pixel_size=0.3,
                                           volume_shape=8, voxel_size=0.2, n_views=1201)
    folder = tmp_path / "Walnut7" / "Projections" / "tubeV2"
    folder.mkdir(parents=True)
    np.savetxt(folder / "scan_geom_corrected.geom", geom_full.vectors)
    counts = rng.integers(200, 900, (1201, 6, 5)).astype(np.uint16)
    # the scanner stores image i transposed and flipped: file = flipud(transpose(view)); view k is file 1199 - k
    for k in range(1201):
        _write_tiff(folder / f"scan_{k:06d}.tif", np.flipud(counts[1199 - k].T) if k < 1200 else np.flipud(counts[0].T))
    _write_tiff(folder / "di000000.tif", np.full((5, 6), 20, np.uint16))
    _write_tiff(folder / "io000000.tif", np.full((5, 6), 990, np.uint16))
    _write_tiff(folder / "io000001.tif", np.full((5, 6), 1010, np.uint16))
    scan = read_scan(folder, step=100)
    assert scan.metadata["format"] == "walnut" and scan.id == "Walnut7_tubeV2"
    assert scan.counts.shape == (12, 6, 5)
    np.testing.assert_array_equal(scan.counts, counts[0:1200:100])
    np.testing.assert_allclose(scan.geometry.vectors, geom_full.vectors[0:1200:100])
    np.testing.assert_allclose(scan.line_integrals(), -np.log((counts[0:1200:100] - 20.0) / 980.0), rtol=1e-5)
    (folder / "scan_000017.tif").unlink()
    with pytest.raises(FileNotFoundError, match="1 projection image"):
        read_scan(folder, format="walnut")


def test_tiff_conevec_mismatch(tmp_path, tiny_geometry):
    np.savetxt(tmp_path / "scan.geom", tiny_geometry.vectors)
    for k in range(11):
        _write_tiff(tmp_path / f"proj_{k:03d}.tif", np.ones((24, 32), np.float32))
    with pytest.raises(FormatError, match="11 projection images but 12 geometry rows"):
        read_scan(tmp_path, kind="line_integrals")
    _write_tiff(tmp_path / "proj_011.tif", np.ones((24, 32), np.float32))
    scan = read_scan(tmp_path, kind="line_integrals", volume={"shape": [16, 20, 24], "voxel_size": 1.0})
    np.testing.assert_array_equal(scan.geometry.vectors, tiny_geometry.vectors)
    assert scan.geometry.volume == tiny_geometry.volume
    np.testing.assert_allclose(scan.geometry.angles, tiny_geometry.angles, atol=1e-9)


# -------------------------------------------------------------------------------------------------- volume writers
def test_dicom_series_read_back_with_pydicom(tmp_path, tiny_volume):
    import pydicom

    out = write_volume(tiny_volume, tmp_path / "series", format="dicom")
    files = sorted(out.iterdir())
    assert len(files) == 6
    origin_xyz = np.asarray(tiny_volume.origin)[::-1]
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
        np.testing.assert_allclose([float(x) for x in ds.ImagePositionPatient], origin_xyz + [0, 0, 2.0 * k], atol=1e-6)
        assert [float(x) for x in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(x) for x in ds.PixelSpacing] == [0.5, 0.75] and float(ds.SliceThickness) == 2.0
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        mu = 0.02 * (1 + hu / 1000)
        np.testing.assert_allclose(mu, tiny_volume.data[k], atol=0.02 / 1000 / 2 + 1e-7)
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1
    back = read_volume(out)
    assert back.grid.shape == tiny_volume.grid.shape
    np.testing.assert_allclose(back.voxel_size, tiny_volume.voxel_size)
    np.testing.assert_allclose(back.grid.offset, tiny_volume.grid.offset, atol=1e-6)
    np.testing.assert_allclose(back.data, tiny_volume.data, atol=1.1e-5)


def test_dicom_reader_sorts_and_detects_uneven_spacing(tmp_path):
    from pydicom.data import get_testdata_file

    src = pathlib.Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
    vol = read_volume(src, units="hu")
    assert vol.data.shape == (5, 16, 16)
    np.testing.assert_allclose(vol.voxel_size, (2.5, 0.488281, 0.488281))
    np.testing.assert_allclose(vol.origin, (-1.2375, -143.0, -72.199997), atol=1e-5)
    for name in os.listdir(src):
        shutil.copy(src / name, tmp_path / name)
    (tmp_path / "2693").unlink()  # the slice at z = 3.7625 mm
    with pytest.raises(UnevenSpacingError, match=r"uneven slice spacing.*5\.0"):
        read_volume(tmp_path)
    resampled = read_volume(tmp_path, resample=True, units="hu")
    assert resampled.data.shape == (5, 16, 16)
    np.testing.assert_allclose(resampled.data[[0, 1, 3, 4]], vol.data[[0, 1, 3, 4]], atol=1e-3)
    np.testing.assert_allclose(resampled.data[2], 0.5 * (vol.data[1] + vol.data[3]), atol=1e-3)


def test_nifti_affine_with_nibabel(tmp_path, tiny_volume):
    import nibabel as nib

    path = write_volume(tiny_volume, tmp_path / "v.nii.gz")
    img = nib.load(path)
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ tiny_volume.grid.index_to_world()
    np.testing.assert_allclose(img.affine, expected)
    np.testing.assert_array_equal(np.asarray(img.dataobj), tiny_volume.data.transpose(2, 1, 0))
    # voxel (i, j, k) = (x, y, z) index (1, 2, 3) is at LPS (x, y, z) -> RAS (-x, -y, z)
    x, y, z = np.asarray(tiny_volume.origin)[::-1] + np.array([1, 2, 3]) * np.asarray(tiny_volume.voxel_size)[::-1]
    np.testing.assert_allclose(nib.affines.apply_affine(img.affine, [1, 2, 3]), [-x, -y, z])
    assert img.header.get_xyzt_units()[0] == "mm"
    back = read_volume(path)
    assert back.grid == tiny_volume.grid or np.allclose(back.grid.offset, tiny_volume.grid.offset)
    np.testing.assert_array_equal(back.data, tiny_volume.data)


def test_hdf5_volume_and_png(tmp_path, tiny_volume):
    from PIL import Image

    back = read_volume(write_volume(tiny_volume, tmp_path / "v.h5"))
    np.testing.assert_array_equal(back.data, tiny_volume.data)
    assert back.grid == tiny_volume.grid
    png = write_volume(tiny_volume, tmp_path / "v.png")
    img = np.asarray(Image.open(png))
    # axial 4 x 5 mm, coronal 12 x 7.5 mm, sagittal 12 x 4 mm at 0.5 mm pixels, 4-pixel gaps
    assert img.dtype == np.uint8 and img.shape == (24, 15 + 8 + 15 + 8)
    assert img.max() > 200 and img[:, :15].std() > 10


def test_atomic_outputs_leave_nothing_on_failure(tmp_path, tiny_volume):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "a").write_text("partial")
            raise RuntimeError("boom")
    nan_vol = Volume(np.full(tiny_volume.grid.shape, np.nan, np.float32), tiny_volume.grid)
    with pytest.raises(ValueError, match="NaN"):
        write_volume(nan_vol, tmp_path / "dcm", format="dicom")
    assert list(tmp_path.iterdir()) == []


def test_write_volume_takes_arrays(tmp_path, tiny_volume):
    """write_volume takes a Volume, or an array and its grid (1 mm voxels without one), as the demo uses it."""
    data, grid = tiny_volume.data, tiny_volume.grid
    assert read_volume(write_volume(data, tmp_path / "a.h5", grid=grid)).grid == grid
    np.testing.assert_array_equal(read_volume(write_volume(data, tmp_path / "a.nii", grid=grid)).data, data)
    assert len(list(write_volume(tiny_volume, tmp_path / "dcm", format="dicom").iterdir())) == 6
    assert write_volume(data, tmp_path / "a.png").stat().st_size > 0  # no grid: 1 mm voxels
    with pytest.raises(ValueError, match="3-D"):
        write_volume(data[0], tmp_path / "b.h5", grid=grid)


def test_cbct_hdf5_target_angles(tmp_path, tiny_geometry, rng):
    """A sparse scan stores the angles to complete to (format version 2); files without them stay version 1 and
    old files load."""
    import h5py

    from cbct.io.hdf5 import SCAN_FORMAT_VERSION

    full_angles = np.linspace(0, 2 * np.pi, 4 * tiny_geometry.n_views, endpoint=False) + tiny_geometry.angles[0]
    geom = tiny_geometry
    proj = rng.uniform(0, 2, geom.projection_shape).astype(np.float32)
    scan = Scan.from_arrays(geom, projections=proj, metadata={"id": "t"}, target_angles=full_angles[::-1])
    write_scan(scan, tmp_path / "t.h5")
    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert f.attrs["format_version"] == SCAN_FORMAT_VERSION == 2 and f["target_angles"].attrs["units"] == "rad"
    back = read_scan(tmp_path / "t.h5")
    np.testing.assert_allclose(back.target_angles, full_angles[::-1], atol=1e-12)
    assert back.missing_views.size == 3 * geom.n_views
    # without target angles: version 1 and no dataset, as before; an old file (version 1) loads with none
    write_scan(Scan.from_arrays(geom, projections=proj), tmp_path / "old.h5")
    with h5py.File(tmp_path / "old.h5", "r") as f:
        assert f.attrs["format_version"] == 1 and "target_angles" not in f
    assert read_scan(tmp_path / "old.h5").target_angles is None
    # an old file with metadata sparse_step gets its target from the shortcut
    with h5py.File(tmp_path / "old.h5", "a") as f:
        f.attrs["metadata"] = '{"sparse_step": 4}'
    np.testing.assert_allclose(np.sort(np.mod(read_scan(tmp_path / "old.h5").target_angles, 2 * np.pi)),
                               np.sort(np.mod(full_angles, 2 * np.pi)), atol=1e-9)
    # a target that misses acquired views, or a malformed dataset, names the file
    with h5py.File(tmp_path / "t.h5", "a") as f:
        del f["target_angles"]
        f["target_angles"] = full_angles[1::2]
    with pytest.raises(ScanError, match=r"t\.h5.*target_angles do not contain"):
        read_scan(tmp_path / "t.h5")
    with h5py.File(tmp_path / "t.h5", "a") as f:
        del f["target_angles"]
        f["target_angles"] = np.zeros((2, 3))
    with pytest.raises(FormatError, match=r"t\.h5:/target_angles must be a 1-D float array"):
        read_scan(tmp_path / "t.h5")
