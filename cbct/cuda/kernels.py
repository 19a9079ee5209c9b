"""The CUDA backend: the kernel entry points that :mod:`cbct.operators` dispatches to for CuPy arrays.

Same three functions and semantics as :mod:`cbct.cpu.kernels` (the CPU twins), on CuPy arrays, device-resident in
and out, on the array's device and the current CuPy stream:

- :func:`project`: Joseph forward projection (csrc/forward_projection.cu), volume in a 3D texture.
- :func:`backproject_fdk`: voxel-driven backprojection with FDK weights, K segments in one pass
  (csrc/backprojection.cu), projections in a layered texture.
- :func:`backproject_matched`: the exact adjoint of :func:`project` (ray-driven atomic scatter).

The kernels compute in float32; float64 input is computed in float32 and returned as float64. Keyword options
select specialisations: ``interpolation="exact"`` (default: point-sampled textures, bilinear weights in float32,
agreeing with the CPU twin to float32 rounding) or ``"texture"`` (the texture unit's filter, 8-bit fractional
weights: faster, about 1e-3 relative error); ``texture_dtype="float16"`` stores the texture in half precision.
Work is cut into view chunks (constant-memory tables) and, when the texture would not fit in free device memory
(or ``memory_limit`` bytes), into z slabs (:mod:`cbct.cuda.planning`). Each call returns after its kernels have
completed, so the textures it made can be released.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from cbct.cpu.joseph import ray_parameters
from cbct.cpu.voxel_backprojection import index_projection_matrices
from cbct.cuda.compile import (
    MAX_FDK_VIEWS,
    MAX_MATCHED_VIEWS,
    MAX_PROJECT_VIEWS,
    fdk_kernel_name,
    get_module,
    project_kernel_name,
)
from cbct.cuda.planning import chunk_range, slab_geometry, split_range
from cbct.cuda.textures import TEXTURE_DTYPES, Texture, layered_texture, texture_limits, volume_texture
from cbct.geometry import ConeGeometry

log = logging.getLogger(__name__)

__all__ = ["project", "backproject_fdk", "backproject_matched", "INTERPOLATIONS", "free_device_memory"]

INTERPOLATIONS = ("exact", "texture")
FDK_BLOCK = (32, 8, 1)
RAY_BLOCK = (16, 16, 1)
MEMORY_FRACTION = 0.8  # of the free device memory that textures and work buffers may take


# ----------------------------------------------------------------------------------------- host-side parameters
def check_options(interpolation: str, texture_dtype: str) -> bool:
    """Validate the specialisation options; returns whether the texture unit filters (``"texture"``)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if texture_dtype not in TEXTURE_DTYPES:
        raise ValueError(f"texture_dtype must be one of {TEXTURE_DTYPES}, got {texture_dtype!r}")
    return interpolation == "texture"


def segment_ids(segment_starts: Any, n_views: int) -> np.ndarray:
    """(n_views,) int32 segment of each view from ``(K + 1,)`` starts ``0 = s_0 <= ... <= s_K = n_views``."""
    if segment_starts is None:
        return np.zeros(n_views, dtype=np.int32)
    starts = np.asarray(segment_starts)
    if starts.ndim != 1 or starts.size < 2 or not np.issubdtype(starts.dtype, np.integer):
        raise ValueError(f"segment_starts must be (K + 1,) integers with K >= 1, got {starts!r}")
    if starts[0] != 0 or starts[-1] != n_views or np.any(np.diff(starts) < 0):
        raise ValueError(f"segment_starts must rise from 0 to the number of views ({n_views}), got {starts.tolist()}")
    return (np.searchsorted(starts, np.arange(n_views), side="right") - 1).astype(np.int32)


def fdk_constants(geom: ConeGeometry) -> np.ndarray:
    """(n_views, 3, 4) float32 index projection matrices: the kernel's ``c_fdk_rows`` (3 float4 per view)."""
    return np.ascontiguousarray(index_projection_matrices(geom), dtype=np.float32)


