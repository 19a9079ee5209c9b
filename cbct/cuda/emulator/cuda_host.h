// CUDA on the CPU: force-included (g++ -include) before a csrc kernel file so that the exact string handed to
// NVRTC compiles as host C++ (see cbct/cuda/emulator/build.py).
//
// The kernels use a small part of CUDA: no shared memory, no __syncthreads, no warp functions (the build refuses
// sources that use them). Running the threads of a block one after another is then a legal CUDA schedule, so a
// launch is a loop over blocks and threads that sets the thread-local built-ins before each call.
//
// Textures are handles (cudaTextureObject_t) to a CbctTextureDesc made by the CuPy stand-in; tex2DLayered / tex3D /
// tex2D / tex1D follow the fetch rules of the CUDA C++ Programming Guide ("Texture Fetching"): address modes per
// axis (border with its colour, clamp; wrap and mirror with normalised coordinates), point sampling, and linear
// filtering with the weights in 9-bit fixed point (8 fractional bits). Texels are float32 or float16 (promoted to
// float). A fault (invalid handle, wrong texture kind, layer out of range) is recorded and reported at the end of
// the launch.

#ifndef CBCT_CUDA_HOST_H
#define CBCT_CUDA_HOST_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ------------------------------------------------------------------------------------------------ qualifiers
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __CUDACC__ 1
#define __CUDA_ARCH__ 900
#define __CUDACC_RTC__ 1

// What a legal sequential schedule cannot run: refused by the build with a clear message, poisoned here too.
#pragma GCC poison __shared__ __syncthreads __syncthreads_count __syncthreads_and __syncthreads_or __syncwarp
#pragma GCC poison __shfl __shfl_sync __shfl_up_sync __shfl_down_sync __shfl_xor_sync __activemask
#pragma GCC poison __ballot __ballot_sync __any_sync __all_sync __uni_sync __match_any_sync __match_all_sync
#pragma GCC poison __reduce_add_sync __reduce_min_sync __reduce_max_sync __reduce_and_sync __reduce_or_sync

