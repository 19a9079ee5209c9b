"""Sparse-view simulation, angular bracketing and the linear-interpolation baseline."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
from cbct.angles import bracket_views, check_target_angles, dense_angles, geometry_at_angles, is_full_circle, plan_completion
from cbct.bbc.baselines import linear_completion
from cbct.phantoms import shepp_logan, line_integrals
from cbct.pipeline.state import PipelineState
from cbct.simulation.sparse import sparse_scan, sparse_views, uneven_indices


@pytest.fixture
def scan(small_geometry):
    return line_integrals(shepp_logan(28.0), small_geometry), small_geometry


def test_every_step_th_view(scan):
    proj, geom = scan
    for step in (4, 8):
        sp, sg, kept = sparse_views(proj, geom, step=step)
        assert np.array_equal(kept, np.arange(0, geom.n_views, step))
        assert sp.shape == (len(kept), *geom.detector_shape)
        assert np.array_equal(sp, proj[kept])
        assert np.array_equal(sg.angles, geom.angles[kept])
        assert np.array_equal(sg.vectors, geom.vectors[kept])


def test_uneven_keep_sorted_and_checked(scan):
    proj, geom = scan
    sp, sg, kept = sparse_views(proj, geom, keep=[30, 0, 7, 11, 60])
    assert list(kept) == [0, 7, 11, 30, 60]
    assert np.array_equal(sp, proj[[0, 7, 11, 30, 60]])
    with pytest.raises(ValueError, match="keep"):
        sparse_views(proj, geom, keep=[0, 0, 5])
    with pytest.raises(ValueError, match="keep"):
        sparse_views(proj, geom, keep=[0, geom.n_views])
    with pytest.raises(ValueError, match="exactly one"):
        sparse_views(proj, geom, step=4, keep=[0, 1])
    with pytest.raises(ValueError, match="step"):
        sparse_views(proj, geom, step=0)
    with pytest.raises(ValueError, match="projections"):
        sparse_views(proj[:10], geom, step=4)


def test_uneven_indices_reproducible():
    a = uneven_indices(360, 8, rng=3)
    b = uneven_indices(360, 8, rng=3)
    assert np.array_equal(a, b) and a[0] == 0 and np.all(np.diff(a) >= 1) and a[-1] < 360
    assert 5 < np.mean(np.diff(a)) < 11
    assert len(set(np.diff(a))) > 3  # really uneven


def test_sparse_fdk_is_correctly_weighted(scan):
    """FDK of every 4th view keeps the mean attenuation of the full-view reconstruction (angular weights x4)."""
    proj, geom = scan
    full = cbct.fdk(proj, geom)
    sp, sg, _ = sparse_views(proj, geom, step=4)
    sparse = cbct.fdk(sp, sg)
    centre = (slice(28, 36), slice(16, 48), slice(16, 48))
    assert abs(sparse[centre].mean() / full[centre].mean() - 1) < 0.02


def test_full_circle_detection():
    full = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    assert is_full_circle(full) and is_full_circle(full[::8]) and is_full_circle(full[::7])
    assert not is_full_circle(np.linspace(0, np.radians(200), 100))
    assert is_full_circle(-full)  # clockwise rotation


def test_bracket_wraps_around_full_circle():
    acq = np.radians([0.0, 90.0, 180.0, 270.0])
    ia, ib, t = bracket_views(acq, np.radians([45.0, 315.0, 270.0, 359.0, 360.0]))
    assert list(ia) == [0, 3, 3, 3, 0] and list(ib) == [1, 0, 3, 0, 0]
    np.testing.assert_allclose(t, [0.5, 0.5, 0.0, 89 / 90, 0.0], atol=1e-9)
    # no wrap-around on a short scan: beyond the last view, the nearer end view
    short = np.radians(np.linspace(0, 200, 11))
    ia, ib, t = bracket_views(short, np.radians([210.0, 350.0, 10.0]))
    assert list(ia) == [10, 0, 0] and list(ib) == [10, 0, 1]
    np.testing.assert_allclose(t, [0, 0, 0.5])


def test_dense_angles_reproduce_the_full_scan(small_geometry):
    for step in (4, 8, 7):
        _, sg, kept = sparse_views(np.zeros(small_geometry.projection_shape, np.float32), small_geometry, step=step)
        dense = dense_angles(sg.angles, step)
        if small_geometry.n_views % step == 0:
            np.testing.assert_allclose(dense, small_geometry.angles, atol=1e-9)
        assert np.all(np.diff(dense) > 0) and dense[-1] < 2 * np.pi


def test_geometry_at_angles_matches_circular(small_geometry):
    sg = small_geometry[::8]
    rebuilt = geometry_at_angles(sg, small_geometry.angles)
    np.testing.assert_allclose(rebuilt.vectors, small_geometry.vectors, atol=1e-9)
    np.testing.assert_allclose(rebuilt.angles, small_geometry.angles)


def test_linear_completion_wraps_around(scan):
    proj, geom = scan
    sp, sg, kept = sparse_views(proj, geom, step=8)  # 90 views: kept 0, 8, ..., 88; 89 lies in the wrap gap
    dense, dg = linear_completion(sp, sg, target=geom)
    assert dense.shape == proj.shape and dg == geom
    assert np.array_equal(dense[kept], proj[kept])
    # view 89 lies between view 88 and view 0 (one turn later): t = 1/2
    np.testing.assert_allclose(dense[89], 0.5 * (proj[88] + proj[0]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dense[4], 0.5 * (proj[0] + proj[8]), rtol=1e-6, atol=1e-6)
    # linear interpolation is closer to the truth than the nearest acquired view
    missing = np.setdiff1d(np.arange(geom.n_views), kept)
    assert np.mean((dense[missing] - proj[missing]) ** 2) < np.mean((proj[(missing // 8) * 8] - proj[missing]) ** 2)
    # and its FDK is closer to the full-view FDK than sparse FDK
    ref = cbct.fdk(proj, geom)
    assert np.mean((cbct.fdk(dense, dg) - ref) ** 2) < np.mean((cbct.fdk(sp, sg) - ref) ** 2)


def test_plan_with_factor(small_geometry):
    sg = small_geometry[::4]
    plan = plan_completion(sg, factor=4)
    # 23 acquired views: 22 gaps of 16 degrees filled with 4 intervals, the 8 degree wrap gap with 2
    np.testing.assert_allclose(plan.geometry.angles, small_geometry.angles, atol=1e-9)
    assert plan.full_circle and plan.acquired.sum() == sg.n_views
    assert np.all((plan.t >= 0) & (plan.t < 1))
    with pytest.raises(ValueError, match="exactly one"):
        plan_completion(sg)


# ---------------------------------------------------------------------------------------------------- target angles
def _patterns(n_views: int) -> dict[str, np.ndarray]:
    """Acquired view indices of a full circle of ``n_views``: even, uneven, random, even with a hole (deg 100-132)."""
    deg = np.arange(n_views) * 360.0 / n_views
    return {
        "even": np.arange(0, n_views, 8),
        "uneven": uneven_indices(n_views, 8, rng=1),
        "random": np.sort(np.random.default_rng(2).choice(n_views, n_views // 8, replace=False)),
        "hole": np.flatnonzero((np.arange(n_views) % 8 == 0) & ~((deg >= 100) & (deg < 132))),
        "hole at the wrap": np.flatnonzero((np.arange(n_views) % 4 == 0) & (deg < 300)),
    }


@pytest.mark.parametrize("pattern", ["even", "uneven", "random", "hole", "hole at the wrap"])
def test_completion_reaches_exactly_the_target_angles(pattern):
    geom = cbct.ConeGeometry.circular(dso=400.0, dsd=600.0, detector_shape=(8, 16), detector_pixel_size=1.2,
                                      volume_shape=8, voxel_size=1.0, n_views=360, start_angle=0.25)
    kept = _patterns(360)[pattern]
    sg = geom[kept]
    plan = plan_completion(sg, angles=geom.angles)
    assert plan.geometry.n_views == 360 and plan.full_circle
    np.testing.assert_allclose(plan.geometry.angles, geom.angles)
    np.testing.assert_allclose(plan.geometry.vectors, geom.vectors, atol=1e-9)
    assert np.array_equal(np.flatnonzero(plan.acquired), kept)
    assert np.array_equal(plan.prev[kept], np.arange(kept.size))
    # every synthesised view lies between the acquired views around it (wrapping around the circle)
    miss = plan.missing
    after = np.searchsorted(kept, miss)
    np.testing.assert_array_equal(plan.prev[miss], (after - 1) % kept.size)
    np.testing.assert_array_equal(plan.next[miss], after % kept.size)
    # a target geometry gives the same plan
    again = plan_completion(sg, target=geom)
    assert np.array_equal(again.prev, plan.prev) and np.allclose(again.t, plan.t)


def test_target_angles_must_hold_the_acquired_ones(small_geometry):
    sg = small_geometry[::4]
    with pytest.raises(ValueError, match=r"angles do not contain 11 of the 23 acquired view angles .* e\.g\. 16\.0000"):
        plan_completion(sg, angles=small_geometry.angles[::8])
    with pytest.raises(ValueError, match="target geometry angles do not contain"):
        plan_completion(sg, target=small_geometry[1:])
    with pytest.raises(ValueError, match="distinct"):
        plan_completion(sg, angles=np.append(small_geometry.angles, small_geometry.angles[3] + 2 * np.pi))
    with pytest.raises(ValueError, match="1-D"):
        check_target_angles(sg.angles, small_geometry.angles[None])
    with pytest.raises(ValueError, match="finite"):
        check_target_angles(sg.angles, np.append(small_geometry.angles, np.nan))
    # within the tolerance (float32 angles, another turn) the acquired views are found and kept exactly
    approx = (small_geometry.angles.astype(np.float32) + 2 * np.pi).astype(np.float64)
    plan = plan_completion(sg, angles=approx)
    assert plan.acquired.sum() == sg.n_views
    np.testing.assert_array_equal(plan.geometry.vectors[plan.acquired], sg.vectors)


def test_sparse_scan_states_the_missing_views(small_geometry):
    proj = line_integrals(shepp_logan(28.0), small_geometry)
    full = cbct.Scan.from_arrays(small_geometry, projections=proj, metadata={"id": "s"})
    for kw in (dict(step=4), dict(keep=_patterns(90)["random"]), dict(keep=_patterns(90)["hole"])):
        sparse = sparse_scan(full, **kw)
        kept = sparse.metadata["sparse"]["kept_indices"]
        assert sparse.geometry == small_geometry[kept] and np.array_equal(sparse.projections, proj[kept])
        np.testing.assert_array_equal(sparse.target_angles, small_geometry.angles)
        np.testing.assert_array_equal(sparse.missing_views, np.setdiff1d(np.arange(90), kept))
        assert ("sparse_step" in sparse.metadata) == ("step" in kw)
        state = PipelineState.from_scan(sparse)
        np.testing.assert_array_equal(state.extras["target_angles"], small_geometry.angles)
        dense, dg = linear_completion(sparse.projections, sparse.geometry, angles=sparse.target_angles)
        assert dg.n_views == 90 and np.array_equal(dense[kept], proj[kept])
    with pytest.raises(TypeError, match="cbct.Scan"):
        sparse_scan(proj, step=4)


def test_scan_target_angles_are_validated(small_geometry):
    from cbct.scan import Scan, ScanError

    sg = small_geometry[::4]
    proj = np.zeros(sg.projection_shape, np.float32)
    scan = Scan.from_arrays(sg, projections=proj, metadata={"id": "a"}, target_angles=small_geometry.angles)
    assert scan.target_angles.dtype == np.float64 and not scan.target_angles.flags.writeable
    assert "target_angles=<90 angles>" in repr(scan)
    with pytest.raises(ScanError, match=r"scan 'a': target_angles do not contain"):
        Scan.from_arrays(sg, projections=proj, metadata={"id": "a"}, target_angles=small_geometry.angles[1::2])
    with pytest.raises(ScanError, match="target_angles must be real numbers"):
        Scan.from_arrays(sg, projections=proj, target_angles=np.array(["a", "b"]))
    # sparse_step is a shortcut that fills the target; explicit angles win
    step = Scan.from_arrays(sg, projections=proj, metadata={"sparse_step": 4})
    np.testing.assert_allclose(step.target_angles, small_geometry.angles, atol=1e-9)
    assert step.missing_views.size == 90 - sg.n_views
    explicit = Scan.from_arrays(sg, projections=proj, metadata={"sparse_step": 2}, target_angles=small_geometry.angles)
    assert explicit.target_angles.size == 90
    with pytest.raises(ScanError, match="sparse_step"):
        Scan.from_arrays(sg, projections=proj, metadata={"sparse_step": 0})
    assert Scan.from_arrays(sg, projections=proj).target_angles is None
    assert Scan.from_arrays(sg, projections=proj).missing_views.size == 0
