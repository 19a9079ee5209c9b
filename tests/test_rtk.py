"""Cross-validation with RTK (itk-rtk): geometry conversion, Joseph projector, FDK (full, short scan, displaced).

Errors are relative RMSE ``||ours - rtk|| / ||rtk||`` over the voxels inside the field of view (or the detector
pixels the volume covers), on small problems (64³ voxels, 120-180 views).
"""

from __future__ import annotations

import subprocess
import sys

import itk
import numpy as np
import pytest
from itk import RTK as rtk

import cbct
from cbct.conventions import rtk as crtk

IMG = itk.Image[itk.F, 3]
DSO, DSD = 500.0, 750.0
DET = (96, 128)  # (nv, nu), 1 mm pixels
PHANTOM_SCALE = 28.0  # RTK's Shepp-Logan fills about +-0.92 * 28 mm: inside the 64 mm volume


def rel_rmse(ours: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    if mask is not None:
        ours, ref = ours[mask], ref[mask]
    return float(np.linalg.norm((ours - ref).astype(np.float64)) / np.linalg.norm(ref.astype(np.float64)))


def circular(**kw) -> cbct.ConeGeometry:
    args = dict(dso=DSO, dsd=DSD, detector_shape=DET, detector_pixel_size=1.0, volume_shape=64, voxel_size=1.0, n_views=180)
    args.update(kw)
    return cbct.ConeGeometry.circular(**args)


def fov_mask(geom: cbct.ConeGeometry, margin: float = 2.0) -> np.ndarray:
    """Voxels of a circular scan that every view sees (for a displaced detector: the half-fan FOV), less ``margin`` mm."""
    nv, nu = geom.detector_shape
    dv, du = geom.pixel_sizes()[0]
    pp_v, pp_u = geom.principal_points()[0]
    dso, dsd = geom.source_origin_distances()[0], geom.source_detector_distances()[0]
    left, right = (nu - 1) / 2 * du + pp_u, (nu - 1) / 2 * du - pp_u  # detector reach on both sides of the central ray
    reach = max(left, right) if abs(left - right) > 0.1 * (left + right) else min(left, right)
    radius = dso * np.sin(np.arctan(reach / dsd)) - margin
    half_height = (min((nv - 1) / 2 * dv + pp_v, (nv - 1) / 2 * dv - pp_v)) * (dso - radius) / dsd - margin
    aff = geom.volume.index_to_world()
    nz, ny, nx = geom.volume.shape
    x = aff[0, 3] + aff[0, 0] * np.arange(nx)
    y = aff[1, 3] + aff[1, 1] * np.arange(ny)
    z = aff[2, 3] + aff[2, 2] * np.arange(nz)
    return (x[None, None, :] ** 2 + y[None, :, None] ** 2 <= radius**2) & (np.abs(z)[:, None, None] <= half_height)


def rtk_shepp_logan_projections(geom: cbct.ConeGeometry):
    """RTK's analytic Shepp-Logan projections for ``geom``: (itk image, rtk geometry, numpy (view, v, u))."""
    rgeom, empty_proj, _ = crtk.rtk_images(geom)
    phantom = rtk.SheppLoganPhantomFilter[IMG, IMG].New()
    phantom.SetInput(empty_proj)
    phantom.SetGeometry(rgeom)
    phantom.SetPhantomScale(PHANTOM_SCALE)
    phantom.Update()
    proj = crtk.itk_to_projections(phantom.GetOutput())
    return crtk.projections_to_itk(proj, geom), rgeom, proj


def rtk_fdk(geom: cbct.ConeGeometry, proj_image, rgeom, *, parker=False, displaced=False, hann_cut=0.0) -> np.ndarray:
    """RTK's FDK (optionally after its displaced-detector and Parker filters) → cbct (z, y, x) volume."""
    source = proj_image
    for wanted, weighting in ((displaced, rtk.DisplacedDetectorImageFilter), (parker, rtk.ParkerShortScanImageFilter)):
        if wanted:
            weights = weighting[IMG].New()
            weights.SetInput(source)
            weights.SetGeometry(rgeom)
            weights.Update()
            source = weights.GetOutput()
    fdk = rtk.FDKConeBeamReconstructionFilter[IMG].New()
    fdk.SetInput(0, crtk.volume_info(geom.volume).empty_image())
    fdk.SetInput(1, source)
    fdk.SetGeometry(rgeom)
    fdk.GetRampFilter().SetTruncationCorrection(0.0)
    fdk.GetRampFilter().SetHannCutFrequency(hann_cut)
    fdk.Update()
    volume, grid = crtk.itk_to_volume(fdk.GetOutput())
    assert grid == geom.volume
    return volume


def asymmetric_volume(grid: cbct.VolumeGrid, seed: int = 0) -> np.ndarray:
    """Blocks at asymmetric places plus texture, zero on a 2-voxel border."""
    vol = np.zeros(grid.shape, np.float32)
    nz, ny, nx = grid.shape
    vol[nz // 6: 2 * nz // 3, ny // 3: ny // 2, nx // 12: 3 * nx // 4] = 1.0
    vol[nz // 2: 5 * nz // 6, ny // 2: 9 * ny // 10, nx // 2: 2 * nx // 3] = 2.0
    vol += 0.1 * np.random.default_rng(seed).random(grid.shape, dtype=np.float32)
    border = np.zeros(grid.shape, bool)
    border[2:-2, 2:-2, 2:-2] = True
    return np.where(border, vol, 0.0).astype(np.float32)


GEOMETRIES = {
    "full": dict(),
    "offsets": dict(detector_pixel_size=(1.1, 1.2), volume_shape=(60, 64, 70), voxel_size=(1.0, 0.9, 1.1),
                    detector_offset=(3.0, -7.0), volume_offset=(2.0, -3.0, 5.0), n_views=90),
    "short": dict(n_views=120, arc=np.radians(215.0), start_angle=0.3),
    "reverse": dict(angles=np.linspace(2.0, 2.0 - 2 * np.pi, 90, endpoint=False), n_views=None),
}


# ---------------------------------------------------------------------------------------------- conversion
def test_frame_is_a_proper_rotation() -> None:
    np.testing.assert_allclose(crtk.FRAME @ crtk.FRAME.T, np.eye(3), atol=0)
    assert np.linalg.det(crtk.FRAME) == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_round_trip(name: str) -> None:
    geom = circular(**GEOMETRIES[name])
    back = crtk.from_rtk(crtk.to_rtk(geom), crtk.projection_info(geom), geom.volume)
    assert back.detector_shape == geom.detector_shape
    assert back.volume == geom.volume
    scale = np.abs(geom.vectors).max()
    np.testing.assert_allclose(back.vectors, geom.vectors, rtol=0, atol=1e-9 * scale)
    # nominal angles come back unwrapped with the first in [0, 2 pi)
    shift = np.floor(geom.angles[0] / (2 * np.pi)) * 2 * np.pi
    np.testing.assert_allclose(back.angles, geom.angles - shift, rtol=0, atol=1e-9)


def test_round_trip_with_motion_and_images() -> None:
    geom = circular(n_views=30)
    rng = np.random.default_rng(3)
    small = rng.normal(scale=0.02, size=(geom.n_views, 3))
    rot = np.stack([_rotation(w) for w in small])
    moved = geom.with_rigid_motion(rot, rng.normal(scale=2.0, size=(geom.n_views, 3)))
    _, proj_img, vol_img = crtk.rtk_images(moved)
    back = crtk.from_rtk(crtk.to_rtk(moved), proj_img, vol_img)
    np.testing.assert_allclose(back.vectors, moved.vectors, rtol=0, atol=1e-9 * np.abs(moved.vectors).max())
    assert back.volume == moved.volume


def _rotation(w: np.ndarray) -> np.ndarray:
    """Rotation matrix of the rotation vector ``w`` (Rodrigues)."""
    theta = np.linalg.norm(w)
    k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / theta
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k


def test_rtk_parameters_of_a_circular_scan() -> None:
    """The documented correspondence: theta = a, (ProjectionOffsetX, Y) = (off_u, -off_v), sid = DSO, sdd = DSD."""
    geom = circular(n_views=24, detector_offset=(3.0, -7.0))
    rgeom = crtk.to_rtk(geom)
    np.testing.assert_allclose(np.asarray(rgeom.GetGantryAngles()), np.mod(geom.angles, 2 * np.pi), atol=1e-12)
    np.testing.assert_allclose(rgeom.GetProjectionOffsetsX(), -7.0, atol=1e-9)
    np.testing.assert_allclose(rgeom.GetProjectionOffsetsY(), -3.0, atol=1e-9)
    np.testing.assert_allclose(rgeom.GetSourceToIsocenterDistances(), DSO, rtol=1e-12)
    np.testing.assert_allclose(rgeom.GetSourceToDetectorDistances(), DSD, rtol=1e-12)
    np.testing.assert_allclose(rgeom.GetSourceOffsetsX(), 0.0, atol=1e-9)
    np.testing.assert_allclose(rgeom.GetOutOfPlaneAngles(), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.mod(np.asarray(rgeom.GetInPlaneAngles()) + np.pi, 2 * np.pi) - np.pi, 0.0, atol=1e-12)


def test_from_native_rtk_geometry_matches_rtk_matrices() -> None:
    """A geometry built with RTK's own parameters converts to cbct rows whose projection matrices equal RTK's."""
    rgeom = rtk.ThreeDCircularProjectionGeometry.New()
    angles_deg = np.linspace(10.0, 370.0, 36, endpoint=False)
    for a in angles_deg:
        rgeom.AddProjection(DSO, DSD, float(a), 4.0, -2.5)
    info = crtk.ImageInfo(origin=(-47.5, -30.0, 0.0), spacing=(1.0, 0.8, 1.0), size=(96, 76, 36))
    geom = crtk.from_rtk(rgeom, info, cbct.VolumeGrid(48, 1.0))
    np.testing.assert_allclose(geom.angles, np.radians(angles_deg), atol=1e-12)
    assert geom.detector_shape == (76, 96)
    # a world point seen by RTK at physical detector coordinates (pu, pv) sits at cbct pixel (iu, nv - 1 - iv')
    pts = np.random.default_rng(0).uniform(-20, 20, size=(5, 3))
    ours = geom.projection_matrices()
    for i in range(0, 36, 7):
        rtk_mat = np.asarray(itk.array_from_matrix(rgeom.GetMatrix(i)))
        for p in pts:
            h = rtk_mat @ np.append(crtk.FRAME @ p, 1.0)
            pu, pv = h[:2] / h[2]
            q = ours[i] @ np.append(p, 1.0)
            iu, iv = q[:2] / q[2]
            assert iu == pytest.approx((pu - info.origin[0]) / info.spacing[0], abs=1e-8)
            assert 75 - iv == pytest.approx((pv - info.origin[1]) / info.spacing[1], abs=1e-8)


def test_volume_image_physical_points() -> None:
    grid = cbct.VolumeGrid((5, 6, 7), (1.0, 0.5, 2.0), (3.0, -1.0, 4.0))
    vol = np.arange(np.prod(grid.shape), dtype=np.float32).reshape(grid.shape)
    image = crtk.volume_to_itk(vol, grid)
    aff = grid.index_to_world()
    for k, j, i in [(0, 0, 0), (4, 5, 6), (1, 2, 3)]:
        itk_index = [int(v) for v in crtk.FRAME @ np.array([i, j, k])]
        phys = np.array(image.TransformIndexToPhysicalPoint(itk_index))
        np.testing.assert_allclose(phys, crtk.FRAME @ (aff[:3, :3] @ [i, j, k] + aff[:3, 3]), atol=1e-12)
        assert image.GetPixel(itk_index) == vol[k, j, i]
    back, back_grid = crtk.itk_to_volume(image)
    np.testing.assert_array_equal(back, vol)
    assert back_grid == grid


def test_projection_image_round_trip() -> None:
    geom = circular(n_views=4)
    proj = np.random.default_rng(1).random(geom.projection_shape, dtype=np.float32)
    image = crtk.projections_to_itk(proj, geom)
    assert crtk.ImageInfo.from_itk(image) == crtk.projection_info(geom)
    assert image.GetPixel([5, 0, 2]) == proj[2, DET[0] - 1, 5]  # RTK's row 0 is cbct's bottom row
    np.testing.assert_array_equal(crtk.itk_to_projections(image), proj)


def test_bad_input_errors() -> None:
    geom = circular(n_views=4)
    with pytest.raises(ValueError, match="projections must have shape"):
        crtk.projections_to_itk(np.zeros((4, 3, 3), np.float32), geom)
    with pytest.raises(ValueError, match="volume must have the grid's shape"):
        crtk.volume_to_itk(np.zeros((3, 3, 3), np.float32), geom.volume)
    with pytest.raises(TypeError, match="geom must be a cbct.ConeGeometry"):
        crtk.to_rtk("not a geometry")
    skewed = geom.vectors.copy()
    skewed[:, 9:12] += 0.1 * skewed[:, 6:9]
    with pytest.raises(ValueError, match="orthogonal"):
        crtk.to_rtk(cbct.ConeGeometry(skewed, geom.detector_shape, geom.volume, geom.angles))
    with pytest.raises(ValueError, match="holds 3 views"):
        crtk.from_rtk(crtk.to_rtk(geom), crtk.ImageInfo((0, 0, 0), (1, 1, 1), (128, 96, 3)), geom.volume)


def test_import_cbct_does_not_need_itk() -> None:
    code = "import sys; sys.modules['itk'] = None; import cbct, cbct.conventions.rtk; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ---------------------------------------------------------------------------------------------- operators
def test_projector_matches_rtk_joseph() -> None:
    geom = circular(**GEOMETRIES["offsets"])
    vol = asymmetric_volume(geom.volume)
    ours = cbct.project(vol, geom)
    rgeom, proj_img, vol_img = crtk.rtk_images(geom, volume=vol)
    joseph = rtk.JosephForwardProjectionImageFilter[IMG, IMG].New()
    joseph.SetInput(0, proj_img)
    joseph.SetInput(1, vol_img)
    joseph.SetGeometry(rgeom)
    joseph.Update()
    theirs = crtk.itk_to_projections(joseph.GetOutput())
    covered = theirs > 0  # detector pixels whose rays meet the object
    assert covered.mean() > 0.3
    error = rel_rmse(ours, theirs, covered)
    assert error < 0.01, f"projector vs RTK Joseph: relative RMSE {error:.2e}"
    # the comparison sees orientation: a mirrored detector is far off
    assert rel_rmse(ours[:, ::-1], theirs) > 0.1
    assert rel_rmse(ours[:, :, ::-1], theirs) > 0.1


FDK_CASES = {
    "full": (dict(), {}),
    "short": (dict(n_views=120, arc=np.pi + 2 * np.arctan(64 / DSD) + np.radians(10.0), start_angle=0.3), dict(parker=True)),
    "displaced+": (dict(detector_offset=(0.0, 32.0)), dict(displaced=True)),
    "displaced-": (dict(detector_offset=(4.0, -32.0)), dict(displaced=True)),
}


@pytest.mark.parametrize("case", list(FDK_CASES))
def test_fdk_matches_rtk_on_analytic_shepp_logan(case: str) -> None:
    geom_kw, rtk_kw = FDK_CASES[case]
    geom = circular(**geom_kw)
    proj_img, rgeom, proj = rtk_shepp_logan_projections(geom)
    ours = cbct.fdk(proj, geom)
    theirs = rtk_fdk(geom, proj_img, rgeom, **rtk_kw)
    mask = fov_mask(geom)
    assert mask.mean() > 0.3
    error = rel_rmse(ours, theirs, mask)
    assert error < 0.01, f"{case}: FDK vs RTK relative RMSE {error:.2e} inside the FOV"
    # and both reconstruct the phantom (the mean attenuation inside the FOV agrees with RTK's drawn phantom)
    draw = rtk.DrawSheppLoganFilter[IMG, IMG].New()
    draw.SetInput(crtk.volume_info(geom.volume).empty_image())
    draw.SetPhantomScale(PHANTOM_SCALE)
    draw.Update()
    truth, _ = crtk.itk_to_volume(draw.GetOutput())
    assert float(ours[mask].mean()) == pytest.approx(float(truth[mask].mean()), rel=0.02)


def test_fdk_hann_window_matches_rtk() -> None:
    geom = circular()
    proj_img, rgeom, proj = rtk_shepp_logan_projections(geom)
    ours = cbct.fdk(proj, geom, filter="hann", cutoff=0.8)
    theirs = rtk_fdk(geom, proj_img, rgeom, hann_cut=0.8)
    error = rel_rmse(ours, theirs, fov_mask(geom))
    assert error < 0.01, f"hann 0.8: FDK vs RTK relative RMSE {error:.2e}"


def test_rtk_project_sees_anatomy_outside_the_reconstruction_grid() -> None:
    from cbct.simulation.rtk_projector import rtk_project

    geom = circular(**GEOMETRIES["offsets"])
    big = cbct.VolumeGrid((48, 96, 96), 1.0)  # wider than the 64 mm reconstruction grid
    vol = asymmetric_volume(big)
    theirs = rtk_project(vol, big, geom)
    ours = cbct.project(vol, geom.with_volume(big))
    assert theirs.shape == geom.projection_shape
    covered = theirs > 0
    assert covered.mean() > 0.3
    assert rel_rmse(ours, theirs, covered) < 0.01
    with pytest.raises(ValueError, match="does not match its grid"):
        rtk_project(vol[:-1], big, geom)
