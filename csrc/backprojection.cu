// Cone-beam backprojection kernels (compiled at run time by CuPy/NVRTC; see cbct/cuda/compile.py).
//
// fdk_backproject<NZ, HW_FILTER>
//     Voxel-driven backprojection with FDK distance weights: every voxel centre is projected onto each view's
//     detector with the view's 3x4 index projection matrix P (voxel indices (i, j, k, 1) -> (u w, v w, w), u and v
//     continuous detector column/row indices with 0 at the first pixel centre), the projection is sampled there
//     with bilinear interpolation (zero outside the detector) and weighted by 1 / w^2. The CPU twin is
//     cbct/cpu/voxel_backprojection.py.
//
//     * Projections live in a layered 2D texture (one layer per view of the launch) with cudaAddressModeBorder
//       (border colour 0), unnormalised coordinates: texel (iu, iv) has its centre at (iu + 0.5, iv + 0.5).
//     * HW_FILTER = false (default): the texture is point-sampled and the four neighbours are blended in software
//       with exact float32 weights, so results agree with the CPU twin to float32 rounding. HW_FILTER = true: one
//       fetch with the texture unit's bilinear filter (cudaFilterModeLinear), whose weights are 9-bit fixed point
//       (8 fractional bits): faster, but interpolation errors up to ~2e-3 of the local pixel-to-pixel difference.
//     * A float16 projection texture (cudaChannelFormatKindFloat, 16 bits) needs no other code: texture fetches
//       promote half texels to float, and the accumulation stays float32.
//     * Per-view matrices (and the segment of each view) live in constant memory, at most CBCT_MAX_FDK_VIEWS views
//       per launch; the host uploads them on the launch stream right before the launch.
//     * A thread owns NZ voxels along z (same x, y) and accumulates them in registers over all views of the
//       launch; views are grouped in contiguous segments, and when the segment changes the accumulators are added
//       to that segment's sub-volume: K segments in one pass over the views. Output (K, nz, ny, nx) float32 is
//       accumulated into (+=); the host zeroes it.
//
// joseph_backproject
//     Ray-driven scatter: the exact adjoint of joseph_project (csrc/forward_projection.cu), with float32
//     atomicAdd into the volume. Rays as in forward_projection.cu (constant memory, set-up in double precision by
//     joseph_ray.cu); the projection array is read directly from global memory (one value per ray).

#include "bilinear.cu"
#include "joseph_ray.cu"

#ifndef CBCT_MAX_FDK_VIEWS
#define CBCT_MAX_FDK_VIEWS 512
#endif
#ifndef CBCT_MAX_RAY_VIEWS
#define CBCT_MAX_RAY_VIEWS 256
#endif

// FDK: rows of the 3x4 index projection matrix of each view of the launch (3 float4 per view).
__constant__ float4 c_fdk_rows[3 * CBCT_MAX_FDK_VIEWS];
// FDK: segment (output sub-volume) of each view of the launch; non-decreasing.
__constant__ int c_fdk_segment[CBCT_MAX_FDK_VIEWS];
// Matched backprojection: per ray view of the launch, in voxel-index space (i, j, k): source (3),
// centre of detector pixel (0, 0) (3), step per detector column (3), step per detector row (3).
__constant__ double c_rays[12 * CBCT_MAX_RAY_VIEWS];
// Matched backprojection: the view (first index of the projection array) of each ray view of the launch.
__constant__ int c_ray_view[CBCT_MAX_RAY_VIEWS];

namespace {

// Bilinear sample of layer `layer` at continuous detector indices (u, v), zero outside the detector.
// u and v are clamped to [-1, nu] x [-1, nv] first (as the CPU twin), which keeps the float-to-int paths finite
// and changes nothing else: every tap of a clamped coordinate lies on the zero border or has weight 0.
template <bool HW_FILTER>
__device__ __forceinline__ float sample_detector(cudaTextureObject_t proj, float u, float v, int layer) {
    if (HW_FILTER) {
        return tex2DLayered<float>(proj, u + 0.5f, v + 0.5f, layer);
    } else {
        return bilinear(u, v, [&](float x, float y) { return tex2DLayered<float>(proj, x, y, layer); });
    }
}

template <int NZ>
__device__ __forceinline__ void flush_segment(float* __restrict__ out, const float (&acc)[NZ], int segment,
                                              long long segment_stride, long long voxel, long long plane_stride,
                                              int k0, int nz) {
    float* dst = out + segment * segment_stride + voxel;
#pragma unroll
    for (int z = 0; z < NZ; ++z) {
        if (k0 + z < nz) {
            dst[z * plane_stride] += acc[z];
        }
    }
}

}  // namespace

