"""The cone-beam operators: forward projection, backprojection and segmented backprojection.

One API for every backend: NumPy arrays run on the CPU (Numba), CuPy arrays on their GPU. Volumes are
``(..., z, y, x)`` and projections ``(..., view, v, u)``; leading dimensions are a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from cbct._checks import check_array, check_geometry
from cbct.backend import array_module, kernels_for
from cbct.geometry import ConeGeometry

Weighting = Literal["fdk", "matched"]


def _batched(fn, x, n_core: int, out_core: tuple[int, ...]):
    """Apply ``fn`` to each item of the leading dimensions of ``x`` (its last ``n_core`` dims are one item)."""
    batch = x.shape[: x.ndim - n_core]
    if not batch:
        return fn(x)
    xp = array_module(x)
    flat = x.reshape((-1, *x.shape[x.ndim - n_core:]))
    out = xp.stack([fn(item) for item in flat])
    return out.reshape((*batch, *out.shape[1:]))


def project(volume, geom: ConeGeometry):
    """Cone-beam forward projection: line integrals through ``volume`` along every detector ray.

    Args:
        volume: (..., nz, ny, nx) float32 attenuation in mm⁻¹ on ``geom.volume``.
        geom: the acquisition geometry.

    Returns:
        (..., n_views, nv, nu) line integrals (dimensionless), same dtype and device as ``volume``.
    """
    geom = check_geometry(geom)
    volume = check_array(volume, "volume", geom.volume.shape, "the volume shape of the geometry")
    kernels = kernels_for(volume)
    return _batched(lambda v: kernels.project(v, geom), volume, 3, geom.projection_shape)


def backproject(projections, geom: ConeGeometry, weighting: Weighting = "fdk"):
    """Cone-beam backprojection onto ``geom.volume``.

    Args:
        projections: (..., n_views, nv, nu) float32.
        geom: the acquisition geometry.
        weighting: ``"fdk"``: voxel-driven, bilinear interpolation on the detector, each view weighted by
            ``(DSO / depth)**2`` (the backprojection step of FDK, without angular scaling);
            ``"matched"``: the exact adjoint of :func:`project` (for iterative methods and gradients).

    Returns:
        (..., nz, ny, nx), same dtype and device as ``projections``.
    """
    geom = check_geometry(geom)
    projections = check_array(projections, "projections", geom.projection_shape, "the projection shape of the geometry")
    kernels = kernels_for(projections)
    if weighting == "fdk":
        return _batched(lambda p: kernels.backproject_fdk(p, geom)[0], projections, 3, geom.volume.shape)
    if weighting == "matched":
        return _batched(lambda p: kernels.backproject_matched(p, geom), projections, 3, geom.volume.shape)
    raise ValueError(f"weighting must be 'fdk' or 'matched', got {weighting!r}")


def backproject_fdk_trusted(projections, geom: ConeGeometry, starts: np.ndarray | None = None):
    """FDK-weighted backprojection of projections this package already validated (one scan, C-contiguous float):
    skips the checks (a full pass and, on a GPU, a sync). Returns (K, nz, ny, nx)."""
    return kernels_for(projections).backproject_fdk(projections, geom, starts)


def segment_starts(n_views: int, n_segments: int | None = None, segment_sizes: Sequence[int] | None = None) -> np.ndarray:
    """(K + 1,) first view of each of K contiguous segments, then ``n_views``.

    Give ``n_segments`` for K segments as even as possible (sizes differ by at most one view), or
    ``segment_sizes`` for the number of views in each segment.
    """
    if (n_segments is None) == (segment_sizes is None):
        raise ValueError("give exactly one of n_segments and segment_sizes")
    if segment_sizes is not None:
        sizes = np.asarray(segment_sizes, dtype=np.int64).reshape(-1)
        if sizes.size == 0 or np.any(sizes <= 0) or int(sizes.sum()) != n_views:
            raise ValueError(f"segment_sizes must be positive and sum to the number of views ({n_views}), got {list(sizes)}")
    else:
        if not isinstance(n_segments, (int, np.integer)) or not 1 <= n_segments <= n_views:
            raise ValueError(f"n_segments must be an integer between 1 and the number of views ({n_views}), got {n_segments!r}")
        sizes = np.full(n_segments, n_views // n_segments, dtype=np.int64)
        sizes[: n_views % n_segments] += 1
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def segmented_backproject(
    projections,
    geom: ConeGeometry,
    n_segments: int | None = None,
    *,
    segment_sizes: Sequence[int] | None = None,
    weighting: Weighting = "fdk",
):
    """Backproject K contiguous angular segments of the views into K sub-volumes in one pass.

    The views are taken in their order in ``geom`` (sort them by angle for angular segments). The K
    sub-volumes sum to :func:`backproject` of all views (to float32 rounding).

    Args:
        projections: (..., n_views, nv, nu) float32 (for SBP-MAC: the FDK-filtered projections).
        geom: the acquisition geometry.
        n_segments: K, for segments as even as possible; or give ``segment_sizes`` (views per segment).
        weighting: as in :func:`backproject`.

    Returns:
        (..., K, nz, ny, nx), same dtype and device as ``projections``.
    """
    geom = check_geometry(geom)
    projections = check_array(projections, "projections", geom.projection_shape, "the projection shape of the geometry")
    starts = segment_starts(geom.n_views, n_segments, segment_sizes)
    kernels = kernels_for(projections)
    if weighting == "fdk":
        fn = lambda p: kernels.backproject_fdk(p, geom, starts)  # noqa: E731
    elif weighting == "matched":
        xp = array_module(projections)
        fn = lambda p: xp.stack(  # noqa: E731
            [kernels.backproject_matched(p, geom, np.arange(a, b)) for a, b in zip(starts[:-1], starts[1:])]
        )
    else:
        raise ValueError(f"weighting must be 'fdk' or 'matched', got {weighting!r}")
    return _batched(fn, projections, 3, (len(starts) - 1, *geom.volume.shape))
