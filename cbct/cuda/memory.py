"""FDK of host (NumPy) projections streamed through the GPU: chunks of views, z slabs, detector-row bands.

:func:`fdk_host` reconstructs a scan that need not fit in GPU memory (a 1024³ volume on a small GPU): the volume
is cut into z slabs that fit (:func:`cbct.cuda.planning.plan_fdk_streaming`); for each slab the views are streamed
in chunks, each chunk only the band of detector rows that slab projects onto. A chunk is copied from the host into
pinned memory and on to the device on a copy stream while the previous chunk is weighted, ramp filtered (CuPy's
FFT) and backprojected on a compute stream (two buffers in flight). Each finished slab is copied into the output.
The result equals :func:`cbct.fdk` on the whole scan (filtering is along rows, so bands filter alone).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cbct._checks import check_array, check_geometry
from cbct.backend import array_library
from cbct.cuda.planning import StreamingPlan, crop_rows, plan_fdk_streaming, slab_geometry
from cbct.fdk.filters import ramp_filter_rows
from cbct.fdk.reconstruction import FDKFilterPlan, plan_fdk_filter
from cbct.fdk.weights import cosine_weights
from cbct.geometry import ConeGeometry
from cbct.signatures import borrow_keywords

log = logging.getLogger(__name__)

__all__ = ["fdk_host", "filter_chunk"]


def filter_chunk(raw: Any, geom: ConeGeometry, plan: FDKFilterPlan, views: tuple[int, int], rows: tuple[int, int], xp: Any = np) -> Any:
    """FDK-weight and ramp-filter detector rows ``rows = (r0, r1)`` of views ``views = (a, b)``.

    Args:
        raw: (b - a, r1 - r0, nu) line integrals, float32, on the device of ``xp``.
        geom: the scan's geometry (the unpadded detector).
        plan: :func:`cbct.fdk.reconstruction.plan_fdk_filter` of ``geom``.
        xp: the array module (NumPy or CuPy).

    Returns:
        (b - a, r1 - r0, nu') filtered rows, equal to rows ``r0:r1`` of views ``a:b`` of :func:`cbct.fdk_filter`.
    """
    (a, b), (r0, r1) = views, rows
    nu = geom.detector_shape[1]
    before, after = plan.pad
    cos_w = cosine_weights(crop_rows(geom, r0, r1), slice(a, b), xp).astype(raw.dtype)
    weights = xp.asarray(plan.view_weights[a:b], dtype=raw.dtype)
    weighted = raw * cos_w * weights[:, None, :]
    if before or after:
        padded = xp.zeros((*weighted.shape[:2], nu + before + after), dtype=raw.dtype)
        padded[..., before:before + nu] = weighted
    else:
        padded = weighted
    return ramp_filter_rows(padded, plan.response, xp)


def _check_out(out: np.ndarray | None, shape: tuple[int, int, int]) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 NumPy array of shape {shape}")
    return out


@borrow_keywords(plan_fdk_filter)
def fdk_host(
    projections: np.ndarray,
    geom: ConeGeometry,
    *,
    out: np.ndarray | None = None,
    memory_limit: int | None = None,
    views_per_chunk: int = 32,
    interpolation: str = "exact",
    texture_dtype: str = "float32",
    device: int | None = None,
    **filter_options: Any,
) -> np.ndarray:
    """FDK reconstruction of host projections on a GPU, streamed so that it fits in device memory.

    Args:
        projections: (n_views, nv, nu) float32 (or float64) NumPy line integrals.
        geom: the acquisition geometry.
        filter, cutoff, short_scan, offset_detector: as :func:`cbct.fdk`.
        out: optional C-contiguous float32 (nz, ny, nx) NumPy array to write the volume into.
        memory_limit: device bytes the reconstruction may use (default 80 % of the free device memory).
        views_per_chunk: views streamed and filtered together (fewer when memory is short).
        interpolation, texture_dtype: backprojection specialisation, as :func:`cbct.cuda.kernels.backproject_fdk`.
        device: CUDA device id (default: the current CuPy device).

    Returns:
        (nz, ny, nx) float32 NumPy volume in mm⁻¹ (``out`` when given).
    """
    import cupy as cp
    import cupyx

    from cbct.cuda.kernels import _budget, check_options, fdk_backproject_into

    geom = check_geometry(geom)
    if array_library(projections) != "numpy":
        raise TypeError(f"projections must be a NumPy array (use cbct.fdk for CuPy arrays), got {type(projections).__name__}")
    projections = check_array(projections, "projections", geom.projection_shape, "the projection shape of the geometry")
    if projections.ndim != 3:
        raise ValueError(f"projections must be one scan (n_views, nv, nu), got shape {projections.shape}")
    hardware = check_options(interpolation, texture_dtype)
    out = _check_out(out, geom.volume.shape)
    fplan = plan_fdk_filter(geom, **filter_options)
    n_fft = 2 * (fplan.response.shape[0] - 1)
    with cp.cuda.Device(device if device is not None else cp.cuda.Device().id):
        budget = _budget(memory_limit)
        plan = plan_fdk_streaming(
            geom, fplan.geometry, budget, n_fft=n_fft, views_per_chunk=views_per_chunk,
            texture_bytes=2 if texture_dtype == "float16" else 4,
        )
        log.info(
            "fdk_host: %d z slab(s), %d chunk(s) of up to %d views, up to %d detector rows, ~%.0f MiB on the device",
            len(plan.slabs), len(plan.view_chunks), max(b - a for a, b in plan.view_chunks), plan.max_rows,
            plan.device_bytes / 2**20,
        )
        _stream(projections, geom, fplan, plan, out, cp, cupyx, fdk_backproject_into, hardware, texture_dtype, budget)
    return out


def _stream(
    projections: np.ndarray, geom: ConeGeometry, fplan: FDKFilterPlan, plan: StreamingPlan, out: np.ndarray,
    cp: Any, cupyx: Any, backproject_into: Any, hardware: bool, texture_dtype: str, budget: int,
) -> None:
    """The pipelined loop of :func:`fdk_host` (two buffers: host → pinned → device on ``copy``, compute on
    ``compute``)."""
    _, ny, nx = geom.volume.shape
    nu = geom.detector_shape[1]
    slot_elems = max(b - a for a, b in plan.view_chunks) * plan.max_rows * nu
    compute = cp.cuda.Stream(non_blocking=True)
    copy = cp.cuda.Stream(non_blocking=True)
    pinned = [cupyx.empty_pinned((slot_elems,), dtype=np.float32) for _ in range(2)]
    with compute:
        staging = [cp.empty((slot_elems,), dtype=cp.float32) for _ in range(2)]
    copied = [cp.cuda.Event(disable_timing=True) for _ in range(2)]
    done: list[Any] = [None, None]  # event after the compute that last read each slot
    held: list[Any] = [None, None]  # textures of the slot's last chunk, alive until `done`
    step = 0
    try:
        for s, (z0, z1) in enumerate(plan.slabs):
            slab_geom = slab_geometry(fplan.geometry, z0, z1)
            with compute:
                slab = cp.zeros((1, z1 - z0, ny, nx), dtype=cp.float32)
            for c, (a, b) in enumerate(plan.view_chunks):
                slot = step % 2
                step += 1
                if done[slot] is not None:
                    done[slot].synchronize()  # the compute that read this slot's buffers has finished
                    held[slot] = None
                r0, r1 = plan.rows[s][c]
                shape = (b - a, r1 - r0, nu)
                size = shape[0] * shape[1] * shape[2]
                host = pinned[slot][:size].reshape(shape)
                np.copyto(host, projections[a:b, r0:r1, :], casting="same_kind")
                device_chunk = staging[slot][:size].reshape(shape)
                device_chunk.set(host, stream=copy)
                copied[slot].record(copy)
                compute.wait_event(copied[slot])
                with compute:
                    filtered = filter_chunk(device_chunk, geom, fplan, (a, b), (r0, r1), cp)
                chunk_geom = crop_rows(slab_geom, r0, r1)[a:b]
                held[slot] = backproject_into(
                    slab, filtered, chunk_geom, np.zeros(b - a, dtype=np.int32), hardware_filter=hardware,
                    texture_dtype=texture_dtype, stream=compute, budget=budget, release=False,
                )
                done[slot] = compute.record()
            compute.synchronize()
            held = [None, None]
            out[z0:z1] = slab[0].get()
            del slab
    finally:
        compute.synchronize()
        copy.synchronize()