// ------------------------------------------------------------------------------------------------ vector types
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct float3 { float x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct int3 { int x, y, z; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) double2 { double x, y; };

inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int3 make_int3(int x, int y, int z) { return {x, y, z}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return {x, y, z}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

// ------------------------------------------------------------------------------------------------ built-ins
// Thread-local: each host thread runs the CUDA threads of its blocks one after another.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

// ------------------------------------------------------------------------------------------------ faults
namespace cbct_emu {
inline thread_local const char* fault = nullptr;  // first fault of the running launch (a static string)
inline void record_fault(const char* what) {
    if (fault == nullptr) fault = what;
}
}  // namespace cbct_emu

// ------------------------------------------------------------------------------------------------ intrinsics
inline float __frcp_rn(float x) { return 1.0f / x; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
inline int __float2int_rd(float x) { return (int)std::floor(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline float __int2float_rn(int x) { return (float)x; }
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
template <class T>
inline T __ldg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// Atomics: real atomic read-modify-writes (blocks may run on several host threads).
template <class T>
inline T cbct_atomic_add(T* address, T value) {
    T old;
    __atomic_load(address, &old, __ATOMIC_RELAXED);
    T next;
    do {
        next = old + value;
    } while (!__atomic_compare_exchange(address, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}
inline float atomicAdd(float* address, float value) { return cbct_atomic_add(address, value); }
inline double atomicAdd(double* address, double value) { return cbct_atomic_add(address, value); }
inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline int atomicMax(int* address, int value) {
    int old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (old < value && !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline int atomicMin(int* address, int value) {
    int old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (old > value && !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline int atomicExch(int* address, int value) { return __atomic_exchange_n(address, value, __ATOMIC_RELAXED); }
inline float atomicExch(float* address, float value) {
    float old;
    __atomic_exchange(address, &value, &old, __ATOMIC_RELAXED);
    return old;
}
inline int atomicCAS(int* address, int compare, int value) {
    __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ------------------------------------------------------------------------------------------------ textures
typedef unsigned long long cudaTextureObject_t;

enum cudaTextureAddressMode { cudaAddressModeWrap = 0, cudaAddressModeClamp = 1, cudaAddressModeMirror = 2,
                              cudaAddressModeBorder = 3 };
enum cudaTextureFilterMode { cudaFilterModePoint = 0, cudaFilterModeLinear = 1 };

// Layout shared with cbct/cuda/emulator/textures.py (ctypes): keep both in step.
struct CbctTextureDesc {
    std::uint64_t magic;       // CBCT_TEXTURE_MAGIC: a handle that is not a texture is a fault
    const void* texels;        // (layers or depth, height, width) texels, C order
    std::int64_t width, height, depth, layers;  // depth = 1 for 2D; layers = 0 unless layered
    std::int32_t texel_bits;   // 32 (float) or 16 (half)
    std::int32_t address_mode[3];
    float border_color[4];
    std::int32_t filter_mode;  // cudaFilterModePoint or cudaFilterModeLinear
    std::int32_t normalized;   // normalised coordinates
    std::int32_t dims;         // 1, 2 or 3
};
constexpr std::uint64_t CBCT_TEXTURE_MAGIC = 0x6362637474657831ull;

namespace cbct_emu {

inline float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = (std::uint32_t)(h & 0x8000u) << 16;
    std::uint32_t exponent = (h >> 10) & 0x1fu;
    std::uint32_t mantissa = h & 0x3ffu;
    std::uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {  // subnormal half: normalise
            int shift = 0;
            while ((mantissa & 0x400u) == 0) {
                mantissa <<= 1;
                ++shift;
            }
            mantissa &= 0x3ffu;
            bits = sign | ((std::uint32_t)(127 - 15 - shift + 1) << 23) | (mantissa << 13);
        }
    } else if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline const CbctTextureDesc* texture(cudaTextureObject_t handle, int dims, bool layered) {
    const CbctTextureDesc* t = reinterpret_cast<const CbctTextureDesc*>(handle);
    if (t == nullptr || t->magic != CBCT_TEXTURE_MAGIC) {
        record_fault("texture fetch through an invalid texture object");
        return nullptr;
    }
    if (t->dims != dims || (t->layers > 0) != layered) {
        record_fault("texture fetch of the wrong kind (1D/2D/3D, layered or not) for this texture object");
        return nullptr;
    }
    return t;
}

// Texel index along one axis after the address mode; -1: outside (border colour).
inline std::int64_t address(std::int64_t i, std::int64_t n, int mode, bool normalized) {
    if (i >= 0 && i < n) return i;
    if (!normalized || mode == cudaAddressModeClamp) {  // wrap/mirror need normalised coordinates: clamp
        if (mode == cudaAddressModeBorder) return -1;
        return i < 0 ? 0 : n - 1;
    }
    if (mode == cudaAddressModeBorder) return -1;
    if (mode == cudaAddressModeWrap) return ((i % n) + n) % n;
    // mirror: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
    std::int64_t period = 2 * n;
    std::int64_t m = ((i % period) + period) % period;
    return m < n ? m : period - 1 - m;
}

// Floor of a coordinate as an integer, finite for any float (NaN -> a value far outside every texture).
inline std::int64_t floor_index(float x) {
    if (!(x == x)) return -(1ll << 40);
    const float f = std::floor(x);
    if (f < -1.0e12f) return -(1ll << 40);
    if (f > 1.0e12f) return 1ll << 40;
    return (std::int64_t)f;
}

inline float texel(const CbctTextureDesc* t, std::int64_t i, std::int64_t j, std::int64_t k, std::int64_t slice) {
    const std::int64_t ai = address(i, t->width, t->address_mode[0], t->normalized);
    const std::int64_t aj = t->dims >= 2 ? address(j, t->height, t->address_mode[1], t->normalized) : 0;
    const std::int64_t ak = t->dims >= 3 ? address(k, t->depth, t->address_mode[2], t->normalized) : 0;
    if (ai < 0 || aj < 0 || ak < 0) return t->border_color[0];
    const std::int64_t index = ((slice + ak) * t->height + aj) * t->width + ai;
    if (t->texel_bits == 16) return half_to_float(static_cast<const std::uint16_t*>(t->texels)[index]);
    return static_cast<const float*>(t->texels)[index];
}

// Linear-filter weight: the fractional part in 9-bit fixed point with 8 fractional bits.
inline float fixed_point_weight(float frac) { return std::nearbyint(frac * 256.0f) / 256.0f; }

// One fetch: dims axes of coordinates x[] (texel units or normalised), in layer `slice` (first texel plane).
inline float fetch(const CbctTextureDesc* t, const float* x, std::int64_t slice) {
    const std::int64_t extent[3] = {t->width, t->height, t->depth};
    float c[3] = {0.0f, 0.0f, 0.0f};
    for (int a = 0; a < t->dims; ++a) {
        c[a] = t->normalized ? x[a] * (float)extent[a] : x[a];
    }
    if (t->filter_mode == cudaFilterModePoint) {
        return texel(t, floor_index(c[0]), floor_index(c[1]), floor_index(c[2]), slice);
    }
    std::int64_t i0[3] = {0, 0, 0};
    float w[3] = {0.0f, 0.0f, 0.0f};
    for (int a = 0; a < t->dims; ++a) {
        const float xb = c[a] - 0.5f;
        i0[a] = floor_index(xb);
        w[a] = (xb == xb) ? fixed_point_weight(xb - std::floor(xb)) : 0.0f;
    }
    float sum = 0.0f;
    const int taps_k = t->dims >= 3 ? 2 : 1;
    const int taps_j = t->dims >= 2 ? 2 : 1;
    for (int dk = 0; dk < taps_k; ++dk) {
        const float wk = t->dims >= 3 ? (dk ? w[2] : 1.0f - w[2]) : 1.0f;
        for (int dj = 0; dj < taps_j; ++dj) {
            const float wj = t->dims >= 2 ? (dj ? w[1] : 1.0f - w[1]) : 1.0f;
            for (int di = 0; di < 2; ++di) {
                const float wi = di ? w[0] : 1.0f - w[0];
                sum += wi * wj * wk * texel(t, i0[0] + di, i0[1] + dj, i0[2] + dk, slice);
            }
        }
    }
    return sum;
}

}  // namespace cbct_emu

template <class T>
inline T tex2DLayered(cudaTextureObject_t handle, float x, float y, int layer) {
    static_assert(std::is_same<T, float>::value, "cbct CPU harness: textures hold one float channel");
    const CbctTextureDesc* t = cbct_emu::texture(handle, 2, true);
    if (t == nullptr) return 0.0f;
    if (layer < 0 || layer >= t->layers) {
        cbct_emu::record_fault("tex2DLayered: layer index outside the layered texture");
        return 0.0f;
    }
    const float c[2] = {x, y};
    return cbct_emu::fetch(t, c, layer);
}

template <class T>
inline T tex3D(cudaTextureObject_t handle, float x, float y, float z) {
    static_assert(std::is_same<T, float>::value, "cbct CPU harness: textures hold one float channel");
    const CbctTextureDesc* t = cbct_emu::texture(handle, 3, false);
    if (t == nullptr) return 0.0f;
    const float c[3] = {x, y, z};
    return cbct_emu::fetch(t, c, 0);
}

template <class T>
inline T tex2D(cudaTextureObject_t handle, float x, float y) {
    static_assert(std::is_same<T, float>::value, "cbct CPU harness: textures hold one float channel");
    const CbctTextureDesc* t = cbct_emu::texture(handle, 2, false);
    if (t == nullptr) return 0.0f;
    const float c[2] = {x, y};
    return cbct_emu::fetch(t, c, 0);
}

template <class T>
inline T tex1D(cudaTextureObject_t handle, float x) {
    static_assert(std::is_same<T, float>::value, "cbct CPU harness: textures hold one float channel");
    const CbctTextureDesc* t = cbct_emu::texture(handle, 1, false);
    if (t == nullptr) return 0.0f;
    const float c[1] = {x};
    return cbct_emu::fetch(t, c, 0);
}

#endif  // CBCT_CUDA_HOST_H
