"""TIGRE's iterative algorithms (names, positional ``niter``, keyword arguments, return values) on :mod:`cbct.iterative`.

Common keywords: ``lmbda``, ``lmbda_red``, ``init`` (None, ``"FDK"``, or an image; ``"image"`` with ``InitImg``),
``noneg``, ``verbose`` (progress to logging), ``computel2``, ``Quameasopts``, ``gpuids`` (ignored: the device is
the data's), and ``rng`` (cbct's: seed of ``OrderStrategy="random"``). With ``computel2`` and/or ``Quameasopts`` the
call returns ``(image, errors)``: ``errors`` has one row ``||Ax - b||_2`` per iteration when ``computel2``, then one
row per quality measure (``"RMSE"``, ``"CC"``, ``"UQI"``, ``"SSD"``, between consecutive iterates, as TIGRE).
Unknown keywords raise ``TypeError`` naming them.
"""

from __future__ import annotations

import logging

import numpy as np

from cbct.backend import array_module
from cbct.fdk import fdk as cbct_fdk
from cbct.iterative import asd_pocs as _asd_pocs
from cbct.iterative import cgls as _cgls
from cbct.iterative import fista_tv, os_sart
from cbct.tigre.geometry import cone_geometry

__all__ = ["sirt", "sart", "ossart", "cgls", "fista", "asd_pocs", "QUALITY_MEASURES"]

log = logging.getLogger("cbct.tigre")

COMMON = {"init", "InitImg", "verbose", "computel2", "Quameasopts", "gpuids"}
ORDER_STRATEGIES = {None: "ordered", "ordered": "ordered", "random": "random", "angularDistance": "angular"}


def _measure(name: str, x, prev) -> float:
    xp = array_module(x)
    a = x.astype(xp.float64).ravel()
    b = prev.astype(xp.float64).ravel()
    if name == "RMSE":
        return float(xp.sqrt(xp.mean((a - b) ** 2)))
    if name == "SSD":
        return float(xp.sum((a - b) ** 2))
    if name == "CC":
        da, db = a - a.mean(), b - b.mean()
        den = float(xp.sqrt(xp.sum(da * da) * xp.sum(db * db)))
        return float(xp.sum(da * db)) / den if den > 0 else 0.0
    # UQI (Wang & Bovik): 4 cov mean_a mean_b / ((var_a + var_b)(mean_a^2 + mean_b^2))
    ma, mb = float(a.mean()), float(b.mean())
    va, vb = float(a.var()), float(b.var())
    cov = float(xp.mean((a - ma) * (b - mb)))
    den = (va + vb) * (ma * ma + mb * mb)
    return 4 * cov * ma * mb / den if den > 0 else 0.0


QUALITY_MEASURES = ("RMSE", "CC", "UQI", "SSD")


