"""What the iterative algorithms share: checks, the result value, view subsets and their order, norms."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from cbct._checks import check_array, check_geometry
from cbct.backend import array_module
from cbct.geometry import ConeGeometry
from cbct.operators import project
from cbct.rng import as_generator

log = logging.getLogger("cbct.iterative")

Order = Literal["ordered", "random", "angular"]
ORDERS = ("ordered", "random", "angular")
Callback = Callable[[int, Any], None]
"""``callback(iteration, volume)``, called after each iteration (0-based) with the current volume."""


@dataclasses.dataclass(frozen=True)
class IterativeResult:
    """The outcome of an iterative reconstruction.

    Attributes:
        volume: (nz, ny, nx) attenuation in mm⁻¹, on the device of the projections.
        residuals: (n_iter,) float64 ``||A x_k - b||_2`` after each iteration (empty unless asked for).
    """

    volume: Any
    residuals: np.ndarray


def check_problem(projections, geom: ConeGeometry, niter: int, init):
    """Validated ``(projections, geom, niter, x0)``: one scan (view, v, u) float32/64, ``x0`` zeros or ``init``."""
    geom = check_geometry(geom)
    projections = check_array(projections, "projections", geom.projection_shape, "the projection shape of the geometry")
    if projections.ndim != 3:
        raise ValueError(f"projections must be one scan (n_views, nv, nu), got shape {tuple(projections.shape)}")
    if isinstance(niter, bool) or not isinstance(niter, (int, np.integer)) or niter < 0:
        raise ValueError(f"niter must be a non-negative integer, got {niter!r}")
    xp = array_module(projections)
    if init is None:
        x0 = xp.zeros(geom.volume.shape, dtype=projections.dtype)
    else:
        if array_module(init) is not xp:
            raise TypeError(f"init must live where the projections live ({xp.__name__}), got {type(init).__module__}")
        x0 = check_array(init, "init", geom.volume.shape, "the volume shape of the geometry").astype(projections.dtype, copy=True)
        if x0.ndim != 3:
            raise ValueError(f"init must be one volume {geom.volume.shape}, got shape {tuple(x0.shape)}")
    return projections, geom, int(niter), x0


@dataclasses.dataclass
class Run:
    """An iterative reconstruction under way: the checked problem, the start volume ``x0`` and what it records."""

    name: str
    projections: Any
    geom: ConeGeometry
    niter: int
    x0: Any
    residuals: bool
    callback: Callback | None
    history: list[float] = dataclasses.field(default_factory=list)

    def record(self, it: int, x, residual: float | None = None, note: str = "") -> None:
        """Iteration ``it`` is done: keep ``||A x - b||_2`` when residuals are asked for (``residual`` when the
        algorithm knows it, else one projection), log the iteration, call the callback."""
        if self.residuals:
            residual = residual_norm(x, self.projections, self.geom) if residual is None else residual
            self.history.append(residual)
        if residual is None:
            log.info("%s iteration %d/%d%s", self.name, it + 1, self.niter, note)
        else:
            log.info("%s iteration %d/%d: ||Ax-b|| = %.6g%s", self.name, it + 1, self.niter, residual, note)
        if self.callback is not None:
            self.callback(it, x)

    def result(self, x) -> IterativeResult:
        return IterativeResult(x, np.asarray(self.history, dtype=np.float64))


def start_run(name: str, projections, geom: ConeGeometry, niter: int, *, init=None, residuals: bool = False,
              callback: Callback | None = None) -> Run:
    """The :class:`Run` of the algorithm ``name`` on a checked problem (:func:`check_problem`)."""
    projections, geom, niter, x0 = check_problem(projections, geom, niter, init)
    return Run(name, projections, geom, niter, x0, residuals, callback)


def norm(x) -> float:
    """Euclidean norm of an array (NumPy or CuPy) as a Python float, accumulated in float64."""
    xp = array_module(x)
    return float(xp.sqrt(xp.sum(xp.square(x, dtype=xp.float64))))


def residual_norm(volume, projections, geom: ConeGeometry) -> float:
    """``||A volume - projections||_2``."""
    return norm(project(volume, geom) - projections)


def view_blocks(geom: ConeGeometry, blocksize: int, order: str = "ordered",
                rng: np.random.Generator | int | None = None) -> list[np.ndarray]:
    """The views of ``geom`` in blocks of at most ``blocksize``, in the order they are used.

    ``"ordered"``: consecutive views in the given order; ``"random"``: views shuffled once, then blocked;
    ``"angular"``: views sorted by angle and blocked, each next block the farthest in angle from those already used.
    """
    n = geom.n_views
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    blocksize = min(int(blocksize), n)
    if order == "random":
        gen = as_generator(rng)
        views = gen.permutation(n)
    elif order == "angular":
        views = np.argsort(np.mod(geom.angles, 2 * np.pi), kind="stable")
    else:
        views = np.arange(n)
    blocks = [views[i:i + blocksize] for i in range(0, n, blocksize)]
    if order != "angular" or len(blocks) <= 2:
        return blocks
    centre = np.array([np.angle(np.mean(np.exp(1j * geom.angles[b]))) for b in blocks])
    used = [0]
    left = list(range(1, len(blocks)))
    while left:
        dist = [min(abs(np.angle(np.exp(1j * (centre[k] - centre[u])))) for u in used) for k in left]
        used.append(left.pop(int(np.argmax(dist))))
    return [blocks[k] for k in used]


def safe_reciprocal(x, floor: float):
    """``1 / x`` where ``x > floor``, else 0 (rays or voxels the geometry hardly sees take no update)."""
    xp = array_module(x)
    seen = x > floor
    return xp.where(seen, 1.0 / xp.where(seen, x, 1.0), 0.0).astype(x.dtype, copy=False)
