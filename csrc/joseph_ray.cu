// Ray set-up shared by the Joseph projector (forward_projection.cu) and its adjoint (backprojection.cu).
// Included textually: cbct/cuda/sources.py inlines `#include "joseph_ray.cu"` before NVRTC compiles a kernel
// file; offline nvcc finds it with -I csrc. It defines no kernels.
//
// A ray runs from the source to the centre of detector pixel (iu, iv), both in voxel-index space (i, j, k) of the
// grid. Its dominant axis A is the one along which it advances fastest in index units; it is sampled where it
// crosses the planes m = 0 .. n_A - 1 of that axis, and only where its in-plane point lies strictly inside
// (-1, n) on both other axes (elsewhere every bilinear tap is outside the grid and the sample is exactly 0).
// Same arithmetic as cbct/cpu/joseph.py (_setup_ray, _plane_range), in double precision; the per-plane loop then
// runs in float32 from the first sampled plane, so coordinates stay within about 1e-4 voxel of the CPU twin.

#ifndef CBCT_JOSEPH_RAY_CU
#define CBCT_JOSEPH_RAY_CU

struct JosephRay {
    int axis;       // dominant axis A: 0 (i, x), 1 (j, y) or 2 (k, z)
    int m_first;    // first and last sampled plane along A (m_first > m_last: the ray misses the grid)
    int m_last;
    float b_first;  // in-plane coordinates at plane m_first: b, c are the other two axes in increasing order
    float c_first;
    float db;       // change of b and c per plane
    float dc;
    float weight;   // ray length between consecutive planes, mm
};

// Range of plane indices m with coord0 + m * slope strictly inside (-1, n); empty as (1, -1).
__device__ __forceinline__ void joseph_plane_range(double coord0, double slope, int n, double& lo, double& hi) {
    if (slope == 0.0) {
        if (coord0 <= -1.0 || coord0 >= (double)n) {
            lo = 1.0;
            hi = -1.0;
        } else {
            lo = -1e30;
            hi = 1e30;
        }
        return;
    }
    const double t1 = (-1.0 - coord0) / slope;
    const double t2 = ((double)n - coord0) / slope;
    lo = fmin(t1, t2);
    hi = fmax(t1, t2);
}

// r: 12 doubles of one view (source, centre of pixel (0, 0), step per column, step per row; index space).
// Returns false when the ray samples no plane.
__device__ __forceinline__ bool joseph_setup_ray(const double* r, int iu, int iv, int nx, int ny, int nz, double dx,
                                                 double dy, double dz, JosephRay& ray) {
    const double sx = r[0], sy = r[1], sz = r[2];
    const double rx = r[3] + iu * r[6] + iv * r[9] - sx;
    const double ry = r[4] + iu * r[7] + iv * r[10] - sy;
    const double rz = r[5] + iu * r[8] + iv * r[11] - sz;
    const double ax = fabs(rx), ay = fabs(ry), az = fabs(rz);
    double s_a, s_b, s_c, r_a, r_b, r_c;
    int n_a, n_b, n_c;
    if (ax >= ay && ax >= az) {
        ray.axis = 0; s_a = sx; s_b = sy; s_c = sz; r_a = rx; r_b = ry; r_c = rz; n_a = nx; n_b = ny; n_c = nz;
    } else if (ay >= az) {
        ray.axis = 1; s_a = sy; s_b = sx; s_c = sz; r_a = ry; r_b = rx; r_c = rz; n_a = ny; n_b = nx; n_c = nz;
    } else {
        ray.axis = 2; s_a = sz; s_b = sx; s_c = sy; r_a = rz; r_b = rx; r_c = ry; n_a = nz; n_b = nx; n_c = ny;
    }
    const double length_mm = sqrt((rx * dx) * (rx * dx) + (ry * dy) * (ry * dy) + (rz * dz) * (rz * dz));
    const double db = r_b / r_a;
    const double dc = r_c / r_a;
    const double b0 = s_b - s_a * db;  // in-plane coordinates at plane 0
    const double c0 = s_c - s_a * dc;
    double lo_b, hi_b, lo_c, hi_c;
    joseph_plane_range(b0, db, n_b, lo_b, hi_b);
    joseph_plane_range(c0, dc, n_c, lo_c, hi_c);
    const double m_lo = fmax(0.0, fmax(lo_b, lo_c));
    const double m_hi = fmin((double)(n_a - 1), fmin(hi_b, hi_c));
    if (!(m_lo <= m_hi)) {
        return false;
    }
    ray.m_first = (int)ceil(m_lo);
    ray.m_last = (int)floor(m_hi);
    ray.b_first = (float)(b0 + ray.m_first * db);
    ray.c_first = (float)(c0 + ray.m_first * dc);
    ray.db = (float)db;
    ray.dc = (float)dc;
    ray.weight = (float)(length_mm / fabs(r_a));
    return ray.m_first <= ray.m_last;
}

#endif  // CBCT_JOSEPH_RAY_CU
