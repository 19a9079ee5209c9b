"""The tuned CPU kernels agree with their plain forms: FDK backprojection (fast z-invariant path vs general path)
and the Joseph projector with its exact adjoint."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
from cbct.cpu import joseph, voxel_backprojection as vbp


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).astype(np.float64)) / np.linalg.norm(b.astype(np.float64)))


def geometry(**kw) -> cbct.ConeGeometry:
    args = dict(dso=300.0, dsd=450.0, detector_shape=(40, 52), detector_pixel_size=(1.3, 1.1), volume_shape=(37, 34, 41),
                voxel_size=(0.9, 1.0, 0.8), n_views=45, detector_offset=(2.5, -4.0), volume_offset=(1.5, -2.0, 3.0))
    args.update(kw)
    return cbct.ConeGeometry.circular(**args)


def general_path(proj: np.ndarray, geom: cbct.ConeGeometry, starts=None) -> np.ndarray:
    """The general kernel on float64 matrices (what the fast path must reproduce)."""
    if starts is None:
        starts = np.array([0, geom.n_views])
    n, nv, nu = proj.shape
    padded = np.zeros((n, nv + 3, nu + 3), proj.dtype)
    padded[:, 1:-2, 1:-2] = proj
    out = np.zeros((len(starts) - 1, *geom.volume.shape), proj.dtype)
    vbp._fdk_backproject_kernel(padded, vbp.index_projection_matrices(geom), np.asarray(starts, np.int64), out)
    return out


def test_circular_scans_take_the_fast_path_and_motion_does_not() -> None:
    geom = geometry()
    assert vbp.is_z_invariant(vbp.index_projection_matrices(geom), geom.volume.shape)
    rng = np.random.default_rng(0)
    tilt = np.stack([np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
                     for a in rng.normal(scale=0.02, size=geom.n_views)])
    moved = geom.with_rigid_motion(tilt, np.zeros((geom.n_views, 3)))
    assert not vbp.is_z_invariant(vbp.index_projection_matrices(moved), moved.volume.shape)


@pytest.mark.parametrize("kw", [dict(), dict(n_views=70, arc=np.radians(230.0)), dict(volume_shape=(3, 5, 64))])
def test_fast_fdk_backprojection_equals_the_general_kernel(kw) -> None:
    geom = geometry(**kw)
    proj = np.random.default_rng(1).standard_normal(geom.projection_shape)
    fast = vbp.backproject_fdk(proj, geom)
    np.testing.assert_allclose(fast, general_path(proj, geom), rtol=1e-11, atol=1e-11 * np.abs(fast).max())
    fast32 = vbp.backproject_fdk(proj.astype(np.float32), geom)
    assert fast32.dtype == np.float32
    assert rel(fast32, fast) < 1e-5  # random projections: sums with cancellation


def test_fast_path_segments_even_uneven_and_empty() -> None:
    geom = geometry(n_views=75)  # not a multiple of the view block
    proj = np.random.default_rng(2).standard_normal(geom.projection_shape)
    starts = np.array([0, 3, 3, 40, 75])
    seg = vbp.backproject_fdk(proj, geom, starts)
    assert seg.shape == (4, *geom.volume.shape)
    np.testing.assert_allclose(seg, general_path(proj, geom, starts), rtol=1e-11, atol=1e-11 * np.abs(seg).max())
    assert not seg[1].any()
    full = vbp.backproject_fdk(proj, geom)[0]
    np.testing.assert_allclose(seg.sum(axis=0), full, rtol=0, atol=1e-12 * np.abs(full).max())


@pytest.mark.parametrize("tilted", [False, True])
def test_fdk_backprojection_of_linear_projections_is_exact(tilted: bool) -> None:
    """Both paths: a projection linear in (iu, iv) backprojects to (a + b u + c v) / w**2 wherever the voxel
    projects inside the detector (u, v, w from the projection matrices, in NumPy)."""
    geom = geometry(n_views=7)
    if tilted:
        angles = np.random.default_rng(6).normal(scale=0.05, size=geom.n_views)
        rot = np.stack([np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) for a in angles])
        geom = geom.with_rigid_motion(rot, np.zeros((geom.n_views, 3)))
    mats = vbp.index_projection_matrices(geom)
    assert vbp.is_z_invariant(mats, geom.volume.shape) != tilted
    nv, nu = geom.detector_shape
    iv, iu = np.meshgrid(np.arange(nv), np.arange(nu), indexing="ij")
    coef = np.array([0.5, 0.01, -0.02])
    proj = np.broadcast_to(coef[0] + coef[1] * iu + coef[2] * iv, geom.projection_shape).copy()
    bp = vbp.backproject_fdk(proj, geom)[0]
    k, j, i = np.meshgrid(*(np.arange(n) for n in geom.volume.shape), indexing="ij")
    h = np.einsum("nrc,czyx->nrzyx", mats, np.stack([i, j, k, np.ones_like(i)]))
    u, v, w = h[:, 0] / h[:, 2], h[:, 1] / h[:, 2], h[:, 2]
    inside = np.all((u >= 0) & (u <= nu - 1) & (v >= 0) & (v <= nv - 1), axis=0)
    assert inside.mean() > 0.5
    expected = np.sum((coef[0] + coef[1] * u + coef[2] * v) / w**2, axis=0)
    np.testing.assert_allclose(bp[inside], expected[inside], rtol=1e-9)


def test_joseph_adjoint_is_exact() -> None:
    geom = geometry(n_views=20)
    rng = np.random.default_rng(4)
    x = rng.random(geom.volume.shape)
    y = rng.random(geom.projection_shape)
    lhs = float(np.vdot(joseph.project(x, geom), y))
    rhs = float(np.vdot(x, joseph.backproject_matched(y, geom)))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_joseph_float32_matches_float64() -> None:
    geom = geometry(n_views=20)
    x = np.random.default_rng(5).random(geom.volume.shape)
    p64 = joseph.project(x, geom)
    p32 = joseph.project(x.astype(np.float32), geom)
    assert p32.dtype == np.float32
    assert rel(p32, p64) < 1e-5


def general_projection(volume: np.ndarray, geom: cbct.ConeGeometry) -> np.ndarray:
    """The one-ray-at-a-time kernel (what the column kernel must reproduce)."""
    pad = joseph.PAD
    padded = np.zeros(tuple(n + 2 * pad for n in volume.shape), dtype=volume.dtype)
    padded[pad:-pad, pad:-pad, pad:-pad] = volume
    shape, spacing = joseph._grid_args(geom)
    out = np.empty(geom.projection_shape, dtype=volume.dtype)
    joseph._project_kernel(padded, joseph.ray_parameters(geom), shape, spacing, out)
    return out


PROJECTOR_CASES = {
    "offsets": dict(),
    "odd rows (central ray flat)": dict(detector_shape=(41, 53), detector_offset=(0.0, 0.0), volume_offset=(0.0, 0.0, 0.0)),
    # a detector taller than 2 DSD: its outer rows have rays steeper than 45 degrees (z-dominant)
    "steep cone": dict(dso=60.0, dsd=90.0, detector_shape=(61, 24), detector_pixel_size=(4.0, 2.0),
                       volume_shape=16, voxel_size=2.0, detector_offset=(0.0, 0.0), volume_offset=(0.0, 0.0, 0.0)),
}


@pytest.mark.parametrize("case", list(PROJECTOR_CASES))
def test_column_projector_equals_the_general_kernel(case: str) -> None:
    geom = geometry(n_views=16, **PROJECTOR_CASES[case])
    assert joseph.has_vertical_columns(joseph.ray_parameters(geom), geom.detector_shape[0])
    x = np.random.default_rng(7).random(geom.volume.shape)
    fast = joseph.project(x, geom)
    ref = general_projection(x, geom)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(fast, ref, rtol=1e-11, atol=1e-11 * np.abs(ref).max())


def test_tilted_detector_uses_the_general_projector() -> None:
    geom = geometry(n_views=8)
    rot = np.stack([np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
                    for a in np.linspace(-0.05, 0.05, geom.n_views)])
    tilted = geom.with_rigid_motion(rot, np.zeros((geom.n_views, 3)))
    assert not joseph.has_vertical_columns(joseph.ray_parameters(tilted), tilted.detector_shape[0])
    x = np.random.default_rng(8).random(tilted.volume.shape)
    np.testing.assert_array_equal(joseph.project(x, tilted), general_projection(x, tilted))
    y = np.random.default_rng(9).random(tilted.projection_shape)
    lhs = float(np.vdot(joseph.project(x, tilted), y))
    assert lhs == pytest.approx(float(np.vdot(x, joseph.backproject_matched(y, tilted))), rel=1e-10)
