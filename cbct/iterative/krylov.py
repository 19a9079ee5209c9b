"""CGLS: conjugate gradients on the normal equations ``A^T A x = A^T b`` (Hestenes & Stiefel), with cbct's
projector ``A`` and its exact adjoint. Each iteration costs one projection and one backprojection, and
``||A x_k - b||_2`` never increases."""

from __future__ import annotations

from cbct.geometry import ConeGeometry
from cbct.iterative._common import Callback, IterativeResult, log, norm, start_run
from cbct.operators import backproject, project

__all__ = ["cgls"]


def cgls(
    projections,
    geom: ConeGeometry,
    niter: int,
    *,
    init=None,
    callback: Callback | None = None,
) -> IterativeResult:
    """Least-squares reconstruction ``argmin ||A x - b||_2`` by CGLS (no constraint, no regularisation).

    Args:
        projections: (n_views, nv, nu) float32 line integrals, NumPy (CPU) or CuPy (GPU).
        geom: the acquisition geometry.
        niter: number of iterations (stops early when the gradient vanishes).
        init: initial volume on the projections' device; zeros by default.
        callback: ``callback(iteration, volume)`` after every iteration.

    Returns:
        the volume and ``||A x_k - b||_2`` after every iteration (free: CGLS updates the residual).
    """
    run = start_run("CGLS", projections, geom, niter, init=init, residuals=True, callback=callback)
    projections, geom, x = run.projections, run.geom, run.x0
    r = projections - project(x, geom) if init is not None else projections.copy()
    s = backproject(r, geom, "matched")
    p = s.copy()
    gamma = norm(s) ** 2
    for it in range(run.niter):
        if gamma == 0.0:
            log.info("CGLS: gradient vanished after %d iterations", it)
            break
        q = project(p, geom)
        qq = norm(q) ** 2
        if qq == 0.0:
            log.info("CGLS: search direction in the null space after %d iterations", it)
            break
        alpha = gamma / qq
        x += alpha * p
        r -= alpha * q
        s = backproject(r, geom, "matched")
        gamma_new = norm(s) ** 2
        p *= gamma_new / gamma
        p += s
        gamma = gamma_new
        run.record(it, x, norm(r))
    return run.result(x)
