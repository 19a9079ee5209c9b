"""How work is cut to fit the GPU: view chunks, z slabs, detector-row crops (pure NumPy, no CuPy).

The cuts are exact, not approximations:

- Views: every operator is a sum over views, so chunks of views add up.
- z slabs, voxel-driven FDK backprojection: each voxel only reads the detector, so a slab is the same volume grid
  restricted to its planes (:func:`slab_geometry`).
- z slabs, Joseph projector and its adjoint: a slab holds the voxel planes ``[z0, z1)`` with zeros outside; since
  in-plane interpolation is linear in the voxel values, the projections of the slabs add up to the projection of
  the volume, and the adjoint of the volume is the stack of the slabs' adjoints.
- Detector rows: the voxels of a slab project onto a band of detector rows in each view (the image of a box under
  a perspective map is the hull of its corners' images); FDK filters along rows, so the band can be streamed,
  filtered and backprojected alone (:func:`detector_rows`, :func:`crop_rows`).

``tests/test_cuda_planning.py`` checks each identity with the CPU kernels.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid

__all__ = [
    "split_range",
    "chunk_range",
    "slab_geometry",
    "crop_rows",
    "detector_rows",
    "StreamingPlan",
    "plan_fdk_streaming",
]


def split_range(n: int, parts: int) -> list[tuple[int, int]]:
    """``[0, n)`` as ``parts`` contiguous ranges whose sizes differ by at most one."""
    if n < 1 or parts < 1:
        raise ValueError(f"need n >= 1 and parts >= 1, got n={n}, parts={parts}")
    parts = min(parts, n)
    edges = [(n * p) // parts for p in range(parts + 1)]
    return [(edges[p], edges[p + 1]) for p in range(parts)]


def chunk_range(n: int, max_size: int) -> list[tuple[int, int]]:
    """``[0, n)`` as the fewest contiguous ranges of at most ``max_size``, sizes as even as possible."""
    if max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}")
    return split_range(n, math.ceil(n / max_size))


def slab_geometry(geom: ConeGeometry, z0: int, z1: int) -> ConeGeometry:
    """The same views with the volume grid restricted to planes ``z0 <= k < z1``."""
    nz, ny, nx = geom.volume.shape
    if not 0 <= z0 < z1 <= nz:
        raise ValueError(f"slab [{z0}, {z1}) must lie within the {nz} planes of the volume")
    dz = geom.volume.voxel_size[0]
    oz, oy, ox = geom.volume.offset
    centre_shift = ((z0 + z1 - 1) / 2 - (nz - 1) / 2) * dz
    grid = VolumeGrid((z1 - z0, ny, nx), geom.volume.voxel_size, (oz + centre_shift, oy, ox))
    return geom.with_volume(grid)


def crop_rows(geom: ConeGeometry, r0: int, r1: int) -> ConeGeometry:
    """The detector cut to rows ``r0 <= v < r1`` (row ``r`` of the result is row ``r0 + r`` of ``geom``)."""
    nv, nu = geom.detector_shape
    if not 0 <= r0 < r1 <= nv:
        raise ValueError(f"rows [{r0}, {r1}) must lie within the {nv} detector rows")
    if (r0, r1) == (0, nv):
        return geom
    return geom.with_detector_shape((r1 - r0, nu), shift=((r0 + r1 - 1) / 2 - (nv - 1) / 2, 0.0))


def detector_rows(geom: ConeGeometry, margin: int = 1) -> tuple[int, int]:
    """Rows ``[r0, r1)`` of the detector that bilinear sampling at any voxel centre of ``geom.volume`` touches in
    any view of ``geom`` (plus ``margin`` rows each side for rounding); all rows if a voxel is behind a source."""
    from cbct.cpu.voxel_backprojection import index_projection_matrices

    nz, ny, nx = geom.volume.shape
    nv = geom.detector_shape[0]
    corners = np.array([[i, j, k, 1.0] for i in (0, nx - 1) for j in (0, ny - 1) for k in (0, nz - 1)])
    proj = np.einsum("nrc,pc->npr", index_projection_matrices(geom), corners)  # (views, 8, 3)
    w = proj[..., 2]
    if np.any(w <= 1e-9):
        return 0, nv
    v = proj[..., 1] / w
    r0 = int(np.floor(v.min())) - margin
    r1 = int(np.floor(v.max())) + 2 + margin  # the bilinear neighbour of the last row, exclusive end
    r0, r1 = max(r0, 0), min(r1, nv)
    if r1 <= r0:  # the slab projects off the detector: keep one row (it reads zeros anyway)
        r0 = min(max(r0, 0), nv - 1)
        r1 = r0 + 1
    return r0, r1


@dataclasses.dataclass(frozen=True)
class StreamingPlan:
    """How :func:`cbct.cuda.memory.fdk_host` cuts an FDK reconstruction.

    Attributes:
        slabs: ``(z0, z1)`` plane ranges of the volume, reconstructed one after the other.
        view_chunks: ``(a, b)`` view ranges streamed, filtered and backprojected together.
        rows: ``rows[s][c] = (r0, r1)``: detector rows of chunk ``c`` needed by slab ``s``.
        max_rows: the most rows of any (slab, chunk): the size of the transfer buffers.
        device_bytes: estimated peak device memory of the plan.
    """

    slabs: tuple[tuple[int, int], ...]
    view_chunks: tuple[tuple[int, int], ...]
    rows: tuple[tuple[tuple[int, int], ...], ...]
    max_rows: int
    device_bytes: int

    @property
    def transferred_rows(self) -> int:
        """View-rows sent to the device in total (over all slabs)."""
        return sum((b - a) * (r1 - r0) for slab in self.rows for (r0, r1), (a, b) in zip(slab, self.view_chunks))


def fdk_bytes_per_view_row(nu: int, nu_filtered: int, n_fft: int, texture_bytes: int) -> int:
    """Estimated device bytes per streamed detector row while a chunk is weighted, filtered and backprojected:
    two transfer buffers, float64 cosine weights, weighted and padded rows, the rfft spectrum and irfft output
    (with cuFFT's work area about the same again), the filtered rows and their texture."""
    raw = 2 * 4 * nu
    weighting = 8 * nu + 4 * nu + 4 * nu_filtered
    fft = 2 * (8 * (n_fft // 2 + 1) + 4 * n_fft)
    texture = 4 * nu_filtered + texture_bytes * nu_filtered
    return raw + weighting + fft + texture


def plan_fdk_streaming(
    geom: ConeGeometry,
    filtered_geom: ConeGeometry,
    budget_bytes: int,
    *,
    n_fft: int,
    views_per_chunk: int = 32,
    texture_bytes: int = 4,
    max_views_per_launch: int = 512,
) -> StreamingPlan:
    """Choose z slabs and view chunks so that FDK of ``geom`` fits in ``budget_bytes`` of device memory.

    ``filtered_geom`` is the geometry of the filtered projections (the detector may be widened for an offset
    detector); rows are counted on it. Chunks shrink first (down to 4 views), then the volume is split in z.
    Raises ``MemoryError`` when even one plane with 1 view per chunk does not fit.
    """
    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
    if views_per_chunk < 1:
        raise ValueError(f"views_per_chunk must be positive, got {views_per_chunk}")
    nz, ny, nx = geom.volume.shape
    nu = geom.detector_shape[1]
    nu_f = filtered_geom.detector_shape[1]
    per_row = fdk_bytes_per_view_row(nu, nu_f, n_fft, texture_bytes)
    chunk = min(views_per_chunk, geom.n_views, max_views_per_launch)
    depth = nz
    row_cache: dict[tuple[tuple[int, int], tuple[int, int]], tuple[int, int]] = {}

    def rows_of(slab: tuple[int, int], views: tuple[int, int]) -> tuple[int, int]:
        key = (slab, views)
        if key not in row_cache:
            row_cache[key] = detector_rows(slab_geometry(filtered_geom, *slab)[views[0]:views[1]])
        return row_cache[key]

    while True:
        slabs = split_range(nz, math.ceil(nz / depth))
        chunks = chunk_range(geom.n_views, chunk)
        # the tallest slab and the largest band of rows set the peak
        tallest = max(z1 - z0 for z0, z1 in slabs)
        probe = [s for s in slabs if s[1] - s[0] == tallest][:2]
        max_rows = max(r1 - r0 for s in probe for c in chunks for r0, r1 in [rows_of(s, c)])
        need = 4 * tallest * ny * nx + per_row * max(b - a for a, b in chunks) * max_rows
        if need <= budget_bytes:
            break
        if chunk > 4:
            chunk = max(4, chunk // 2)
        elif depth > 1:
            depth = math.ceil(depth / 2)
        elif chunk > 1:
            chunk = max(1, chunk // 2)
        else:
            raise MemoryError(
                f"FDK needs about {need / 2**20:.1f} MiB of device memory even for one plane and one view per "
                f"chunk, more than the budget of {budget_bytes / 2**20:.1f} MiB"
            )
    rows = tuple(tuple(rows_of(s, c) for c in chunks) for s in slabs)
    max_rows = max(r1 - r0 for slab in rows for r0, r1 in slab)
    need = 4 * max(z1 - z0 for z0, z1 in slabs) * ny * nx + per_row * max(b - a for a, b in chunks) * max_rows
    return StreamingPlan(tuple(slabs), tuple(chunks), rows, max_rows, need)
