"""A known jerk of truncated anatomy is recovered within 0.3° and 0.3 mm (cbct.motion_correction, cbct.motion_jerk).

The scan is a training head (the project's dental phantom inside a bone shell, ~185 mm across, as
``benchmarks/motion_estimation.py``'s ``training_head``, another seed and another jerk than the ones the refinement
was developed on) seen through a 90 mm field of view by a laterally truncated detector.
"""

from __future__ import annotations

import numpy as np
import pytest

import cbct
from cbct.geometry import VolumeGrid
from cbct.motion_correction import correct_motion, fov_points
from cbct.motion_jerk import about_mean_pose, motion_parameters, step_fit, step_motion
from cbct.operators import project
from cbct.phantoms.dental import dental_phantom
from cbct.phantoms.ellipsoids import Ellipsoid, voxelize
from cbct.simulation.motion import RigidMotion


def _head(seed: int) -> tuple[np.ndarray, VolumeGrid]:
    grid = VolumeGrid((80, 192, 192), 1.0)
    shell = [Ellipsoid(0.04, (0, 5, 0), (92, 90, 140)), Ellipsoid(-0.04, (0, 5, 0), (86, 84, 134))]
    return (dental_phantom(grid, rng=seed, scale=1.0) + voxelize(shell, grid)).astype(np.float32), grid


def _errors(estimate: RigidMotion, true: RigidMotion, points: np.ndarray) -> tuple[float, float, float]:
    """Largest over views of: the rotation angle of ``R_est R_trueᵀ`` (degrees), the distance between where the two
    motions put the first point (mm), and the same over all the points (mm)."""
    rel = estimate.rotations @ np.transpose(true.rotations, (0, 2, 1))
    angle = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)))

    def moved(m: RigidMotion) -> np.ndarray:
        return np.einsum("nij,pj->npi", m.rotations, points - m.pivot) + m.pivot + m.translations[:, None]

    gap = np.linalg.norm(moved(estimate) - moved(true), axis=2)
    return float(angle.max()), float(gap[:, 0].max()), float(gap.max())


@pytest.fixture(scope="module")
def truncated_head():
    volume, grid = _head(seed=7)
    geom = cbct.ConeGeometry.circular(dso=400.0, dsd=600.0, detector_shape=(48, 96), detector_pixel_size=90 / 64,
                                      volume_shape=(40, 64, 64), voxel_size=90 / 64, n_views=120)
    return volume, grid, geom


def test_a_known_jerk_is_recovered_within_a_third_of_a_degree_and_a_third_of_a_millimetre(truncated_head):
    volume, grid, geom = truncated_head
    step = (np.arange(geom.n_views) >= 48).astype(float)
    true = RigidMotion.from_vectors(np.outer(step, np.radians([0.8, -0.6, 1.0])), np.outer(step, [-1.2, 1.0, 0.6]),
                                    pivot=(20.0, 70.0, -50.0))  # 1.41° about a pivot outside the field of view
    moving = project(volume, true.apply(geom.with_volume(grid)))
    assert moving[:, :, :2].max() > 0.2 * moving.max()  # truncated: the rows do not reach air
    result = correct_motion(moving, geom)
    assert result.moved and result.pose == "first view" and result.report["jerk"]["used"]
    centre = np.asarray(geom.volume.offset[::-1], np.float64)[None]
    rotation_deg, centre_mm, rim_mm = _errors(result.motion, true, np.concatenate([centre, fov_points(geom)]))
    # per view: rotation, displacement of the field of view's centre (the translation about it) and of its rim
    assert rotation_deg <= 0.3 and centre_mm <= 0.3 and rim_mm <= 0.3, (rotation_deg, centre_mm, rim_mm)

    still = project(volume, geom.with_volume(grid))
    kept = correct_motion(still, geom)
    assert not kept.moved and kept.geometry is geom and kept.report["jerk"] == {"used": False}
    np.testing.assert_array_equal(cbct.fdk(still, kept.geometry, filter="hann"), cbct.fdk(still, geom, filter="hann"))


def test_step_fit_finds_the_change_point_and_tells_a_step_from_a_drift():
    rng = np.random.default_rng(0)
    params = np.zeros((90, 6))
    params[33:] = [0.5, -0.2, 0.1, 1.0, 2.0, -0.5]
    k, fit = step_fit(params + rng.normal(0, 0.01, params.shape), min_segment=5)
    assert k == 33 and fit > 0.99
    drift = np.outer(np.linspace(0, 1, 90), [0.5, -0.2, 0.1, 1.0, 2.0, -0.5])
    assert 0.7 < step_fit(drift, min_segment=5)[1] < 0.8
    assert step_fit(np.zeros((90, 6)), min_segment=5)[1] == 0.0


def test_step_motion_about_its_mean_pose_is_the_same_motion_seen_from_the_first_view():
    from cbct.motion_correction import relative_to_pose

    pivot = np.array([1.0, -2.0, 3.0])
    motion = step_motion(np.array([0.6, -0.3, 0.9, 1.5, -1.0, 0.4]), 40, 100, 45.0, pivot)
    centred = about_mean_pose(motion, 45.0)
    back = relative_to_pose(centred, "first")[0]
    np.testing.assert_allclose(back.rotations, motion.rotations, atol=1e-12)
    np.testing.assert_allclose(back.translations, motion.translations, atol=1e-12)
    np.testing.assert_allclose(motion_parameters(motion, 45.0, pivot)[40:], [[0.6, -0.3, 0.9, 1.5, -1.0, 0.4]] * 60,
                               atol=1e-12)