// grid: (ceil(nx / blockDim.x), ceil(ny / blockDim.y), ceil(nz / NZ)); block: e.g. (32, 8).
// proj: layered texture of n_views layers (nu x nv texels each); out: (K, nz, ny, nx) float32, accumulated into.
template <int NZ, bool HW_FILTER>
__global__ void __launch_bounds__(256)
fdk_backproject(cudaTextureObject_t proj, float* __restrict__ out, int nx, int ny, int nz, int nu, int nv,
                int n_views) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int j = blockIdx.y * blockDim.y + threadIdx.y;
    const int k0 = blockIdx.z * NZ;
    if (i >= nx || j >= ny || n_views <= 0) {
        return;
    }
    const long long plane_stride = (long long)nx * ny;
    const long long segment_stride = plane_stride * nz;
    const long long voxel = (long long)k0 * plane_stride + (long long)j * nx + i;
    const float fi = (float)i;
    const float fj = (float)j;
    const float fk0 = (float)k0;
    const float u_max = (float)nu;
    const float v_max = (float)nv;

    float acc[NZ];
#pragma unroll
    for (int z = 0; z < NZ; ++z) {
        acc[z] = 0.0f;
    }
    int segment = c_fdk_segment[0];
    for (int view = 0; view < n_views; ++view) {
        const int view_segment = c_fdk_segment[view];
        if (view_segment != segment) {  // uniform across the launch: every thread walks the same views
            flush_segment<NZ>(out, acc, segment, segment_stride, voxel, plane_stride, k0, nz);
#pragma unroll
            for (int z = 0; z < NZ; ++z) {
                acc[z] = 0.0f;
            }
            segment = view_segment;
        }
        const float4 ru = c_fdk_rows[3 * view];
        const float4 rv = c_fdk_rows[3 * view + 1];
        const float4 rw = c_fdk_rows[3 * view + 2];
        // (u w, v w, w) at (i, j, k0); each further z step adds the k column of the matrix
        const float uw0 = fmaf(ru.x, fi, fmaf(ru.y, fj, fmaf(ru.z, fk0, ru.w)));
        const float vw0 = fmaf(rv.x, fi, fmaf(rv.y, fj, fmaf(rv.z, fk0, rv.w)));
        const float w0 = fmaf(rw.x, fi, fmaf(rw.y, fj, fmaf(rw.z, fk0, rw.w)));
#pragma unroll
        for (int z = 0; z < NZ; ++z) {
            const float fz = (float)z;
            const float inv_w = __frcp_rn(fmaf(rw.z, fz, w0));
            float u = fmaf(ru.z, fz, uw0) * inv_w;
            float v = fmaf(rv.z, fz, vw0) * inv_w;
            u = fminf(fmaxf(u, -1.0f), u_max);
            v = fminf(fmaxf(v, -1.0f), v_max);
            acc[z] = fmaf(sample_detector<HW_FILTER>(proj, u, v, view), inv_w * inv_w, acc[z]);
        }
    }
    flush_segment<NZ>(out, acc, segment, segment_stride, voxel, plane_stride, k0, nz);
}

