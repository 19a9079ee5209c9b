"""Total-variation regularised reconstruction: FISTA-TV and ASD-POCS, and the TV tools they use.

TV is isotropic, on voxel differences (forward differences, zero across the border), for NumPy and CuPy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cbct.backend import array_module
from cbct.fdk import fdk
from cbct.geometry import ConeGeometry
from cbct.iterative._common import (
    IterativeResult, log, norm, residual_norm, start_run,
)
from cbct.iterative.art import start_sart
from cbct.operators import backproject, project
from cbct.signatures import borrow_keywords

__all__ = ["fista_tv", "asd_pocs", "tv_gradient", "tv_denoise", "total_variation", "operator_norm_squared"]


def _grad(u):
    """Forward differences of ``u`` (z, y, x) → (3, z, y, x), zero on the last plane of each axis."""
    xp = array_module(u)
    g = xp.zeros((3, *u.shape), dtype=u.dtype)
    g[0, :-1] = u[1:] - u[:-1]
    g[1, :, :-1] = u[:, 1:] - u[:, :-1]
    g[2, :, :, :-1] = u[:, :, 1:] - u[:, :, :-1]
    return g


def _div(p):
    """Discrete divergence, the negative adjoint of :func:`_grad`."""
    xp = array_module(p)
    d = xp.zeros(p.shape[1:], dtype=p.dtype)
    for axis in range(3):
        if p.shape[axis + 1] < 2:
            continue  # a flat axis has no differences
        q = p[axis]
        sl = [slice(None)] * 3
        d_axis = xp.zeros_like(q)
        sl[axis] = slice(0, 1)
        d_axis[tuple(sl)] = q[tuple(sl)]
        inner, prev = list(sl), list(sl)
        inner[axis], prev[axis] = slice(1, -1), slice(0, -2)
        d_axis[tuple(inner)] = q[tuple(inner)] - q[tuple(prev)]
        last, before = list(sl), list(sl)
        last[axis], before[axis] = slice(-1, None), slice(-2, -1)
        d_axis[tuple(last)] = -q[tuple(before)]
        d += d_axis
    return d


def total_variation(u) -> float:
    """Isotropic TV of ``u``: the sum over voxels of the length of its forward-difference gradient."""
    xp = array_module(u)
    return float(xp.sum(xp.sqrt(xp.sum(_grad(u).astype(xp.float64) ** 2, axis=0))))


def tv_gradient(u, eps: float = 1e-8):
    """Gradient of the smoothed TV ``sum sqrt(|grad u|^2 + eps^2)`` with respect to ``u``."""
    xp = array_module(u)
    g = _grad(u)
    mag = xp.sqrt(xp.sum(g * g, axis=0) + u.dtype.type(eps * eps))
    return -_div(g / mag)


def tv_denoise(f, weight: float, n_iter: int = 20, dual=None):
    """Chambolle's projection: ``argmin_u 1/2 ||u - f||^2 + weight * TV(u)``, approximately.

    Args:
        f: (nz, ny, nx) volume (NumPy or CuPy).
        weight: TV weight (same units as ``f``); 0 returns ``f``.
        n_iter: dual iterations.
        dual: (3, nz, ny, nx) dual field to start from (warm start); updated in place and reused when given.

    Returns:
        ``(u, dual)``.
    """
    xp = array_module(f)
    if dual is None:
        dual = xp.zeros((3, *f.shape), dtype=f.dtype)
    if weight <= 0:
        return f.copy(), dual
    tau = f.dtype.type(1.0 / 12.0)  # 1 / ||div||^2 bound in 3D
    inv_w = f.dtype.type(1.0 / weight)
    for _ in range(n_iter):
        g = _grad(_div(dual) - f * inv_w)
        mag = xp.sqrt(xp.sum(g * g, axis=0))
        dual += tau * g
        dual /= 1 + tau * mag
    return f - f.dtype.type(weight) * _div(dual), dual


def operator_norm_squared(geom: ConeGeometry, like, n_iter: int = 12, seed: int = 0) -> float:
    """Estimate of ``||A^T A||`` (the Lipschitz constant of ``x -> A^T (A x - b)``) by power iteration.

    ``like``: an array whose device and dtype the iteration uses.
    """
    xp = array_module(like)
    x = xp.asarray(np.random.default_rng(seed).random(geom.volume.shape), dtype=like.dtype)
    est = 0.0
    for _ in range(n_iter):
        x /= norm(x)
        x = backproject(project(x, geom), geom, "matched")
        est = norm(x)
    return est


@borrow_keywords(start_run)
def fista_tv(
    projections,
    geom: ConeGeometry,
    niter: int,
    *,
    tv_weight: float = 0.1,
    tv_iter: int = 20,
    lipschitz: float | None = None,
    nonneg: bool = True,
    **options: Any,
) -> IterativeResult:
    """FISTA (Beck & Teboulle) for ``min 1/2 ||A x - b||^2 + tv_weight * TV(x)``.

    Args:
        projections: (n_views, nv, nu) float32 line integrals, NumPy (CPU) or CuPy (GPU).
        geom: the acquisition geometry.
        niter: iterations; each costs one projection and one backprojection.
        tv_weight: weight of TV (x in mm⁻¹, TV summed over voxels); larger is smoother.
        tv_iter: iterations of the TV proximal step (Chambolle, warm started).
        lipschitz: ``||A^T A||``; estimated by power iteration (12 projections and backprojections) when None.
        nonneg: clip negative values after each proximal step.
        init: initial volume; zeros by default.
        residuals: record ``||A x - b||_2`` after each iteration (one extra projection each).
        callback: ``callback(iteration, volume)`` after every iteration.
    """
    run = start_run("FISTA-TV", projections, geom, niter, **options)
    projections, geom, x = run.projections, run.geom, run.x0
    if tv_weight < 0:
        raise ValueError(f"tv_weight must be >= 0, got {tv_weight}")
    xp = array_module(projections)
    if lipschitz is None:
        lipschitz = 1.05 * operator_norm_squared(geom, projections)
        log.info("FISTA: estimated ||A^T A|| = %.6g", lipschitz)
    if not lipschitz > 0:
        raise ValueError(f"lipschitz must be positive, got {lipschitz}")
    step = 1.0 / lipschitz
    y = x.copy()
    t = 1.0
    dual = None
    for it in range(run.niter):
        grad = backproject(project(y, geom) - projections, geom, "matched")
        z = y - projections.dtype.type(step) * grad
        x_new, dual = tv_denoise(z, tv_weight * step, tv_iter, dual)
        if nonneg:
            xp.maximum(x_new, 0, out=x_new)
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        y = x_new + projections.dtype.type((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
        run.record(it, x)
    return run.result(x)


@borrow_keywords(start_sart)
def asd_pocs(
    projections,
    geom: ConeGeometry,
    niter: int,
    *,
    tv_iter: int = 20,
    alpha: float = 0.002,
    alpha_red: float = 0.95,
    ratio: float = 0.95,
    max_l2_error: float | None = None,
    **options: Any,
) -> IterativeResult:
    """ASD-POCS (Sidky & Pan 2008): an OS-SART sweep with positivity, then ``tv_iter`` steepest-descent steps on TV
    whose length adapts to the data step.

    Args:
        projections, geom, niter, blocksize, lmbda, lmbda_red, order, rng, init: as :func:`cbct.iterative.os_sart`.
        tv_iter: TV descent steps per iteration.
        alpha: TV step as a fraction of the first data step's change ``||x_k - x_{k-1}||``.
        alpha_red: TV step reduction when the TV steps change the image more than ``ratio`` times the data step.
        ratio: ``r_max`` of the paper.
        max_l2_error: data tolerance ``epsilon`` on ``||A x - b||_2``; the TV step is only reduced while the data
            error exceeds it. Default: 0.2 × the error of the FDK reconstruction (as TIGRE).
        residuals: record ``||A x - b||_2`` after each iteration's data step (computed anyway: no extra cost).
        callback: ``callback(iteration, volume)`` after every iteration.
    """
    for name, value in (("alpha", alpha), ("alpha_red", alpha_red), ("ratio", ratio)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    run, op = start_sart("ASD-POCS", projections, geom, niter, **options)
    projections, geom, x = run.projections, run.geom, run.x0
    if max_l2_error is None:
        max_l2_error = 0.2 * residual_norm(fdk(projections, geom), projections, geom)
    xp = array_module(projections)
    dtvg = None
    for it in range(run.niter):
        x_prev = x.copy()
        op.sweep(x, nonneg=True)
        dd = residual_norm(x, projections, geom)
        dp = norm(x - x_prev)
        if dtvg is None:
            dtvg = alpha * dp
        x_data = x.copy()
        for _ in range(tv_iter):
            g = tv_gradient(x)
            gn = norm(g)
            if gn == 0:
                break
            x -= projections.dtype.type(dtvg / gn) * g
        dg = norm(x - x_data)
        if dg > ratio * dp and dd > max_l2_error:
            dtvg *= alpha_red
        run.record(it, x, dd, note=f" (epsilon {max_l2_error:.6g})")
    xp.maximum(x, 0, out=x)
    return run.result(x)
