// Software bilinear interpolation on point-sampled textures, shared by the FDK backprojection
// (backprojection.cu, on the detector) and the Joseph projector (forward_projection.cu, in a volume plane).
// Included textually (cbct/cuda/sources.py inlines it; offline nvcc finds it with -I csrc). It defines no kernels.

#ifndef CBCT_BILINEAR_CU
#define CBCT_BILINEAR_CU

// Bilinear sample at continuous texel indices (a, b): `fetch(x, y)` reads the texel whose centre is at the
// unnormalised texture coordinates (x, y) (texel i has its centre at i + 0.5). Interpolates along a first,
// then along b, in float32 with fmaf, as the CPU twins.
template <typename Fetch>
__device__ __forceinline__ float bilinear(float a, float b, Fetch fetch) {
    const float fa = floorf(a);
    const float fb = floorf(b);
    const float wa = a - fa;
    const float wb = b - fb;
    const float x0 = fa + 0.5f;
    const float y0 = fb + 0.5f;
    const float t00 = fetch(x0, y0);
    const float t10 = fetch(x0 + 1.0f, y0);
    const float t01 = fetch(x0, y0 + 1.0f);
    const float t11 = fetch(x0 + 1.0f, y0 + 1.0f);
    const float low = fmaf(wa, t10 - t00, t00);
    const float high = fmaf(wa, t11 - t01, t01);
    return fmaf(wb, high - low, low);
}

#endif  // CBCT_BILINEAR_CU
