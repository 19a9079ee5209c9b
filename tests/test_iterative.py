"""cbct.iterative and its TIGRE names: residuals that fall, known solutions reached, CGLS against a dense solve."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
import cbct.tigre as tigre
import cbct.tigre.algorithms as algs
from cbct.iterative import asd_pocs, cgls, fista_tv, os_sart, sart, sirt, total_variation, tv_denoise, view_blocks

pytestmark = pytest.mark.usefixtures("one_numba_thread")


def tiny(n=8, views=16, det=12):
    return cbct.ConeGeometry.circular(dso=150.0, dsd=250.0, detector_shape=(det, det), detector_pixel_size=1.5,
                                      volume_shape=n, voxel_size=1.0, n_views=views)


def blob(n=8):
    """A smooth object (Gaussian on a constant): its error is not dominated by the weakly seen fine scales."""
    z, y, x = np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij")
    return (0.02 * np.exp(-(x**2 + y**2 + z**2) / 12) + 0.01).astype(np.float32)


@pytest.fixture
def problem():
    g = tiny()
    x = blob()
    return g, x, cbct.project(x, g)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_sirt_lowers_its_residual_every_iteration(problem):
    g, x, b = problem
    res = sirt(b, g, 30, residuals=True, lmbda_red=1.0)
    assert res.residuals.shape == (30,)
    assert np.all(np.diff(res.residuals) < 0)
    assert res.residuals[-1] < 0.1 * res.residuals[0]


@pytest.mark.parametrize("method, kwargs, niter, tol", [
    (sirt, dict(lmbda_red=1.0), 60, 1e-3),
    (os_sart, dict(blocksize=4, lmbda_red=1.0), 30, 2e-3),
    (os_sart, dict(blocksize=4, order="angular", lmbda_red=1.0), 30, 2e-3),
    (sart, dict(lmbda_red=1.0, order="random", rng=3), 15, 2e-3),
    (cgls, {}, 30, 2e-4),
    (fista_tv, dict(tv_weight=0.0), 100, 2e-4),
])
def test_reaches_the_known_solution_of_a_consistent_problem(problem, method, kwargs, niter, tol):
    g, x, b = problem
    res = method(b, g, niter, **kwargs)
    assert res.volume.dtype == np.float32 and res.volume.shape == x.shape
    assert rel(res.volume, x) < tol


def test_cgls_matches_a_dense_least_squares_solve(rng):
    g = tiny(n=4, views=20, det=8)  # condition number 26
    n = int(np.prod(g.volume.shape))
    eye = np.eye(n, dtype=np.float32).reshape(n, *g.volume.shape)
    a = np.stack([cbct.project(e, g).ravel() for e in eye], axis=1).astype(np.float64)  # dense A, column by column
    b = (a @ rng.random(n) + 0.05 * rng.standard_normal(a.shape[0])).astype(np.float32)  # inconsistent data
    expected, *_ = np.linalg.lstsq(a, b.astype(np.float64), rcond=None)
    res = cgls(b.reshape(g.projection_shape), g, 60)
    assert rel(res.volume.ravel().astype(np.float64), expected) < 1e-5
    assert np.all(np.diff(res.residuals) <= 1e-6 * res.residuals[0])  # CGLS never raises ||Ax - b||
    assert res.residuals[-1] == pytest.approx(np.linalg.norm(a @ expected - b), rel=1e-3)


def test_tv_methods_on_sparse_views_beat_least_squares(rng):
    g = tiny(n=12, views=6, det=16)
    x = np.zeros(g.volume.shape, np.float32)
    x[3:9, 3:9, 3:9] = 0.02
    x[5:7, 4:8, 5:7] = 0.04  # piecewise constant: what TV is for
    b = cbct.project(x, g)
    ls = cgls(b, g, 20).volume
    fista = fista_tv(b, g, 60, tv_weight=0.05, residuals=True)
    pocs = asd_pocs(b, g, 20, blocksize=3, residuals=True)
    assert rel(fista.volume, x) < rel(ls, x) and rel(pocs.volume, x) < rel(ls, x)
    assert fista.residuals[-1] < 0.5 * fista.residuals[0] and pocs.residuals[-1] < 0.5 * pocs.residuals[0]
    assert total_variation(pocs.volume) < total_variation(os_sart(b, g, 20, blocksize=3).volume)


def test_tv_denoise_lowers_the_rof_objective(rng):
    f = rng.random((6, 7, 8)).astype(np.float32)
    u, dual = tv_denoise(f, 0.3, 50)
    assert dual.shape == (3, 6, 7, 8)
    assert 0.5 * np.sum((u - f) ** 2) + 0.3 * total_variation(u) < 0.3 * total_variation(f)
    np.testing.assert_array_equal(tv_denoise(f, 0.0)[0], f)
    flat = tv_denoise(f[:1], 0.3, 10)[0]  # a single slice (TIGRE's 2-D case) works
    assert flat.shape == (1, 7, 8)


def test_view_blocks_and_argument_checks(problem):
    g, x, b = problem
    blocks = view_blocks(g, 5, "angular")
    assert sorted(np.concatenate(blocks).tolist()) == list(range(16)) and len(blocks) == 4
    assert [len(bl) for bl in view_blocks(g, 5)] == [5, 5, 5, 1]
    with pytest.raises(ValueError, match="order must be"):
        view_blocks(g, 5, "shuffled")
    with pytest.raises(ValueError, match="lmbda must be in"):
        os_sart(b, g, 1, lmbda=2.5)
    with pytest.raises(ValueError, match="projections must have shape"):
        sirt(b[:3], g, 1)
    with pytest.raises(ValueError, match="niter"):
        cgls(b, g, -1)
    with pytest.raises(ValueError, match="init must have shape"):
        os_sart(b, g, 1, init=np.zeros((3, 3, 3), np.float32))


def tigre_geo():
    geo = tigre.geometry()
    geo.DSD, geo.DSO = 250.0, 150.0
    geo.nDetector, geo.dDetector = np.array([12, 12]), np.array([1.5, 1.5])
    geo.sDetector = geo.nDetector * geo.dDetector
    geo.nVoxel, geo.dVoxel = np.array([8, 8, 8]), np.array([1.0, 1.0, 1.0])
    geo.sVoxel = geo.nVoxel * geo.dVoxel
    return geo


def test_tigre_names_arguments_and_returns():
    geo = tigre_geo()
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    x = blob()
    proj = tigre.Ax(x, geo, angles)
    img, l2 = algs.sirt(proj, geo, angles, 5, lmbda=1, lmbda_red=0.999, verbose=False, computel2=True)
    assert img.shape == (8, 8, 8) and l2.shape == (1, 5) and np.all(np.diff(l2[0]) < 0)
    img, q = algs.sart(proj, geo, angles, 3, Quameasopts=["RMSE", "SSD"], computel2=True)
    assert q.shape == (3, 3)  # l2, RMSE, SSD
    img = algs.ossart(proj, geo, angles, 20, blocksize=4, OrderStrategy="angularDistance")
    assert rel(img, x) < 0.01
    img = algs.ossart(proj, geo, angles, 2, blocksize=4, OrderStrategy="random", init="FDK", noneg=False)
    img, l2 = algs.cgls(proj, geo, angles, 10, computel2=True)
    assert l2.shape == (1, 10) and rel(img, x) < 0.01
    img = algs.fista(proj, geo, angles, 5, tviter=5, tvlambda=0.01, init="image", InitImg=x)
    assert img.shape == (8, 8, 8)
    img, l2 = algs.asd_pocs(proj, geo, angles, 3, blocksize=8, tviter=5, computel2=True)
    assert l2.shape == (1, 3)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['lambda'\\]"):
        algs.sirt(proj, geo, angles, 2, **{"lambda": 1})
    with pytest.raises(ValueError, match="OrderStrategy"):
        algs.ossart(proj, geo, angles, 2, OrderStrategy="weird")
    with pytest.raises(ValueError, match="Quameasopts"):
        algs.sirt(proj, geo, angles, 2, Quameasopts=["PSNR"])
    with pytest.raises(NotImplementedError, match="multigrid"):
        algs.sirt(proj, geo, angles, 2, init="multigrid")


@pytest.mark.parametrize("method, kwargs", [(os_sart, dict(blocksize=4)), (cgls, {}), (fista_tv, dict(tv_weight=0.01))])
def test_gpu_arrays_give_the_cpu_result(emulated_cp, problem, method, kwargs):
    cp = emulated_cp
    g, x, b = problem
    cpu = method(b, g, 4, **kwargs).volume
    gpu = method(cp.asarray(b), g, 4, **kwargs).volume
    assert isinstance(gpu, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(gpu), cpu, rtol=2e-3, atol=2e-5)
