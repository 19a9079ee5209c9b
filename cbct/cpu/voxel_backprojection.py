"""Voxel-driven cone-beam backprojection with FDK distance weights, Numba on the CPU.

Every voxel centre is projected onto each detector with the view's 3x4 projection matrix; the projection is
sampled there with bilinear interpolation (zero outside the detector) and weighted by ``(DSO / depth)**2``.
Views are grouped in contiguous segments; each segment accumulates into its own output volume, so one pass over
the voxels gives the K limited-angle sub-volumes of a segmented backprojection (K = 1: the plain backprojection).

The CUDA kernel in ``csrc/backprojection.cu`` implements the same sampling.
"""

from __future__ import annotations

import numba
import numpy as np

from cbct.geometry import ConeGeometry

PAD_LO = 1  # zero border of the padded projections below index 0
PAD_HI = 2  # and above the last index (room for the neighbour of a clamped coordinate)


def index_projection_matrices(geom: ConeGeometry) -> np.ndarray:
    """(n_views, 3, 4) float64 matrices taking voxel indices ``(i, j, k, 1)`` to ``(iu * w, iv * w, w)``."""
    return geom.projection_matrices() @ geom.volume.index_to_world()


@numba.njit(parallel=True, fastmath=True, cache=True)
def _fdk_backproject_kernel(padded, mats, segment_starts, out):
    """padded: (n_views, nv + 3, nu + 3) projections with the detector at offset PAD_LO;
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


def backproject_fdk(projections: np.ndarray, geom: ConeGeometry, segment_starts: np.ndarray | None = None) -> np.ndarray:
    """FDK-weighted voxel-driven backprojection → (K, z, y, x) with K = len(segment_starts) - 1 (default 1)."""
    if segment_starts is None:
        segment_starts = np.array([0, geom.n_views], dtype=np.int64)
    n_views, nv, nu = projections.shape
    padded = np.zeros((n_views, nv + PAD_LO + PAD_HI, nu + PAD_LO + PAD_HI), dtype=projections.dtype)
    padded[:, PAD_LO:PAD_LO + nv, PAD_LO:PAD_LO + nu] = projections
    mats = index_projection_matrices(geom).astype(projections.dtype)
    out = np.zeros((len(segment_starts) - 1, *geom.volume.shape), dtype=projections.dtype)
    _fdk_backproject_kernel(padded, mats, np.asarray(segment_starts, dtype=np.int64), out)
    return out
