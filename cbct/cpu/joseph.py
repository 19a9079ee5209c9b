"""Ray-driven cone-beam projector (Joseph's method) and its exact adjoint, Numba on the CPU.

Each ray from the source to a detector pixel centre is sampled where it crosses the planes of the voxel grid along
its dominant axis (the axis in which it advances fastest in voxel units); at each crossing the volume is
interpolated linearly in the two other axes (trilinear interpolation at a point on a grid plane), with zeros outside
the grid. The line integral is the sum of the samples times the ray length between planes (mm).

Two forward kernels compute these same samples:

- a general one, one ray at a time (any pose);
- a column kernel for detectors whose columns are parallel to the grid's z axis (every circular scan about z with
  an untilted detector): the rays of one detector column then share their (x, y) trace. Per (view, column) the
  two voxel columns around the trace on each plane are blended once into a small (plane, z) "sheet" (contiguous,
  SIMD), on a copy of the volume with z fastest; each ray of the detector column is a line through that sheet,
  two reads per sample from cache instead of four scattered reads from the volume (SIMD with gathers).

The adjoint scatters along the same samples, so ``<A x, y> = <x, A^T y>`` holds to rounding.
The CUDA kernel in ``csrc/forward_projection.cu`` implements the same sampling.
"""

from __future__ import annotations

import numba
import numpy as np

from cbct.cpu.compile_notice import announce_compilation
from cbct.geometry import ConeGeometry

PAD = 2  # zero voxels around the grid, so interpolation near (and rounding past) the faces needs no bounds checks


def ray_parameters(geom: ConeGeometry) -> np.ndarray:
    """(n_views, 4, 3) float64 rays in voxel-index space ``(i, j, k)``: source, centre of pixel (0, 0), step per
    detector column, step per detector row."""
    to_idx = geom.volume.world_to_index()
    lin, shift = to_idx[:3, :3], to_idx[:3, 3]
    nv, nu = geom.detector_shape
    pix00 = geom.detector_centres - (nu - 1) / 2 * geom.u_vectors - (nv - 1) / 2 * geom.v_vectors
    out = np.empty((geom.n_views, 4, 3))
    out[:, 0] = geom.sources @ lin.T + shift
    out[:, 1] = pix00 @ lin.T + shift
    out[:, 2] = geom.u_vectors @ lin.T
    out[:, 3] = geom.v_vectors @ lin.T
    return out


@numba.njit(inline="always", fastmath=True)
def _setup_ray(rays, view, iv, iu, shape, spacing):
    """Dominant axis, in-plane axes, source and direction (index space), weight per sample (mm), plane range."""
    sx = rays[view, 0, 0]
    sy = rays[view, 0, 1]
    sz = rays[view, 0, 2]
    rx = rays[view, 1, 0] + iu * rays[view, 2, 0] + iv * rays[view, 3, 0] - sx
    ry = rays[view, 1, 1] + iu * rays[view, 2, 1] + iv * rays[view, 3, 1] - sy
    rz = rays[view, 1, 2] + iu * rays[view, 2, 2] + iv * rays[view, 3, 2] - sz
    ax, ay, az = abs(rx), abs(ry), abs(rz)
    # axis order (a, b, c): a dominant; values are indices into (i, j, k)
    if ax >= ay and ax >= az:
        a, b, c = 0, 1, 2
        s_a, s_b, s_c, r_a, r_b, r_c = sx, sy, sz, rx, ry, rz
    elif ay >= az:
        a, b, c = 1, 0, 2
        s_a, s_b, s_c, r_a, r_b, r_c = sy, sx, sz, ry, rx, rz
    else:
        a, b, c = 2, 0, 1
        s_a, s_b, s_c, r_a, r_b, r_c = sz, sx, sy, rz, rx, ry
    length_mm = np.sqrt((rx * spacing[0]) ** 2 + (ry * spacing[1]) ** 2 + (rz * spacing[2]) ** 2)
    weight = length_mm / abs(r_a)
    # slopes of the in-plane coordinates per plane along a
    db = r_b / r_a
    dc = r_c / r_a
    b0 = s_b - s_a * db  # in-plane coordinates at plane index 0
    c0 = s_c - s_a * dc
    # keep planes where the in-plane point lies within (-1, n) on both axes (else the sample is exactly zero)
    lo_b, hi_b = _plane_range(b0, db, shape[b])
    lo_c, hi_c = _plane_range(c0, dc, shape[c])
    m_lo = max(0.0, lo_b, lo_c)
    m_hi = min(shape[a] - 1.0, hi_b, hi_c)
    return a, b, c, b0, c0, db, dc, weight, int(np.ceil(m_lo)), int(np.floor(m_hi))


