"""Voxel-driven cone-beam backprojection with FDK distance weights, Numba on the CPU.

Every voxel centre is projected onto each detector with the view's 3x4 projection matrix; the projection is
sampled there with bilinear interpolation (zero outside the detector) and weighted by ``(DSO / depth)**2``.
Views are grouped in contiguous segments; each segment accumulates into its own output volume, so one pass over
the voxels gives the K limited-angle sub-volumes of a segmented backprojection (K = 1: the plain backprojection).

Two kernels compute the same sums:

- a general one for any pose (tilted detectors, rigid motion);
- a fast one for views whose detector column ``u`` and depth ``w`` do not change along the volume's ``z`` axis
  (every circular scan about ``z`` with an untilted detector, detector and volume offsets included). There ``u``,
  its bilinear weight, the distance weight and ``v`` at ``k = 0`` are computed once per view, row ``j`` and column
  ``i`` for a slab of z slices (in float64), and ``v`` advances linearly with ``k``: no division per voxel. Tasks
  are slabs of z slices times blocks of rows; views go in blocks whose detector rows for the slab stay in cache.
  For each voxel the innermost loop sums the block's views (contiguous set-up values, four gathers per view) into
  a register, which the compiler turns into a SIMD reduction with gathers; each output voxel is read and written
  once per block. Arithmetic per voxel runs in the projections' dtype (float32: 16 lanes with AVX-512).

The CUDA kernel in ``csrc/backprojection.cu`` implements the same sampling.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from cbct.cpu.compile_notice import announce_compilation
from cbct.geometry import ConeGeometry

PAD_LO = 1  # zero border of the padded projections below index 0
PAD_HI = 2  # and above the last index (room for the neighbour of a clamped coordinate)

SLAB = 16  # z slices per task of the fast kernel
VIEW_BLOCK = 32  # views per block: one SIMD reduction over the block per voxel; their slab rows stay in L2
Z_INVARIANCE_TOL = 1e-9  # relative size of the z terms of u * w and w below which the fast kernel applies


def index_projection_matrices(geom: ConeGeometry) -> np.ndarray:
    """(n_views, 3, 4) float64 matrices taking voxel indices ``(i, j, k, 1)`` to ``(iu * w, iv * w, w)``."""
    return geom.projection_matrices() @ geom.volume.index_to_world()


def is_z_invariant(mats: np.ndarray, shape: tuple[int, int, int]) -> bool:
    """Whether ``u`` and ``w`` of every view ignore the slice index ``k`` (to ``Z_INVARIANCE_TOL``).

    ``mats``: (n_views, 3, 4) index projection matrices; ``shape``: volume ``(nz, ny, nx)``."""
    nz, ny, nx = shape
    for row in (0, 2):
        z_term = np.abs(mats[:, row, 2]) * max(nz - 1, 1)
        rest = np.abs(mats[:, row, 0]) * nx + np.abs(mats[:, row, 1]) * ny + np.abs(mats[:, row, 3])
        if np.any(z_term > Z_INVARIANCE_TOL * rest):
            return False
    return True


@numba.njit(parallel=True, fastmath=True, cache=True)
def _fdk_backproject_kernel(padded, mats, segment_starts, out):
    """General poses. padded: (n_views, nv + 3, nu + 3) projections with the detector at offset PAD_LO;
    mats: (n_views, 3, 4) index projection matrices; segment_starts: (K + 1,) first view of each segment;
    out: (K, nz, ny, nx), accumulated into."""
    n_seg, nz, ny, nx = out.shape
    nv = padded.shape[1] - 3
    nu = padded.shape[2] - 3
    u_max = nu * 1.0
    v_max = nv * 1.0
    for k in numba.prange(nz):
        for seg in range(n_seg):
            plane = out[seg, k]
            for view in range(segment_starts[seg], segment_starts[seg + 1]):
                m = mats[view]
                proj = padded[view]
                for j in range(ny):
                    cu = m[0, 1] * j + m[0, 2] * k + m[0, 3]
                    cv = m[1, 1] * j + m[1, 2] * k + m[1, 3]
                    cw = m[2, 1] * j + m[2, 2] * k + m[2, 3]
                    row = plane[j]
                    for i in range(nx):
                        inv_w = 1.0 / (cw + m[2, 0] * i)
                        u = (cu + m[0, 0] * i) * inv_w
                        v = (cv + m[1, 0] * i) * inv_w
                        u = min(max(u, -1.0), u_max)
                        v = min(max(v, -1.0), v_max)
                        fu = np.floor(u)
                        fv = np.floor(v)
                        wu = u - fu
                        wv = v - fv
                        iu = int(fu) + 1
                        iv = int(fv) + 1
                        top = proj[iv, iu] + wu * (proj[iv, iu + 1] - proj[iv, iu])
                        bottom = proj[iv + 1, iu] + wu * (proj[iv + 1, iu + 1] - proj[iv + 1, iu])
                        row[i] += (top + wv * (bottom - top)) * (inv_w * inv_w)


@numba.njit(parallel=True, fastmath=True, cache=True)
def _fdk_backproject_z_invariant(padded, plane_len, nu_padded, mats, segment_starts, out, consts, slab, view_block, row_block):
    """Views whose ``u`` and ``w`` do not depend on ``k``.

    padded: flat padded projections, ``plane_len = (nv + 3) * (nu + 3)`` per view, rows of ``nu_padded = nu + 3``;
    mats: (n_views, 3, 4) float64; consts: (nz + 2,) in the data dtype: ``k`` for every slice, then 0 and
    ``nv + 1`` (the clamp range of the padded row coordinate); out: (K, nz, ny, nx), accumulated into.
    Tasks are (slab of ``slab`` slices) x (block of ``row_block`` rows); views go in blocks of ``view_block``.
    """
    n_seg, nz, ny, nx = out.shape
    nu = nu_padded - 3
    u_max = nu * 1.0
    v_lo = consts[nz]
    v_hi = consts[nz + 1]
    n_slabs = (nz + slab - 1) // slab
    n_row_blocks = (ny + row_block - 1) // row_block
    for task in numba.prange(n_slabs * n_row_blocks):
        slab_index = task // n_row_blocks
        k0 = slab_index * slab
        k1 = min(nz, k0 + slab)
        j0 = (task - slab_index * n_row_blocks) * row_block
        j1 = min(ny, j0 + row_block)
        # per column i and view b of the block: flat offset of the left neighbour in the view's first row
        # (unsigned: no negative-index wraparound), u weight, (DSO / depth)^2, row coordinate at k = 0, its step
        col = np.empty((nx, view_block), dtype=np.uint64)
        wu = np.empty((nx, view_block), dtype=out.dtype)
        dist = np.empty((nx, view_block), dtype=out.dtype)
        v0 = np.empty((nx, view_block), dtype=out.dtype)
        dv = np.empty((nx, view_block), dtype=out.dtype)
        for seg in range(n_seg):
            for first in range(segment_starts[seg], segment_starts[seg + 1], view_block):
                n_block = min(view_block, segment_starts[seg + 1] - first)
                for j in range(j0, j1):
                    for b in range(n_block):
                        m = mats[first + b]
                        cu = m[0, 1] * j + m[0, 3]
                        cv = m[1, 1] * j + m[1, 3]
                        cw = m[2, 1] * j + m[2, 3]
                        offset = (first + b) * plane_len
                        for i in range(nx):
                            inv_w = 1.0 / (cw + m[2, 0] * i)
                            u = min(max((cu + m[0, 0] * i) * inv_w, -1.0), u_max) + 1.0
                            fu = math.floor(u)
                            col[i, b] = offset + fu
                            wu[i, b] = u - fu
                            dist[i, b] = inv_w * inv_w
                            v0[i, b] = (cv + m[1, 0] * i) * inv_w + 1.0
                            dv[i, b] = m[1, 2] * inv_w
                    for k in range(k0, k1):
                        kf = consts[k]
                        row = out[seg, k, j]
                        for i in range(nx):
                            cb = col[i]
                            wb = wu[i]
                            db = dist[i]
                            vb0 = v0[i]
                            dvb = dv[i]
                            acc = row[i] * 0
                            for b in range(n_block):
                                v = min(max(vb0[b] + kf * dvb[b], v_lo), v_hi)
                                fv = np.floor(v)
                                wv = v - fv
                                base = np.uint64(int(fv) * nu_padded) + cb[b]
                                w = wb[b]
                                p00 = padded[base]
                                p01 = padded[base + np.uint64(1)]
                                p10 = padded[base + np.uint64(nu_padded)]
                                p11 = padded[base + np.uint64(nu_padded + 1)]
                                top = p00 + w * (p01 - p00)
                                bottom = p10 + w * (p11 - p10)
                                acc += (top + wv * (bottom - top)) * db[b]
                            row[i] += acc


def backproject_fdk(projections: np.ndarray, geom: ConeGeometry, segment_starts: np.ndarray | None = None) -> np.ndarray:
    """FDK-weighted voxel-driven backprojection → (K, z, y, x) with K = len(segment_starts) - 1 (default 1)."""
    if segment_starts is None:
        segment_starts = np.array([0, geom.n_views], dtype=np.int64)
    segment_starts = np.asarray(segment_starts, dtype=np.int64)
    n_views, nv, nu = projections.shape
    dtype = projections.dtype
    padded = np.zeros((n_views, nv + PAD_LO + PAD_HI, nu + PAD_LO + PAD_HI), dtype=dtype)
    padded[:, PAD_LO:PAD_LO + nv, PAD_LO:PAD_LO + nu] = projections
    mats = index_projection_matrices(geom)
    out = np.zeros((len(segment_starts) - 1, *geom.volume.shape), dtype=dtype)
    nz, ny, nx = geom.volume.shape
    if is_z_invariant(mats, geom.volume.shape):
        consts = np.concatenate([np.arange(nz), [0.0, nv + 1.0]]).astype(dtype)
        slab = min(SLAB, nz)
        n_slabs = -(-nz // slab)
        # enough tasks to balance the threads, rows in blocks as long as possible
        n_row_blocks = min(ny, -(-4 * numba.get_num_threads() // n_slabs))
        row_block = -(-ny // n_row_blocks)
        announce_compilation(_fdk_backproject_z_invariant, "FDK backprojection (circular scans)")
        _fdk_backproject_z_invariant(
            padded.reshape(-1), padded.shape[1] * padded.shape[2], nu + PAD_LO + PAD_HI, mats, segment_starts, out, consts,
            slab, VIEW_BLOCK, row_block,
        )
    else:
        announce_compilation(_fdk_backproject_kernel, "FDK backprojection")
        _fdk_backproject_kernel(padded, mats.astype(dtype), segment_starts, out)
    return out
