"""The SART family: SIRT, SART and OS-SART as one algorithm with blocks of views.

For a block ``S`` of views: ``x <- x + lmbda * V_S^-1 A_S^T W_S (b_S - A_S x)`` with ``W_S = 1 / (A_S 1)`` (row
sums: ray lengths through the grid) and ``V_S = A_S^T 1`` (column sums), then ``x <- max(x, 0)`` when ``nonneg``.
``A`` is cbct's projector and ``A^T`` its exact adjoint (``backproject(..., "matched")``). One block of all views is
SIRT, blocks of one view are SART. With ``0 < lmbda < 2`` each SIRT iteration lowers ``||A x - b||_W``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cbct._checks import check_geometry
from cbct.backend import array_module
from cbct.geometry import ConeGeometry
from cbct.iterative._common import (
    IterativeResult, Order, Run, log, safe_reciprocal, start_run, view_blocks,
)
from cbct.operators import backproject, project
from cbct.signatures import borrow_keywords

__all__ = ["os_sart", "sirt", "sart", "SartOperator", "start_sart"]

V_CACHE_BYTES = 512 * 2**20
"""Column sums of the blocks are kept when they fit in this many bytes, else recomputed every sweep."""


class SartOperator:
    """The weighted block updates of OS-SART for one problem (kept across sweeps, used by ASD-POCS too)."""

    def __init__(self, projections, geom: ConeGeometry, blocks: list[np.ndarray], lmbda: float = 1.0,
                 lmbda_red: float = 1.0):
        if not 0 < lmbda < 2:
            raise ValueError(f"lmbda must be in (0, 2), got {lmbda}")
        if not 0 < lmbda_red <= 1:
            raise ValueError(f"lmbda_red must be in (0, 1], got {lmbda_red}")
        xp = array_module(projections)
        self.lmbda, self.lmbda_red = lmbda, lmbda_red
        self.projections = projections
        self.blocks = blocks
        self.geoms = [geom[b] for b in blocks]
        self.data = [xp.ascontiguousarray(projections[b]) for b in blocks]
        ray_floor = 1e-6 * min(geom.volume.voxel_size)
        ones = xp.ones(geom.volume.shape, dtype=projections.dtype)
        row_sums = project(ones, geom)
        self.w = [safe_reciprocal(row_sums[b], ray_floor) for b in blocks]
        vol_bytes = int(np.prod(geom.volume.shape)) * projections.dtype.itemsize
        self._v_cache = [] if len(blocks) * vol_bytes <= V_CACHE_BYTES else None
        if self._v_cache is not None:
            self._v_cache = [self._column_weights(k) for k in range(len(blocks))]
            log.debug("OS-SART: %d blocks, column sums cached", len(blocks))

    def _column_weights(self, k: int):
        xp = array_module(self.projections)
        ones = xp.ones(self.data[k].shape, dtype=self.projections.dtype)
        col = backproject(ones, self.geoms[k], "matched")
        return safe_reciprocal(col, 1e-6 * float(col.max()) if col.size else 0.0)

    def sweep(self, x, nonneg: bool):
        """One pass over all blocks with relaxation ``lmbda``, updating ``x`` in place, then ``lmbda *= lmbda_red``;
        returns ``x``."""
        xp = array_module(x)
        lmbda = self.lmbda
        for k in range(len(self.blocks)):
            g = self.geoms[k]
            residual = self.data[k] - project(x, g)
            residual *= self.w[k]
            update = backproject(residual, g, "matched")
            v = self._v_cache[k] if self._v_cache is not None else self._column_weights(k)
            update *= v
            update *= lmbda
            x += update
            if nonneg:
                xp.maximum(x, 0, out=x)
        self.lmbda *= self.lmbda_red
        return x


@borrow_keywords(start_run)
def start_sart(
    name: str,
    projections,
    geom: ConeGeometry,
    niter: int,
    *,
    blocksize: int = 20,
    lmbda: float = 1.0,
    lmbda_red: float = 0.99,
    order: Order = "ordered",
    rng: np.random.Generator | int | None = None,
    **run: Any,
) -> tuple[Run, SartOperator]:
    """The run and the block updates of a SART-family algorithm (:func:`os_sart`, ASD-POCS; arguments: :func:`os_sart`)."""
    started = start_run(name, projections, geom, niter, **run)
    blocks = view_blocks(started.geom, blocksize, order, rng)
    return started, SartOperator(started.projections, started.geom, blocks, lmbda, lmbda_red)


@borrow_keywords(start_sart)
def os_sart(projections, geom: ConeGeometry, niter: int, *, nonneg: bool = True, **options: Any) -> IterativeResult:
    """OS-SART (ordered-subsets SART).

    Args:
        projections: (n_views, nv, nu) float32 line integrals, NumPy (CPU) or CuPy (GPU).
        geom: the acquisition geometry.
        niter: number of sweeps over all views.
        nonneg: clip negative attenuation after every block.
        blocksize: views per block (subset); 1 is SART, ``n_views`` is SIRT.
        lmbda: relaxation, in (0, 2); multiplied by ``lmbda_red`` after every sweep.
        order: block order: ``"ordered"``, ``"random"`` (seeded by ``rng``) or ``"angular"`` (each next block
            the farthest in angle from those used).
        init: initial volume (nz, ny, nx) on the projections' device; zeros by default.
        residuals: record ``||A x - b||_2`` after every sweep (one extra projection each).
        callback: ``callback(iteration, volume)`` after every sweep.
    """
    run, op = start_sart("OS-SART", projections, geom, niter, **options)
    x = run.x0
    for it in range(run.niter):
        op.sweep(x, nonneg)
        run.record(it, x)
    return run.result(x)


def sirt(projections, geom: ConeGeometry, niter: int, **kwargs) -> IterativeResult:
    """SIRT: :func:`os_sart` with one block of all views (same keyword arguments, no ``blocksize``)."""
    geom = check_geometry(geom)
    if "blocksize" in kwargs:
        raise TypeError("sirt takes no blocksize (it uses all views at once); use os_sart")
    return os_sart(projections, geom, niter, blocksize=geom.n_views, **kwargs)


def sart(projections, geom: ConeGeometry, niter: int, **kwargs) -> IterativeResult:
    """SART: :func:`os_sart` with blocks of one view (same keyword arguments, no ``blocksize``)."""
    check_geometry(geom)
    if "blocksize" in kwargs:
        raise TypeError("sart takes no blocksize (it updates view by view); use os_sart")
    return os_sart(projections, geom, niter, blocksize=1, **kwargs)