@numba.njit(inline="always", fastmath=True)
def _sample_site(b0, c0, db, dc, m, sa, sb, sc):
    """Flat index of the lower in-plane neighbour of the sample on plane ``m`` and its two linear weights
    (shared by the projector and its adjoint, so they stay exact transposes)."""
    pb = b0 + m * db
    pc = c0 + m * dc
    fb = np.floor(pb)
    fc = np.floor(pc)
    base = (m + PAD) * sa + (int(fb) + PAD) * sb + (int(fc) + PAD) * sc
    return base, pb - fb, pc - fc


@numba.njit(inline="always", fastmath=True)
def _plane_range(coord0, slope, n):
    """Range of plane indices m for which ``coord0 + m * slope`` lies in (-1, n)."""
    if slope == 0.0:
        if coord0 <= -1.0 or coord0 >= n:
            return 1.0, -1.0
        return -1e30, 1e30
    t1 = (-1.0 - coord0) / slope
    t2 = (n - coord0) / slope
    return min(t1, t2), max(t1, t2)


@numba.njit(parallel=True, fastmath=True, cache=True)
def _project_kernel(padded, rays, shape, spacing, out):
    """padded: (nz+4, ny+4, nx+4) volume with the grid at offset PAD; out: (n_views, nv, nu)."""
    n_views, nv, nu = out.shape
    strides = (1, padded.shape[2], padded.shape[1] * padded.shape[2])  # flat strides of i, j, k
    flat = padded.reshape(-1)
    for row in numba.prange(n_views * nv):
        view = row // nv
        iv = row - view * nv
        for iu in range(nu):
            out[view, iv, iu] = _sample_ray(flat, strides, rays, view, iv, iu, shape, spacing)


COLUMN_TOL = 1e-12  # relative horizontal size of the detector v vector below which detector columns are vertical


def has_vertical_columns(rays: np.ndarray, n_rows: int) -> bool:
    """Whether every view's detector v vector is parallel to the grid's k axis (in index space), so the rays of
    one detector column share their (i, j) trace. ``rays``: (n_views, 4, 3) from :func:`ray_parameters`."""
    v = rays[:, 3]
    return bool(np.all(np.abs(v[:, :2]) * max(n_rows, 1) <= COLUMN_TOL * np.abs(v[:, 2:3])))


@numba.njit(inline="always", fastmath=True)
def _sample_ray(flat, strides, rays, view, iv, iu, shape, spacing):
    """One ray's line integral by the general sampling of :func:`_project_kernel` (any flat layout)."""
    a, b, c, b0, c0, db, dc, weight, m_first, m_last = _setup_ray(rays, view, iv, iu, shape, spacing)
    sa, sb, sc = strides[a], strides[b], strides[c]
    acc = 0.0
    for m in range(m_first, m_last + 1):
        base, wb, wc = _sample_site(b0, c0, db, dc, m, sa, sb, sc)
        acc += (1.0 - wc) * ((1.0 - wb) * flat[base] + wb * flat[base + sb]) + wc * (
            (1.0 - wb) * flat[base + sc] + wb * flat[base + sb + sc])
    return acc * weight


