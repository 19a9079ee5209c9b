"""Forward projection, FDK/matched backprojection and segmented backprojection on the CPU."""

import numpy as np
import pytest

import cbct
from cbct.phantoms import Ellipsoid, line_integrals, voxelize


def test_projector_matches_exact_line_integrals(small_geometry):
    g = small_geometry
    ball = [Ellipsoid(0.02, (3.0, -2.0, 1.0), (20.0, 16.0, 18.0)), Ellipsoid(0.01, (-6.0, 5.0, -4.0), (6.0, 7.0, 5.0))]
    vol = voxelize(ball, g.volume, supersample=4)
    ours = cbct.project(vol, g)
    exact = line_integrals(ball, g)
    assert ours.shape == g.projection_shape and ours.dtype == np.float32
    # attenuation mass is conserved; the residual is interpolation blur at the sharp edges
    assert abs(ours.sum() / exact.sum() - 1) < 1e-3
    assert np.linalg.norm(ours - exact) / np.linalg.norm(exact) < 0.03
    smooth = [Ellipsoid(0.002, (2.0, -1.0, 1.0), (r, 0.8 * r, 0.9 * r)) for r in np.linspace(4, 24, 12)]
    ours = cbct.project(voxelize(smooth, g.volume, supersample=4), g)
    exact = line_integrals(smooth, g)
    assert np.linalg.norm(ours - exact) / np.linalg.norm(exact) < 0.012


def test_matched_backprojection_is_the_exact_adjoint():
    g = cbct.ConeGeometry.circular(
        dso=300.0, dsd=500.0, detector_shape=(24, 30), detector_pixel_size=(1.1, 0.9), volume_shape=(14, 18, 22),
        voxel_size=(1.0, 0.8, 1.2), n_views=16, detector_offset=(2.3, -3.1), volume_offset=(1.0, -2.0, 0.5),
    )
    rng = np.random.default_rng(5)
    x = rng.random(g.volume.shape)
    y = rng.random(g.projection_shape)
    lhs = np.vdot(cbct.project(x, g), y)
    rhs = np.vdot(x, cbct.backproject(y, g, weighting="matched"))
    assert abs(lhs - rhs) / abs(lhs) < 1e-5
    # also for a geometry with motion (arbitrary per-view vectors)
    rot = np.stack([np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) for a in np.linspace(0, 0.1, 16)])
    moved = g.with_rigid_motion(rot, rng.normal(0, 1, (16, 3)))
    lhs = np.vdot(cbct.project(x, moved), y)
    rhs = np.vdot(x, cbct.backproject(y, moved, weighting="matched"))
    assert abs(lhs - rhs) / abs(lhs) < 1e-5


def test_fdk_backprojection_interpolates_linear_projections_exactly(small_geometry):
    g = small_geometry[:1]
    nv, nu = g.detector_shape
    iv, iu = np.meshgrid(np.arange(nv), np.arange(nu), indexing="ij")
    proj = (0.5 + 0.01 * iu + 0.02 * iv).astype(np.float64)[None]
    vol = cbct.backproject(proj, g, weighting="fdk")
    # voxel (k, j, i) -> its detector position and depth through the projection matrix
    k, j, i = 40, 20, 33
    world = g.volume.index_to_world() @ [i, j, k, 1.0]
    h = g.projection_matrices()[0] @ world
    u, v, w = h[0] / h[2], h[1] / h[2], h[2]
    np.testing.assert_allclose(vol[k, j, i], (0.5 + 0.01 * u + 0.02 * v) / w**2, rtol=1e-9)


@pytest.mark.parametrize("weighting", ["fdk", "matched"])
def test_segments_sum_to_the_full_backprojection(small_geometry, rng, weighting):
    proj = rng.random(small_geometry.projection_shape, dtype=np.float32)
    full = cbct.backproject(proj, small_geometry, weighting=weighting)
    seg = cbct.segmented_backproject(proj, small_geometry, 4, weighting=weighting)
    assert seg.shape == (4, *small_geometry.volume.shape) and seg.dtype == np.float32
    np.testing.assert_allclose(seg.sum(axis=0), full, rtol=0, atol=2e-6 * np.abs(full).max())
    # each segment is the backprojection of its own views only
    second = cbct.backproject(proj[23:46], small_geometry[23:46], weighting=weighting)
    np.testing.assert_allclose(seg[1], second, rtol=0, atol=1e-6 * np.abs(second).max())


def test_uneven_segments(small_geometry, rng):
    proj = rng.random(small_geometry.projection_shape, dtype=np.float32)
    seg = cbct.segmented_backproject(proj, small_geometry, segment_sizes=[10, 50, 30])
    np.testing.assert_allclose(seg[0], cbct.backproject(proj[:10], small_geometry[:10]), rtol=0, atol=1e-6 * np.abs(seg[0]).max())
    full = cbct.backproject(proj, small_geometry)
    np.testing.assert_allclose(seg.sum(axis=0), full, rtol=0, atol=2e-6 * np.abs(full).max())
    with pytest.raises(ValueError, match="sum to the number of views"):
        cbct.segmented_backproject(proj, small_geometry, segment_sizes=[10, 10])
    with pytest.raises(ValueError, match="n_segments must be an integer"):
        cbct.segmented_backproject(proj, small_geometry, 0)


def test_leading_batch_dimensions(small_geometry, rng):
    g = small_geometry[:8]
    vols = rng.random((2, 3, *g.volume.shape), dtype=np.float32)
    proj = cbct.project(vols, g)
    assert proj.shape == (2, 3, *g.projection_shape)
    np.testing.assert_allclose(proj[1, 2], cbct.project(vols[1, 2], g), rtol=1e-6)
    back = cbct.backproject(proj, g, weighting="matched")
    assert back.shape == vols.shape


def test_bad_inputs_raise_clear_errors(small_geometry):
    g = small_geometry
    vol = np.zeros(g.volume.shape, np.float32)
    with pytest.raises(ValueError, match=r"volume must have shape \(\.\.\., 64, 64, 64\)"):
        cbct.project(vol[:-1], g)
    with pytest.raises(TypeError, match="float32"):
        cbct.project(vol.astype(np.int32), g)
    bad = vol.copy()
    bad[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        cbct.project(bad, g)
    proj = np.zeros(g.projection_shape, np.float32)
    with pytest.raises(ValueError, match="projection shape of the geometry"):
        cbct.backproject(proj[:-1], g)
    with pytest.raises(ValueError, match="weighting must be"):
        cbct.backproject(proj, g, weighting="cosine")
    with pytest.raises(TypeError, match="cbct.ConeGeometry"):
        cbct.project(vol, {"DSO": 1})
    with pytest.raises(TypeError, match="NumPy or CuPy"):
        cbct.project(vol.tolist(), g)
