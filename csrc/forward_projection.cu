// Ray-driven cone-beam forward projection (Joseph's method), compiled at run time by CuPy/NVRTC
// (see cbct/cuda/compile.py). The CPU twin is cbct/cpu/joseph.py.
//
// joseph_project<HW_FILTER>
//     One thread per ray (detector pixel of one view). The ray is sampled where it crosses the planes of its
//     dominant axis (joseph_ray.cu); at each crossing the volume is interpolated bilinearly in the two other axes,
//     with zeros outside the grid; the line integral is the sum of the samples times the ray length per plane (mm).
//
//     * The volume lives in a 3D texture (x = i, y = j, z = k) with cudaAddressModeBorder (border colour 0) and
//       unnormalised coordinates: voxel (i, j, k) has its centre at (i + 0.5, j + 0.5, k + 0.5).
//     * HW_FILTER = false (default): point-sampled texture, the four in-plane neighbours blended in software with
//       exact float32 weights (results agree with the CPU twin to float32 rounding, and joseph_backproject is its
//       exact adjoint). HW_FILTER = true: one trilinear fetch at the sample (on the plane, the weight along the
//       dominant axis is exactly 0, so trilinear = bilinear in-plane), with the texture unit's 9-bit fixed-point
//       weights: faster, errors up to ~2e-3 of the local voxel-to-voxel difference, and no longer the exact
//       transpose of joseph_backproject.
//     * A float16 volume texture needs no other code: fetches promote half texels to float; sums stay float32.
//     * Per-view rays (12 doubles, voxel-index space) live in constant memory, at most CBCT_MAX_RAY_VIEWS views
//       per launch, uploaded by the host on the launch stream right before the launch.

#include "bilinear.cu"
#include "joseph_ray.cu"

#ifndef CBCT_MAX_RAY_VIEWS
#define CBCT_MAX_RAY_VIEWS 512
#endif

// Per ray view of the launch, in voxel-index space (i, j, k): source (3), centre of detector pixel (0, 0) (3),
// step per detector column (3), step per detector row (3).
__constant__ double c_rays[12 * CBCT_MAX_RAY_VIEWS];

namespace {

// Texture coordinates of plane m of axis A at in-plane coordinates (b, c) (texel centres at integer + 0.5).
template <int A>
__device__ __forceinline__ float fetch_plane(cudaTextureObject_t vol, float m, float b, float c) {
    if (A == 0) return tex3D<float>(vol, m, b, c);
    if (A == 1) return tex3D<float>(vol, b, m, c);
    return tex3D<float>(vol, b, c, m);
}

// Sum over planes m_first..m_last of the in-plane bilinear samples of the volume along `ray`.
template <int A, bool HW_FILTER>
__device__ __forceinline__ float march_ray(cudaTextureObject_t vol, const JosephRay& ray) {
    float acc = 0.0f;
#pragma unroll 4
    for (int m = ray.m_first; m <= ray.m_last; ++m) {
        const float t = (float)(m - ray.m_first);
        const float pb = fmaf(t, ray.db, ray.b_first);
        const float pc = fmaf(t, ray.dc, ray.c_first);
        const float xm = (float)m + 0.5f;
        if (HW_FILTER) {
            acc += fetch_plane<A>(vol, xm, pb + 0.5f, pc + 0.5f);
        } else {
            acc += bilinear(pb, pc, [&](float xb, float xc) { return fetch_plane<A>(vol, xm, xb, xc); });
        }
    }
    return acc;
}

}  // namespace

// grid: (ceil(nu / blockDim.x), ceil(nv / blockDim.y), n_views of the launch); block: e.g. (16, 16).
// vol: 3D texture of nx x ny x nz texels; out: (n_views of the launch, nv, nu) float32, overwritten
// (accumulate = 0) or added to (accumulate != 0: a volume split into z slabs, one launch per slab).
// spacing (dx, dy, dz) in mm gives the ray length per plane.
template <bool HW_FILTER>
__global__ void __launch_bounds__(256)
joseph_project(cudaTextureObject_t vol, float* __restrict__ out, int nx, int ny, int nz, int nu, int nv, double dx,
               double dy, double dz, int accumulate) {
    const int iu = blockIdx.x * blockDim.x + threadIdx.x;
    const int iv = blockIdx.y * blockDim.y + threadIdx.y;
    const int slot = blockIdx.z;
    if (iu >= nu || iv >= nv) {
        return;
    }
    float value = 0.0f;
    JosephRay ray;
    if (joseph_setup_ray(c_rays + 12 * slot, iu, iv, nx, ny, nz, dx, dy, dz, ray)) {
        float sum;
        if (ray.axis == 0) {
            sum = march_ray<0, HW_FILTER>(vol, ray);
        } else if (ray.axis == 1) {
            sum = march_ray<1, HW_FILTER>(vol, ray);
        } else {
            sum = march_ray<2, HW_FILTER>(vol, ray);
        }
        value = sum * ray.weight;
    }
    float* dst = out + ((long long)slot * nv + iv) * nu + iu;
    *dst = accumulate ? *dst + value : value;
}

#ifdef CBCT_INSTANTIATE_ALL
// Explicit instances for offline compilation checks (nvcc -cubin); at run time NVRTC instantiates the
// specialisations named by the host (cbct/cuda/compile.py).
template __global__ void joseph_project<false>(cudaTextureObject_t, float*, int, int, int, int, int, double, double,
                                               double, int);
template __global__ void joseph_project<true>(cudaTextureObject_t, float*, int, int, int, int, int, double, double,
                                              double, int);
#endif
