"""Sparse-view acquisition: keep a subset of the views of a scan (every s-th view, or explicit uneven indices).

FDK of the returned projections with the returned geometry is correctly weighted: FDK takes its angular weights from
``geom.angles``, so the larger gaps of a sparse (or unevenly sparse) scan get larger weights, and its redundancy
weights from the rays, so holes are not mistaken for a short scan. :func:`sparse_scan` thins a :class:`cbct.Scan`
and states the views it lacks (``target_angles``: the angles of the full scan), for view completion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbct._checks import check_array, check_geometry
from cbct.geometry import ConeGeometry
from cbct.rng import as_generator
from cbct.scan import Scan

__all__ = ["sparse_scan", "sparse_views", "sparse_indices", "uneven_indices"]


def sparse_indices(n_views: int, *, step: int | None = None, keep: Sequence[int] | None = None, start: int = 0) -> np.ndarray:
    """(n_kept,) int64 indices of the kept views, increasing.

    Args:
        n_views: number of views of the full scan.
        step: keep views ``start, start + step, start + 2 step, ...`` (e.g. 4 or 8).
        keep: explicit view indices (any order, unique, within ``[0, n_views)``), e.g. uneven gaps.
        start: first kept view when ``step`` is given.

    Give exactly one of ``step`` and ``keep``.
    """
    if not isinstance(n_views, (int, np.integer)) or n_views < 1:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
    if (step is None) == (keep is None):
        raise ValueError("give exactly one of step (every step-th view) and keep (explicit view indices)")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
            raise ValueError(f"step must be a positive integer, got {step!r}")
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < n_views:
            raise ValueError(f"start must be an integer in [0, {n_views}), got {start!r}")
        return np.arange(int(start), n_views, int(step), dtype=np.int64)
    arr = np.asarray(keep)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"keep must be a non-empty 1-D sequence of view indices, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"keep must hold integer view indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n_views:
        raise ValueError(f"keep must index views in [0, {n_views}), got values from {arr.min()} to {arr.max()}")
    out = np.unique(arr)
    if out.size != arr.size:
        raise ValueError("keep must not repeat a view index")
    return out


def uneven_indices(n_views: int, mean_step: float, *, rng: np.random.Generator | int, min_step: int = 1) -> np.ndarray:
    """Increasing indices of an unevenly sparse scan: gaps drawn uniformly in ``[min_step, 2 mean_step - min_step]``.

    The first view is always kept. ``rng`` is a seed or a ``numpy.random.Generator`` (reproducible).
    """
    if not mean_step >= min_step >= 1:
        raise ValueError(f"need mean_step >= min_step >= 1, got mean_step={mean_step}, min_step={min_step}")
    gen = as_generator(rng)
    hi = max(min_step, int(round(2 * mean_step)) - min_step)
    idx = [0]
    while True:
        nxt = idx[-1] + int(gen.integers(min_step, hi + 1))
        if nxt >= n_views:
            break
        idx.append(nxt)
    return np.asarray(idx, dtype=np.int64)


def sparse_views(
    projections,
    geom: ConeGeometry,
    *,
    step: int | None = None,
    keep: Sequence[int] | None = None,
) -> tuple[np.ndarray, ConeGeometry, np.ndarray]:
    """Keep every ``step``-th view (first view kept) or the views ``keep`` of a scan.

    Args:
        projections: (n_views, nv, nu) float32 line integrals (NumPy or CuPy), matching ``geom``.
        geom: geometry of the full scan.
        step: keep every ``step``-th view, e.g. 4 or 8.
        keep: explicit view indices (uneven gaps allowed); sorted and checked for repeats.

    Returns:
        ``(sparse_projections, sparse_geometry, kept)``: (n_kept, nv, nu) projections on the device of the input,
        the geometry of those views (``geom[kept]``), and (n_kept,) int64 indices into the full scan.
    """
    geom = check_geometry(geom)
    projections = check_array(projections, "projections", geom.projection_shape, "the projection shape of the geometry")
    if projections.ndim != 3:
        raise ValueError(f"projections must be one scan (n_views, nv, nu), got shape {tuple(projections.shape)}")
    kept = sparse_indices(geom.n_views, step=step, keep=keep)
    return projections[kept], geom[kept], kept


def sparse_scan(scan: Scan, *, step: int | None = None, keep: Sequence[int] | None = None) -> Scan:
    """The views ``step``-th or ``keep`` of ``scan`` as a new :class:`cbct.Scan` that states what it lacks.

    Its ``target_angles`` are ``scan.target_angles`` when set, else the angles of all the views of ``scan``, so view
    completion restores exactly the original views for any pattern (even, uneven, holes). Metadata gains
    ``"sparse": {"kept_indices", "n_views_full"}`` (and ``"sparse_step"`` with ``step``); raw counts keep their
    dark and flat frames; the reference volume is kept.
    """
    import dataclasses


    if not isinstance(scan, Scan):
        raise TypeError(f"scan must be a cbct.Scan, got {type(scan).__name__}")
    kept = sparse_indices(scan.geometry.n_views, step=step, keep=keep)
    target = scan.target_angles if scan.target_angles is not None else scan.geometry.angles
    metadata = {**scan.metadata, "sparse": {"kept_indices": kept.tolist(), "n_views_full": scan.geometry.n_views}}
    if step is not None:
        metadata["sparse_step"] = int(step)
    else:
        metadata.pop("sparse_step", None)
    data = {"projections": scan.projections[kept]} if scan.projections is not None else {"counts": scan.counts[kept]}
    return dataclasses.replace(scan, geometry=scan.geometry[kept], metadata=metadata, target_angles=np.array(target),
                               **{"projections": None, "counts": None, **data})