class _Run:
    """Arguments and bookkeeping shared by the wrappers: checks, initial image, per-iteration errors."""

    def __init__(self, name: str, proj, geo, angles, niter, kwargs: dict, own: set[str]):
        unknown = set(kwargs) - COMMON - own
        if unknown:
            raise TypeError(f"{name} got unexpected keyword arguments {sorted(unknown)}; accepted: {sorted(COMMON | own)}")
        self.name = name
        self.geom = cone_geometry(geo, angles)
        if not hasattr(proj, "shape") or tuple(proj.shape) != self.geom.projection_shape:
            got = tuple(proj.shape) if hasattr(proj, "shape") else type(proj).__name__
            raise ValueError(f"Expected data shape: {self.geom.projection_shape} not compatible with: {got}")
        if proj.dtype != np.float32:
            raise TypeError(f"proj: input data should be float32, not {proj.dtype}")
        self.proj = proj
        self.niter = niter
        if kwargs.get("verbose", True):
            log.info("%s: %d iterations on %d views", name, niter, self.geom.n_views)
        measures = kwargs.get("Quameasopts")
        if measures is not None:
            measures = [measures] if isinstance(measures, str) else list(measures)
            bad = [m for m in measures if m not in QUALITY_MEASURES]
            if bad:
                raise ValueError(f"Quameasopts: unknown measures {bad}; cbct offers {list(QUALITY_MEASURES)}")
        self.measures = measures
        self.computel2 = bool(kwargs.get("computel2", False))
        self.init = self._initial_image(kwargs.get("init"), kwargs.get("InitImg"))
        self._prev = None if self.init is None else self.init.copy()
        self._rows: list[list[float]] = []

    def _initial_image(self, init, init_img):
        if init is None or (isinstance(init, str) and init.lower() == "none"):
            return None
        if isinstance(init, str):
            if init == "FDK":
                return cbct_fdk(self.proj, self.geom)
            if init == "image":
                if init_img is None:
                    raise ValueError("init='image' needs InitImg, the initial image")
                init = init_img
            elif init == "multigrid":
                raise NotImplementedError("init='multigrid' is not supported by cbct.tigre: use None, 'FDK' or an image")
            else:
                raise ValueError(f"init must be None, 'FDK', 'image' or an image, got {init!r}")
        xp = array_module(self.proj)
        if tuple(init.shape) != self.geom.volume.shape:
            raise ValueError(f"wrong dimension of array for initialisation: expected {self.geom.volume.shape}, got {tuple(init.shape)}")
        return xp.asarray(init, dtype=np.float32)

    @property
    def callback(self):
        if not self.measures:
            return None

        def record(it: int, x) -> None:
            prev = self._prev if self._prev is not None else array_module(x).zeros_like(x)
            self._rows.append([_measure(m, x, prev) for m in self.measures])
            self._prev = x.copy()

        return record

    def result(self, res):
        """TIGRE's return value: the image, or ``(image, errors)`` with ``computel2`` / ``Quameasopts``."""
        if not self.computel2 and not self.measures:
            return res.volume
        rows = []
        if self.computel2:
            rows.append(np.asarray(res.residuals, dtype=np.float64))
        if self.measures:
            rows.extend(np.asarray(self._rows, dtype=np.float64).reshape(-1, len(self.measures)).T)
        return res.volume, np.stack(rows)


def _sart_family(name: str, proj, geo, angles, niter, blocksize, kwargs):
    own = {"lmbda", "lmbda_red", "noneg", "OrderStrategy", "rng"} | ({"blocksize"} if name == "ossart" else set())
    run = _Run(name, proj, geo, angles, niter, kwargs, own)
    strategy = kwargs.get("OrderStrategy")
    if strategy not in ORDER_STRATEGIES:
        raise ValueError(f"OrderStrategy must be one of {list(ORDER_STRATEGIES)}, got {strategy!r}")
    if blocksize is None:
        blocksize = int(kwargs.get("blocksize", 20))
    res = os_sart(
        proj, run.geom, niter, blocksize=blocksize, lmbda=float(kwargs.get("lmbda", 1.0)),
        lmbda_red=float(kwargs.get("lmbda_red", 0.99)), order=ORDER_STRATEGIES[strategy], rng=kwargs.get("rng"),
        init=run.init, nonneg=bool(kwargs.get("noneg", True)), residuals=run.computel2, callback=run.callback,
    )
    return run.result(res)


def sirt(proj, geo, angles, niter, **kwargs):
    """SIRT: all views at once (TIGRE's ``algs.sirt``); keywords ``lmbda``, ``lmbda_red``, ``noneg`` and the common ones."""
    return _sart_family("sirt", proj, geo, angles, niter, cone_geometry(geo, angles).n_views, kwargs)


def sart(proj, geo, angles, niter, **kwargs):
    """SART: view by view (TIGRE's ``algs.sart``); keywords as :func:`sirt` plus ``OrderStrategy``."""
    return _sart_family("sart", proj, geo, angles, niter, 1, kwargs)