namespace {

// Scatter `value` (already times the ray weight) along `ray`, whose dominant axis is A (0: i, 1: j, 2: k):
// planes m_first..m_last of axis A at in-plane coordinates (b, c) = (b_first + t db, c_first + t dc),
// t = m - m_first, (b, c) the other two axes in increasing order. Bilinear weights as the forward projector;
// taps outside the grid are dropped.
template <int A>
__device__ __forceinline__ void scatter_ray(float* __restrict__ vol, int nx, int ny, int nz, const JosephRay& ray,
                                            float value) {
    const long long stride_i = 1;
    const long long stride_j = nx;
    const long long stride_k = (long long)nx * ny;
    const long long sa = A == 0 ? stride_i : (A == 1 ? stride_j : stride_k);
    const long long sb = A == 0 ? stride_j : stride_i;
    const long long sc = A == 2 ? stride_j : stride_k;
    const int nb = A == 0 ? ny : nx;
    const int nc = A == 2 ? ny : nz;
    for (int m = ray.m_first; m <= ray.m_last; ++m) {
        const float t = (float)(m - ray.m_first);
        const float pb = fmaf(t, ray.db, ray.b_first);
        const float pc = fmaf(t, ray.dc, ray.c_first);
        const float fb = floorf(pb);
        const float fc = floorf(pc);
        const float wb = pb - fb;
        const float wc = pc - fc;
        const int ib = (int)fb;
        const int ic = (int)fc;
        const bool b0 = (unsigned)ib < (unsigned)nb;
        const bool b1 = (unsigned)(ib + 1) < (unsigned)nb;
        const bool c0 = (unsigned)ic < (unsigned)nc;
        const bool c1 = (unsigned)(ic + 1) < (unsigned)nc;
        float* base = vol + (long long)m * sa + (long long)ib * sb + (long long)ic * sc;
        const float v0 = (1.0f - wc) * value;
        const float v1 = wc * value;
        if (b0 && c0) atomicAdd(base, (1.0f - wb) * v0);
        if (b1 && c0) atomicAdd(base + sb, wb * v0);
        if (b0 && c1) atomicAdd(base + sc, (1.0f - wb) * v1);
        if (b1 && c1) atomicAdd(base + sb + sc, wb * v1);
    }
}

}  // namespace

// grid: (ceil(nu / blockDim.x), ceil(nv / blockDim.y), n_ray_views); block: e.g. (16, 16).
// proj: (n_views_total, nv, nu) float32, row-major; vol: (nz, ny, nx) float32, accumulated into atomically.
// spacing (dx, dy, dz) in mm gives the ray length per plane.
extern "C" __global__ void __launch_bounds__(256)
joseph_backproject(const float* __restrict__ proj, float* __restrict__ vol, int nx, int ny, int nz, int nu, int nv,
                   double dx, double dy, double dz) {
    const int iu = blockIdx.x * blockDim.x + threadIdx.x;
    const int iv = blockIdx.y * blockDim.y + threadIdx.y;
    const int slot = blockIdx.z;
    if (iu >= nu || iv >= nv) {
        return;
    }
    const int view = c_ray_view[slot];
    float value = __ldg(proj + ((long long)view * nv + iv) * nu + iu);
    if (value == 0.0f) {
        return;
    }
    JosephRay ray;
    if (!joseph_setup_ray(c_rays + 12 * slot, iu, iv, nx, ny, nz, dx, dy, dz, ray)) {
        return;
    }
    value *= ray.weight;
    if (ray.axis == 0) {
        scatter_ray<0>(vol, nx, ny, nz, ray, value);
    } else if (ray.axis == 1) {
        scatter_ray<1>(vol, nx, ny, nz, ray, value);
    } else {
        scatter_ray<2>(vol, nx, ny, nz, ray, value);
    }
}

#ifdef CBCT_INSTANTIATE_ALL
// Explicit instances for offline compilation checks (nvcc -cubin); at run time NVRTC instantiates the
// specialisations named by the host (cbct/cuda/compile.py).
template __global__ void fdk_backproject<4, false>(cudaTextureObject_t, float*, int, int, int, int, int, int);
template __global__ void fdk_backproject<8, false>(cudaTextureObject_t, float*, int, int, int, int, int, int);
template __global__ void fdk_backproject<4, true>(cudaTextureObject_t, float*, int, int, int, int, int, int);
template __global__ void fdk_backproject<8, true>(cudaTextureObject_t, float*, int, int, int, int, int, int);
#endif