def ray_constants(geom: ConeGeometry) -> np.ndarray:
    """(n_views, 12) float64 rays in index space (source, pixel (0, 0), column step, row step): ``c_rays``."""
    return np.ascontiguousarray(ray_parameters(geom).reshape(geom.n_views, 12))


def _grid(shape: tuple[int, ...], block: tuple[int, int, int]) -> tuple[int, int]:
    return math.ceil(shape[-1] / block[0]), math.ceil(shape[-2] / block[1])


# ----------------------------------------------------------------------------------------- device helpers
def _cupy():
    import cupy

    return cupy


def free_device_memory() -> int:
    """Bytes the current device can still give: free driver memory plus CuPy's pooled free blocks."""
    cp = _cupy()
    free, _total = cp.cuda.runtime.memGetInfo()
    return int(free) + int(cp.get_default_memory_pool().free_bytes())


def _budget(memory_limit: int | None) -> int:
    if memory_limit is not None:
        if memory_limit <= 0:
            raise ValueError(f"memory_limit must be positive bytes, got {memory_limit}")
        return int(memory_limit)
    return int(MEMORY_FRACTION * free_device_memory())


def _check_device_array(x: Any, name: str, shape: tuple[int, ...]) -> None:
    cp = _cupy()
    if not isinstance(x, cp.ndarray):
        raise TypeError(f"{name} must be a CuPy array, got {type(x).__module__}.{type(x).__name__}")
    if x.dtype not in (cp.float32, cp.float64):
        raise TypeError(f"{name} must be float32 (or float64), got dtype {x.dtype}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def _float32(x: Any) -> Any:
    return _cupy().ascontiguousarray(x, dtype=np.float32)


class _Keeper:
    """Textures that running kernels may still read: released after a stream synchronisation."""

    def __init__(self, stream: Any, budget: int) -> None:
        self.stream = stream
        self.budget = budget
        self.held: list[Texture] = []

    def hold(self, texture: Texture, next_bytes: int = 0) -> None:
        self.held.append(texture)
        if sum(t.nbytes for t in self.held) + next_bytes > self.budget:
            self.release()

    def release(self) -> None:
        if self.held:
            self.stream.synchronize()
            self.held.clear()


# ----------------------------------------------------------------------------------------- FDK backprojection
def fdk_backproject_into(
    out: Any,
    projections: Any,
    geom: ConeGeometry,
    view_segments: np.ndarray,
    *,
    hardware_filter: bool = False,
    texture_dtype: str = "float32",
    voxels_per_thread: int = 8,
    stream: Any = None,
    budget: int | None = None,
    release: bool = True,
) -> list[Texture]:
    """Add the FDK-weighted backprojection of ``projections`` (n_views, nv, nu) float32 into ``out`` (K, nz, ny, nx)
    float32, view ``i`` into ``out[view_segments[i]]``. Device arrays on the current device.

    Asynchronous on ``stream``, except that it synchronises before dropping textures when they exceed ``budget``
    bytes. ``release=True`` synchronises at the end and returns ``[]``; ``release=False`` returns the textures
    still in use: the caller keeps them until ``stream`` has passed this work."""
    cp = _cupy()
    stream = cp.cuda.get_current_stream() if stream is None else stream
    n_views, nv, nu = projections.shape
    k, nz, ny, nx = out.shape
    if (nz, ny, nx) != geom.volume.shape or (n_views, nv, nu) != geom.projection_shape:
        raise ValueError(f"out {out.shape} / projections {projections.shape} do not match the geometry {geom!r}")
    if view_segments.shape != (n_views,) or view_segments.min() < 0 or view_segments.max() >= k:
        raise ValueError(f"view_segments must give each of the {n_views} views a segment in [0, {k})")
    if np.any(np.diff(view_segments) < 0):
        raise ValueError("view_segments must be non-decreasing (contiguous segments)")
    budget = _budget(None) if budget is None else budget
    module = get_module("backprojection.cu")
    kernel = module.function(fdk_kernel_name(voxels_per_thread, hardware_filter))
    texel = 2 if texture_dtype == "float16" else 4
    per_view = nv * nu * (texel + 4)  # texture + the float32 staging of a float16 texture
    max_chunk = max(1, min(MAX_FDK_VIEWS, budget // max(per_view, 1)))
    grid = (*_grid((ny, nx), FDK_BLOCK), math.ceil(nz / voxels_per_thread))
    with stream:
        rows = cp.asarray(fdk_constants(geom))
        segments = cp.asarray(view_segments.astype(np.int32))
    keeper = _Keeper(stream, budget)
    for a, b in chunk_range(n_views, max_chunk):
        texture = layered_texture(
            projections[a:b], texture_dtype=texture_dtype, filter="linear" if hardware_filter else "point", stream=stream
        )
        with stream, module.exclusive(stream):
            module.upload("c_fdk_rows", rows[a:b], stream)
            module.upload("c_fdk_segment", segments[a:b], stream)
            kernel(grid, FDK_BLOCK, (texture.handle, out, np.int32(nx), np.int32(ny), np.int32(nz),
                                     np.int32(nu), np.int32(nv), np.int32(b - a)))
        keeper.hold(texture, next_bytes=per_view * (b - a))
    if release:
        keeper.release()
    return keeper.held


def backproject_fdk(
    projections: Any,
    geom: ConeGeometry,
    segment_starts: Any = None,
    *,
    interpolation: str = "exact",
    texture_dtype: str = "float32",
    voxels_per_thread: int = 8,
    memory_limit: int | None = None,
) -> Any:
    """FDK-weighted voxel-driven backprojection → (K, nz, ny, nx), K = len(segment_starts) - 1 (default 1).

    Args:
        projections: (n_views, nv, nu) CuPy float32 (or float64) array.
        geom: the geometry.
        segment_starts: (K + 1,) first view of each segment, then n_views; ``None``: one segment.
        interpolation: ``"exact"`` or ``"texture"`` (see the module notes).
        texture_dtype: ``"float32"`` or ``"float16"`` texels.
        voxels_per_thread: voxels along z per thread (4 or 8).
        memory_limit: bytes the textures may take (default 80 % of the free device memory).
    """
    cp = _cupy()
    hardware = check_options(interpolation, texture_dtype)
    _check_device_array(projections, "projections", geom.projection_shape)
    ids = segment_ids(segment_starts, geom.n_views)
    n_segments = 1 if segment_starts is None else len(segment_starts) - 1
    with projections.device:
        stream = cp.cuda.get_current_stream()
        with stream:
            out = cp.zeros((n_segments, *geom.volume.shape), dtype=cp.float32)
            proj = _float32(projections)
        fdk_backproject_into(
            out, proj, geom, ids, hardware_filter=hardware, texture_dtype=texture_dtype,
            voxels_per_thread=voxels_per_thread, stream=stream, budget=_budget(memory_limit),
        )
        return out if projections.dtype == cp.float32 else out.astype(projections.dtype)


# ----------------------------------------------------------------------------------------- forward projection
def _slabs_for_texture(geom: ConeGeometry, texel: int, budget: int, max_depth: int) -> list[tuple[int, int]]:
    nz, ny, nx = geom.volume.shape
    per_plane = ny * nx * (texel + 4)  # texture + a float32/float16 staging copy
    depth = max(1, min(nz, max_depth, budget // max(per_plane, 1)))
    return split_range(nz, math.ceil(nz / depth))


def project(
    volume: Any,
    geom: ConeGeometry,
    *,
    interpolation: str = "exact",
    texture_dtype: str = "float32",
    memory_limit: int | None = None,
) -> Any:
    """Line integrals (n_views, nv, nu) of ``volume`` (nz, ny, nx), a CuPy float32 (or float64) array.

    The volume texture is split into z slabs when it would not fit in ``memory_limit`` bytes (default 80 % of the
    free device memory); the slabs' projections add up exactly.
    """
    cp = _cupy()
    hardware = check_options(interpolation, texture_dtype)
    _check_device_array(volume, "volume", geom.volume.shape)
    n_views, nv, nu = geom.projection_shape
    _, ny, nx = geom.volume.shape
    dz, dy, dx = geom.volume.voxel_size
    with volume.device:
        stream = cp.cuda.get_current_stream()
        budget = _budget(memory_limit)
        texel = 2 if texture_dtype == "float16" else 4
        max_depth = texture_limits(volume.device.id)["MaxTexture3DDepth"]
        slabs = _slabs_for_texture(geom, texel, budget, max_depth)
        module = get_module("forward_projection.cu")
        kernel = module.function(project_kernel_name(hardware))
        with stream:
            out = cp.empty((n_views, nv, nu), dtype=cp.float32)
            vol = _float32(volume)
        grid_uv = _grid((nv, nu), RAY_BLOCK)
        keeper = _Keeper(stream, budget)
        for index, (z0, z1) in enumerate(slabs):
            sub = geom if len(slabs) == 1 else slab_geometry(geom, z0, z1)
            texture = volume_texture(vol[z0:z1], texture_dtype=texture_dtype,
                                     filter="linear" if hardware else "point", stream=stream)
            with stream:
                rays = cp.asarray(ray_constants(sub))
            for a, b in chunk_range(n_views, MAX_PROJECT_VIEWS):
                with stream, module.exclusive(stream):
                    module.upload("c_rays", rays[a:b], stream)
                    kernel((*grid_uv, b - a), RAY_BLOCK, (texture.handle, out[a:b], np.int32(nx), np.int32(ny),
                                                         np.int32(z1 - z0), np.int32(nu), np.int32(nv), np.float64(dx),
                                                         np.float64(dy), np.float64(dz), np.int32(index > 0)))
            keeper.hold(texture, next_bytes=texture.nbytes)
        keeper.release()
        return out if volume.dtype == cp.float32 else out.astype(volume.dtype)


# ----------------------------------------------------------------------------------------- matched backprojection
def backproject_matched(projections: Any, geom: ConeGeometry, views: Any = None) -> Any:
    """Exact adjoint of :func:`project` restricted to ``views`` (all by default) → (nz, ny, nx).

    Float32 atomic accumulation: results vary in the last bits between runs.
    """
    cp = _cupy()
    _check_device_array(projections, "projections", geom.projection_shape)
    if views is None:
        views = np.arange(geom.n_views, dtype=np.int32)
    else:
        views = np.asarray(views).reshape(-1)
        if not np.issubdtype(views.dtype, np.integer) or np.any(views < 0) or np.any(views >= geom.n_views):
            raise ValueError(f"views must be indices in [0, {geom.n_views}), got {views!r}")
        views = views.astype(np.int32)
    nz, ny, nx = geom.volume.shape
    n_views, nv, nu = geom.projection_shape
    dz, dy, dx = geom.volume.voxel_size
    with projections.device:
        stream = cp.cuda.get_current_stream()
        module = get_module("backprojection.cu")
        kernel = module.function("joseph_backproject")
        with stream:
            out = cp.zeros((nz, ny, nx), dtype=cp.float32)
            proj = _float32(projections)
            rays = cp.asarray(ray_constants(geom)[views])
            ids = cp.asarray(views)
        grid_uv = _grid((nv, nu), RAY_BLOCK)
        for a, b in chunk_range(views.size, MAX_MATCHED_VIEWS) if views.size else ():
            with stream, module.exclusive(stream):
                module.upload("c_rays", rays[a:b], stream)
                module.upload("c_ray_view", ids[a:b], stream)
                kernel((*grid_uv, b - a), RAY_BLOCK, (proj, out, np.int32(nx), np.int32(ny), np.int32(nz), np.int32(nu),
                                                     np.int32(nv), np.float64(dx), np.float64(dy), np.float64(dz)))
        return out if projections.dtype == cp.float32 else out.astype(projections.dtype)
