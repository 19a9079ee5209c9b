"""Rigid motion estimation from projections (cbct.motion_estimation)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cbct
from cbct.metrics import psnr
from cbct.motion_estimation import MotionEstimationConfig, bin_scan, estimate_rigid_motion, interpolate_poses
from cbct.phantoms.shepp_logan import shepp_logan_volume
from cbct.simulation.motion import RigidMotion, rotation_vectors


@pytest.fixture(scope="module")
def scan_setup():
    """A 48³ Shepp-Logan head of 1 mm voxels, 120 views of 64 × 96 pixels, its static projections and FDK."""
    geom = cbct.ConeGeometry.circular(
        dso=400.0, dsd=600.0, detector_shape=(64, 96), detector_pixel_size=1.2, volume_shape=48, voxel_size=1.0,
        n_views=120,
    )
    volume = np.asarray(shepp_logan_volume(geom.volume, half_size=20.0), np.float32)
    static = cbct.project(volume, geom)
    reference = cbct.fdk(static, geom, filter="hann")
    return geom, volume, reference


def _fov(shape: tuple[int, int, int], radius: float) -> np.ndarray:
    y, x = np.mgrid[: shape[1], : shape[2]]
    c = (shape[1] - 1) / 2
    return np.broadcast_to(((x - c) ** 2 + (y - c) ** 2) <= radius**2, shape)


def test_bin_scan_matches_projection_with_the_binned_geometry(scan_setup):
    geom, volume, _ = scan_setup
    volume = ndimage.gaussian_filter(volume, 2.0)  # smooth, so that 2 mm voxels represent it well
    p = cbct.project(volume, geom)
    binned, small = bin_scan(p, geom, 2)
    assert binned.shape == (geom.n_views, 32, 48) and small.detector_shape == (32, 48)
    assert small.volume.shape == (24, 24, 24) and small.volume.voxel_size == (2.0, 2.0, 2.0)
    coarse = volume.reshape(24, 2, 24, 2, 24, 2).mean(axis=(1, 3, 5))
    reprojected = cbct.project(coarse, small)
    rel = np.linalg.norm(reprojected - binned) / np.linalg.norm(binned)
    assert rel < 0.03, rel


def test_bin_scan_odd_detector_keeps_the_centre():
    geom = cbct.ConeGeometry.circular(dso=400.0, dsd=600.0, detector_shape=(9, 11), detector_pixel_size=1.0, volume_shape=8, voxel_size=1.0, n_views=3)
    _, small = bin_scan(np.zeros((3, 9, 11), np.float32), geom, 2)
    # pixel (0, 0) of the binned detector sits at the middle of original pixels 0..1 in each direction
    corner = geom.detector_centres + (0.5 - 4.0) * geom.v_vectors + (0.5 - 5.0) * geom.u_vectors
    small_corner = small.detector_centres - 1.5 * small.v_vectors - 2.0 * small.u_vectors
    np.testing.assert_allclose(small_corner, corner, atol=1e-9)


def test_interpolate_poses_hits_the_group_centres_and_holds_beyond():
    params = np.array([[0.0] * 6, [1.0] * 6, [3.0] * 6])
    out = interpolate_poses(params, np.array([2.0, 6.0, 10.0]), 13)
    np.testing.assert_allclose(out[[2, 6, 10], 0], [0.0, 1.0, 3.0])
    np.testing.assert_allclose(out[4, 0], 0.5)
    np.testing.assert_allclose(out[:2, 0], 0.0)
    np.testing.assert_allclose(out[11:, 0], 3.0)


def test_estimation_undoes_a_jerk(scan_setup):
    geom, volume, reference = scan_setup
    n = geom.n_views
    step = (np.arange(n) >= 70).astype(float) - 50 / n  # a jerk at view 70, mean pose zero
    rotvecs = np.outer(step, np.radians([0.0, 0.0, 1.5]))
    translations = np.outer(step, [1.5, -1.0, 0.8])
    motion = RigidMotion.from_vectors(rotvecs, translations, pivot=(0.0, -40.0, 0.0))
    moving = cbct.project(volume, motion.apply(geom))
    corrupted = cbct.fdk(moving, geom, filter="hann")
    cfg = MotionEstimationConfig()  # the defaults: the shipped settings
    estimated = estimate_rigid_motion(moving, geom, cfg)
    compensated = cbct.fdk(moving, estimated.apply(geom), filter="hann")
    mask = _fov(reference.shape, 18)
    rng = float(reference.max() - reference.min())
    before = psnr(corrupted[mask], reference[mask], data_range=rng)
    after = psnr(compensated[mask], reference[mask], data_range=rng)
    assert after > before + 2.5, (before, after)  # measured: 30.6 -> 34.1 dB; the true motion gives 35.0 dB
    # the 1.5° turn about z between the two poses is recovered
    yaw = np.degrees(rotation_vectors(estimated.rotations)[:, 2])
    turn = yaw[90:115].mean() - yaw[5:60].mean()
    assert abs(turn - 1.5) < 0.4, turn


def test_estimation_of_a_static_scan_is_near_identity(scan_setup):
    geom, volume, reference = scan_setup
    static = cbct.project(volume, geom)
    estimated = estimate_rigid_motion(static, geom, MotionEstimationConfig(groups=(8,), binning=2))
    assert np.degrees(np.linalg.norm(estimated.rotation_vectors(), axis=1)).max() < 0.1
    compensated = cbct.fdk(static, estimated.apply(geom), filter="hann")
    mask = _fov(reference.shape, 18)
    assert psnr(compensated[mask], reference[mask], data_range=float(reference.max() - reference.min())) > 40.0


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="groups"):
        MotionEstimationConfig(groups=())
    with pytest.raises(ValueError, match="prior"):
        MotionEstimationConfig(prior=-1.0)
    with pytest.raises(ValueError, match="unknown motion estimation keys"):
        MotionEstimationConfig.from_dict({"n_group": 3})
    assert MotionEstimationConfig.from_dict(MotionEstimationConfig(groups=[4, 8]).to_dict()).groups == (4, 8)


def test_estimation_rejects_wrong_shapes(scan_setup):
    geom, _, _ = scan_setup
    with pytest.raises(ValueError, match="projections must have shape"):
        estimate_rigid_motion(np.zeros((3, 4, 5), np.float32), geom)
    with pytest.raises(ValueError, match="more groups"):
        estimate_rigid_motion(np.zeros(geom.projection_shape, np.float32), geom, MotionEstimationConfig(groups=(500,)))