def ossart(proj, geo, angles, niter, **kwargs):
    """OS-SART (TIGRE's ``algs.ossart``): ``blocksize`` views per update (default 20), ``OrderStrategy``
    ``"ordered"`` (default), ``"random"`` or ``"angularDistance"``, ``lmbda``, ``lmbda_red``, ``noneg``."""
    return _sart_family("ossart", proj, geo, angles, niter, None, kwargs)


def cgls(proj, geo, angles, niter, **kwargs):
    """CGLS (TIGRE's ``algs.cgls``): least squares by conjugate gradients; ``restart`` is accepted and ignored."""
    kwargs.pop("restart", None)
    run = _Run("cgls", proj, geo, angles, niter, kwargs, set())
    return run.result(_cgls(proj, run.geom, niter, init=run.init, callback=run.callback))


def fista(proj, geo, angles, niter, **kwargs):
    """FISTA with TV (TIGRE's ``algs.fista``) for ``min 1/2 ||Ax - b||^2 + tvlambda TV(x)``.

    Keywords: ``hyper`` (TIGRE's ``L``; the gradient step is ``2 / hyper`` as in TIGRE; default: estimated from cbct's
    operator by power iteration, as TIGRE's empirical values belong to its own operator scaling), ``tviter`` (TV
    proximal iterations, 20), ``tvlambda`` (TV weight, default 0.1), ``noneg``.
    """
    run = _Run("fista", proj, geo, angles, niter, kwargs, {"hyper", "tviter", "tvlambda", "noneg"})
    hyper = kwargs.get("hyper")
    res = fista_tv(
        proj, run.geom, niter, tv_weight=float(kwargs.get("tvlambda", 0.1)), tv_iter=int(kwargs.get("tviter", 20)),
        lipschitz=None if hyper is None else float(hyper) / 2.0, init=run.init, nonneg=bool(kwargs.get("noneg", True)),
        residuals=run.computel2, callback=run.callback,
    )
    return run.result(res)


def asd_pocs(proj, geo, angles, niter, **kwargs):
    """ASD-POCS (TIGRE's ``algs.asd_pocs``): ``blocksize`` (default 1, as TIGRE), ``lmbda``, ``lmbda_red``, ``alpha``
    (0.002), ``alpha_red`` (0.95), ``rmax`` (0.95), ``maxl2err`` (default 0.2 × FDK's data error), ``tviter`` or
    ``numiter_tv`` (20), ``OrderStrategy``. Runs ``niter`` iterations (TIGRE's early stop is not applied)."""
    own = {"blocksize", "lmbda", "lmbda_red", "alpha", "alpha_red", "rmax", "maxl2err", "tviter", "numiter_tv",
           "OrderStrategy", "rng"}
    run = _Run("asd_pocs", proj, geo, angles, niter, kwargs, own)
    strategy = kwargs.get("OrderStrategy")
    if strategy not in ORDER_STRATEGIES:
        raise ValueError(f"OrderStrategy must be one of {list(ORDER_STRATEGIES)}, got {strategy!r}")
    res = _asd_pocs(
        proj, run.geom, niter, blocksize=int(kwargs.get("blocksize", 1)), lmbda=float(kwargs.get("lmbda", 1.0)),
        lmbda_red=float(kwargs.get("lmbda_red", 0.99)), order=ORDER_STRATEGIES[strategy], rng=kwargs.get("rng"),
        tv_iter=int(kwargs.get("tviter", kwargs.get("numiter_tv", 20))), alpha=float(kwargs.get("alpha", 0.002)),
        alpha_red=float(kwargs.get("alpha_red", 0.95)), ratio=float(kwargs.get("rmax", 0.95)),
        max_l2_error=kwargs.get("maxl2err"), init=run.init, residuals=run.computel2, callback=run.callback,
    )
    return run.result(res)