@numba.njit(parallel=True, fastmath=True, cache=True)
def _project_columns_kernel(flat, strides, rays, shape, spacing, out, n_chunks):
    """Detector columns whose rays share their (i, j) trace (vertical detector columns).

    flat: the padded volume, flattened, with k fastest (stride 1, ``nz + 2 PAD`` values per column);
    strides: (3,) int64 flat strides of (i, j, k); out: (n_views, nv, nu). The (view, column) tasks go in
    ``n_chunks`` contiguous chunks, one scratch buffer each.

    Per column: the trace crosses the planes of its dominant horizontal axis; on each plane the two voxel
    columns around the trace are blended with the in-plane weight into one row of a (plane, k) image ``sheet``
    (contiguous, SIMD); each ray of the column is then a line through the sheet, sampled with linear
    interpolation along k: two reads per sample from a sheet that stays in cache. Rays whose dominant axis is
    k are sampled as in :func:`_project_kernel`.
    """
    n_views, nv, nu = out.shape
    nk = shape[2] + 2 * PAD
    max_planes = max(shape[0], shape[1])
    n_tasks = n_views * nu
    for chunk in numba.prange(n_chunks):
        sheet = np.zeros(max_planes * nk, dtype=flat.dtype)
        plane = np.empty(max_planes, dtype=flat.dtype)
        ray = np.empty(2, dtype=flat.dtype)  # c0, dc of the current ray in the data dtype
        for task in range(chunk * n_tasks // n_chunks, (chunk + 1) * n_tasks // n_chunks):
            view = task // nu
            iu = task - view * nu
            s = rays[view, 0]
            rx = rays[view, 1, 0] + iu * rays[view, 2, 0] - s[0]
            ry = rays[view, 1, 1] + iu * rays[view, 2, 1] - s[1]
            if abs(rx) >= abs(ry):
                a, b, r_a, r_b = 0, 1, rx, ry
            else:
                a, b, r_a, r_b = 1, 0, ry, rx
            s_a = s[a]
            sa = strides[a]
            sb = strides[b]
            db = r_b / r_a
            b0 = s[b] - s_a * db
            lo_b, hi_b = _plane_range(b0, db, shape[b])
            m_lo = int(np.ceil(max(0.0, lo_b)))
            m_hi = int(np.floor(min(shape[a] - 1.0, hi_b)))
            n_planes = max(0, m_hi - m_lo + 1)
            for t in range(n_planes):
                m = m_lo + t
                pb = b0 + m * db
                fb = np.floor(pb)
                ray[0] = pb - fb
                wb = ray[0]
                src0 = np.uint64((m + PAD) * sa + (int(fb) + PAD) * sb)
                src1 = src0 + np.uint64(sb)
                row = np.uint64(t * nk)
                for z in range(nk):
                    zu = np.uint64(z)
                    lo = flat[src0 + zu]
                    sheet[row + zu] = lo + wb * (flat[src1 + zu] - lo)
                plane[t] = m
            for iv in range(nv):
                rz = rays[view, 1, 2] + iu * rays[view, 2, 2] + iv * rays[view, 3, 2] - s[2]
                if abs(rz) > abs(r_a):
                    out[view, iv, iu] = _sample_ray(flat, strides, rays, view, iv, iu, shape, spacing)
                    continue
                length_mm = np.sqrt((rx * spacing[0]) ** 2 + (ry * spacing[1]) ** 2 + (rz * spacing[2]) ** 2)
                weight = length_mm / abs(r_a)
                dc = rz / r_a
                c0 = s[2] - s_a * dc
                lo_c, hi_c = _plane_range(c0, dc, shape[2])  # may be +-1e30: clip before converting to int
                t_first = int(np.ceil(max(float(m_lo), lo_c))) - m_lo
                t_last = int(np.floor(min(float(m_hi), hi_c))) - m_lo
                ray[0] = c0 + PAD  # k coordinate in the padded column
                ray[1] = dc
                c0f = ray[0]
                dcf = ray[1]
                acc = sheet[0] * 0
                for t in range(t_first, t_last + 1):
                    pc = c0f + plane[t] * dcf
                    fc = np.floor(pc)
                    wc = pc - fc
                    base = np.uint64(t * nk + int(fc))
                    lo = sheet[base]
                    acc += lo + wc * (sheet[base + np.uint64(1)] - lo)
                out[view, iv, iu] = acc * weight


@numba.njit(parallel=True, fastmath=True, cache=True)
def _adjoint_kernel(proj, rays, views, shape, spacing, acc):
    """Scatter ``proj[views]`` along the rays into acc: (n_chunks, nz+4, ny+4, nx+4), one buffer per chunk."""
    n_chunks = acc.shape[0]
    _, nv, nu = proj.shape
    strides = (1, acc.shape[3], acc.shape[2] * acc.shape[3])
    for chunk in numba.prange(n_chunks):
        flat = acc[chunk].reshape(-1)
        for n in range(chunk, views.shape[0], n_chunks):
            view = views[n]
            for iv in range(nv):
                for iu in range(nu):
                    value = proj[view, iv, iu]
                    if value == 0.0:
                        continue
                    a, b, c, b0, c0, db, dc, weight, m_first, m_last = _setup_ray(rays, view, iv, iu, shape, spacing)
                    sa, sb, sc = strides[a], strides[b], strides[c]
                    value = value * weight
                    for m in range(m_first, m_last + 1):
                        base, wb, wc = _sample_site(b0, c0, db, dc, m, sa, sb, sc)
                        flat[base] += (1.0 - wc) * (1.0 - wb) * value
                        flat[base + sb] += (1.0 - wc) * wb * value
                        flat[base + sc] += wc * (1.0 - wb) * value
                        flat[base + sb + sc] += wc * wb * value


def _grid_args(geom: ConeGeometry) -> tuple[np.ndarray, np.ndarray]:
    nz, ny, nx = geom.volume.shape
    dz, dy, dx = geom.volume.voxel_size
    return np.array([nx, ny, nz], dtype=np.int64), np.array([dx, dy, dz], dtype=np.float64)


def project(volume: np.ndarray, geom: ConeGeometry) -> np.ndarray:
    """Line integrals (view, v, u) of ``volume`` (z, y, x), same float dtype; inputs already validated."""
    shape, spacing = _grid_args(geom)
    rays = ray_parameters(geom)
    out = np.empty(geom.projection_shape, dtype=volume.dtype)
    if has_vertical_columns(rays, geom.detector_shape[0]):
        # k (z) fastest: a ray of a vertical detector column moves along k between the columns of its trace
        nz, ny, nx = volume.shape
        padded = np.zeros((ny + 2 * PAD, nx + 2 * PAD, nz + 2 * PAD), dtype=volume.dtype)
        padded[PAD:-PAD, PAD:-PAD, PAD:-PAD] = np.transpose(volume, (1, 2, 0))
        strides = np.array([nz + 2 * PAD, (nx + 2 * PAD) * (nz + 2 * PAD), 1], dtype=np.int64)
        n_chunks = min(geom.n_views * geom.detector_shape[1], 8 * numba.get_num_threads())
        announce_compilation(_project_columns_kernel, "forward projection (vertical columns)")
        _project_columns_kernel(padded.reshape(-1), strides, rays, shape, spacing, out, n_chunks)
        return out
    padded = np.zeros(tuple(n + 2 * PAD for n in volume.shape), dtype=volume.dtype)
    padded[PAD:-PAD, PAD:-PAD, PAD:-PAD] = volume
    announce_compilation(_project_kernel, "forward projection")
    _project_kernel(padded, rays, shape, spacing, out)
    return out


def backproject_matched(projections: np.ndarray, geom: ConeGeometry, views: np.ndarray | None = None) -> np.ndarray:
    """Exact adjoint of :func:`project` restricted to ``views`` (all by default) → (z, y, x)."""
    views = np.arange(geom.n_views, dtype=np.int64) if views is None else np.asarray(views, dtype=np.int64)
    n_chunks = max(1, min(numba.get_num_threads(), views.size))
    acc = np.zeros((n_chunks, *(n + 2 * PAD for n in geom.volume.shape)), dtype=projections.dtype)
    shape, spacing = _grid_args(geom)
    announce_compilation(_adjoint_kernel, "matched backprojection")
    _adjoint_kernel(projections, ray_parameters(geom), views, shape, spacing, acc)
    total = acc[0]
    for extra in acc[1:]:
        total += extra
    return np.ascontiguousarray(total[PAD:-PAD, PAD:-PAD, PAD:-PAD])
