"""The CPU harness of the CUDA kernels (cbct.cuda.emulator) itself: texture fetch rules against a NumPy reading
of the Programming Guide, launch and argument checks as CUDA and CuPy make them, constant memory, -ftz, the
refusal of what a sequential schedule cannot run, build caching, faults. Tiny kernels written here."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
from cbct.cuda.emulator import build, compiler_available
from cbct.cuda.textures import CUDA_ARRAY_LAYERED
from cbct.cuda.emulator.build import UnsupportedKernelError

pytestmark = pytest.mark.skipif(not compiler_available(), reason="no C++ compiler (g++ or $CXX) for the CPU harness")

FETCH_SOURCE = r"""
extern "C" __global__ void __launch_bounds__(128)
fetch_layered(cudaTextureObject_t t, const float* __restrict__ c, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = tex2DLayered<float>(t, c[3 * i], c[3 * i + 1], (int)c[3 * i + 2]);
}
extern "C" __global__ void fetch_3d(cudaTextureObject_t t, const float* __restrict__ c, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = tex3D<float>(t, c[3 * i], c[3 * i + 1], c[3 * i + 2]);
}
__constant__ float c_scale[4];
extern "C" __global__ void scale(float* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= c_scale[i % 4];
}
extern "C" __global__ void accumulate(double* total, const double* x, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(total, x[i]);
}
"""
NAMES = ("fetch_layered", "fetch_3d", "scale", "accumulate")


@pytest.fixture
def module(emulated_cp):
    return emulated_cp.RawModule(code=FETCH_SOURCE, options=("--std=c++17",), name_expressions=NAMES)


def make_texture(cp, texels: np.ndarray, *, layered: bool, filter_linear: bool, modes: tuple[int, int, int],
                 border: float = 0.0, normalized: bool = False):
    from cupy.cuda import runtime, texture

    bits = 16 if texels.dtype == np.float16 else 32
    channel = texture.ChannelFormatDescriptor(bits, 0, 0, 0, runtime.cudaChannelFormatKindFloat)
    depth, height, width = texels.shape
    array = texture.CUDAarray(channel, width, height, depth, CUDA_ARRAY_LAYERED if layered else 0)
    array.copy_from(cp.asarray(texels))
    resource = texture.ResourceDescriptor(runtime.cudaResourceTypeArray, cuArr=array)
    description = texture.TextureDescriptor(
        addressModes=modes, filterMode=runtime.cudaFilterModeLinear if filter_linear else runtime.cudaFilterModePoint,
        readMode=runtime.cudaReadModeElementType, normalizedCoords=int(normalized), borderColors=(border, 0, 0, 0))
    return texture.TextureObject(resource, description)


# ------------------------------------------------------------------------------ the Guide's rules, in NumPy
def guide_index(i: np.ndarray, n: int, mode: int, normalized: bool) -> np.ndarray:
    """Texel index after the address mode; -1 where the border colour is returned."""
    inside = (i >= 0) & (i < n)
    if mode == 3:  # border
        return np.where(inside, i, -1)
    if mode == 1 or not normalized:  # clamp (wrap and mirror need normalised coordinates)
        return np.clip(i, 0, n - 1)
    if mode == 0:  # wrap
        return np.mod(i, n)
    m = np.mod(i, 2 * n)  # mirror
    return np.where(m < n, m, 2 * n - 1 - m)


def guide_fetch(texels: np.ndarray, coords: np.ndarray, *, linear: bool, modes, border: float, normalized: bool):
    """Fetch of a (slices, h, w) texture at (n, 3) coordinates (x, y, z or layer), float64."""
    values = texels.astype(np.float64)
    depth, height, width = texels.shape
    layered = coords.shape[1] == 4
    x = coords[:, :3].astype(np.float32)
    extent = np.array([width, height, depth], np.float32)
    dims = 2 if layered else 3
    if normalized:
        x[:, :dims] = x[:, :dims] * extent[:dims]

    def texel(i, j, k):
        ai = guide_index(i, width, modes[0], normalized)
        aj = guide_index(j, height, modes[1], normalized)
        ak = coords[:, 3].astype(int) if layered else guide_index(k, depth, modes[2], normalized)
        ok = (ai >= 0) & (aj >= 0) & (ak >= 0)
        return np.where(ok, values[np.maximum(ak, 0), np.maximum(aj, 0), np.maximum(ai, 0)], border)

    if not linear:
        i, j, k = (np.floor(x[:, a]).astype(np.int64) for a in range(3))
        return texel(i, j, k)
    xb = (x - np.float32(0.5)).astype(np.float32)
    base = np.floor(xb).astype(np.int64)
    weight = np.round((xb - np.floor(xb)) * 256) / 256  # 9-bit fixed point, 8 fractional bits
    total = np.zeros(len(coords))
    for dk in (0, 1) if dims == 3 else (0,):
        wk = (weight[:, 2] if dk else 1 - weight[:, 2]) if dims == 3 else 1.0
        for dj in (0, 1):
            wj = weight[:, 1] if dj else 1 - weight[:, 1]
            for di in (0, 1):
                wi = weight[:, 0] if di else 1 - weight[:, 0]
                total += wi * wj * wk * texel(base[:, 0] + di, base[:, 1] + dj, base[:, 2] + dk)
    return total


@pytest.mark.parametrize("texel_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("modes, normalized", [((3, 3, 3), False), ((1, 1, 1), False), ((0, 2, 3), True)])
def test_texture_fetches_follow_the_programming_guide(emulated_cp, module, rng, texel_dtype, linear, modes, normalized):
    cp = emulated_cp
    texels = rng.normal(size=(3, 5, 7)).astype(texel_dtype)
    n = 400
    extent = np.array([7, 5, 3], np.float64)
    raw = rng.uniform(-2.5, 1, size=(n, 3)) * (extent + 4)
    raw[:50] = np.floor(raw[:50]) + 0.5  # texel centres
    coords = (raw / extent if normalized else raw).astype(np.float32)
    border = 0.25
    for layered in (True, False):
        c = coords.copy()
        if layered:
            c[:, 2] = rng.integers(0, 3, n)
        tex = make_texture(cp, texels, layered=layered, filter_linear=linear, modes=modes, border=border,
                           normalized=normalized)
        out = cp.zeros(n, dtype=cp.float32)
        kernel = module.get_function("fetch_layered" if layered else "fetch_3d")
        kernel((4,), (128,), (tex, cp.asarray(c), out, np.int32(n)))
        ref_coords = np.column_stack([c, c[:, 2]]) if layered else c
        expected = guide_fetch(texels, ref_coords, linear=linear, modes=modes, border=border, normalized=normalized)
        np.testing.assert_allclose(out.get(), expected, rtol=1e-6, atol=1e-6, err_msg=f"layered={layered}")


def test_layer_out_of_range_is_a_fault(emulated_cp, module):
    cp = emulated_cp
    tex = make_texture(cp, np.ones((2, 3, 3), np.float32), layered=True, filter_linear=False, modes=(3, 3, 3))
    coords = cp.asarray(np.array([[1.0, 1.0, 2.0]], np.float32))
    with pytest.raises(RuntimeError, match="layer index outside"):
        module.get_function("fetch_layered")((1,), (1,), (tex, coords, cp.zeros(1, dtype=cp.float32), np.int32(1)))
    with pytest.raises(RuntimeError, match="wrong kind"):  # a layered texture read as 3D
        module.get_function("fetch_3d")((1,), (1,), (tex, coords, cp.zeros(1, dtype=cp.float32), np.int32(1)))


# ------------------------------------------------------------------------------ launches and arguments
def test_launch_limits_and_launch_bounds(emulated_cp, module):
    cp = emulated_cp
    x = cp.ones(8, dtype=cp.float32)
    scale = module.get_function("scale")
    for grid, block, message in [((0,), (8,), "must be positive"), ((1,), (1025,), "exceeds CUDA's limits"),
                                 ((1,), (1, 1, 65), "exceeds CUDA's limits"), ((1, 65536), (1,), "exceeds CUDA")]:
        with pytest.raises(ValueError, match=message):
            scale(grid, block, (x, np.int32(8)))
    tex = make_texture(cp, np.ones((1, 2, 2), np.float32), layered=True, filter_linear=False, modes=(3, 3, 3))
    args = (tex, cp.zeros(3, dtype=cp.float32), cp.zeros(1, dtype=cp.float32), np.int32(0))
    with pytest.raises(ValueError, match=r"__launch_bounds__\(128\)"):
        module.get_function("fetch_layered")((1,), (256,), args)
    module.get_function("fetch_layered")((1,), (128,), args)


@pytest.mark.parametrize("bad, message", [
    (np.int64(8), "argument 1 is numpy.int64, packed as long or long long, but the parameter is int"),
    (8, "argument 1 is a Python int"),
    (np.float32(8), "parameter is int"),
])
def test_scalar_arguments_are_checked_against_the_parameter_types(emulated_cp, module, bad, message):
    with pytest.raises(TypeError, match=message):
        module.get_function("scale")((1,), (8,), (emulated_cp.ones(8, dtype=emulated_cp.float32), bad))


def test_array_arguments_are_checked(emulated_cp, module):
    cp = emulated_cp
    scale = module.get_function("scale")
    with pytest.raises(TypeError, match="float64 device array.*parameter is float\\*"):
        scale((1,), (8,), (cp.ones(8, dtype=cp.float64), np.int32(8)))
    with pytest.raises(TypeError, match="host \\(NumPy\\) array"):
        scale((1,), (8,), (np.ones(8, np.float32), np.int32(8)))
    with pytest.raises(TypeError, match="takes 2 arguments"):
        scale((1,), (8,), (cp.ones(8, dtype=cp.float32),))
    total = cp.zeros(1, dtype=cp.float64)
    module.get_function("accumulate")((3,), (32,), (total, cp.arange(70, dtype=cp.float64), np.int64(70)))
    assert total.get()[0] == sum(range(70))  # double atomicAdd, every thread of a partial last block guarded


def test_constant_symbols_have_their_size_and_refuse_overruns(emulated_cp, module):
    cp = emulated_cp
    symbol = module.get_global("c_scale")
    assert symbol.size == 16
    symbol.copy_from_device_async(cp.asarray(np.array([1, 2, 3, 4], np.float32)).data, 16)
    x = cp.ones(8, dtype=cp.float32)
    module.get_function("scale")((1,), (8,), (x, np.int32(8)))
    np.testing.assert_array_equal(x.get(), [1, 2, 3, 4, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="overruns the destination of 16 bytes"):
        symbol.copy_from_device_async(cp.zeros(5, dtype=cp.float32).data, 20)
    with pytest.raises(KeyError, match="no __constant__ 'c_missing'"):
        module.get_global("c_missing")
    other = cp.RawModule(code=FETCH_SOURCE, options=("--std=c++17",), name_expressions=NAMES)
    other.get_global("c_scale").copy_from_device_async(cp.zeros(4, dtype=cp.float32).data, 16)
    y = cp.ones(8, dtype=cp.float32)
    module.get_function("scale")((1,), (8,), (y, np.int32(8)))
    assert y.get()[3] == 4  # each module has its own constant memory, as on a GPU


def test_ftz_option_flushes_denormals(emulated_cp):
    from cbct.cuda.emulator.module import HostModule
    from cbct.cuda.emulator.raw import pack_argument

    cp = emulated_cp
    source = 'extern "C" __global__ void halve(float* x) { x[threadIdx.x] = x[threadIdx.x] * 0.5f; }'
    tiny = np.array([1e-39, 2e-38], np.float32)  # a denormal, and a normal whose half is denormal
    results = {}
    for ftz in ("false", "true"):
        x = cp.asarray(tiny)
        HostModule(source, (f"-ftz={ftz}",), ("halve",)).function("halve").launch((1,), (2,), [pack_argument(x)])
        results[ftz] = x.get()
    np.testing.assert_array_equal(results["false"], tiny * np.float32(0.5))
    np.testing.assert_array_equal(results["true"], [0.0, 0.0])
    x = cp.asarray(tiny)  # the stand-in's RawModule compiles with -ftz=true, as CuPy's does
    cp.RawModule(code=source, name_expressions=("halve",)).get_function("halve")((1,), (2,), (x,))
    np.testing.assert_array_equal(x.get(), [0.0, 0.0])


# ------------------------------------------------------------------------------ what the harness refuses
@pytest.mark.parametrize("snippet, feature", [
    ("__shared__ float tile[32];", "shared memory"),
    ("__syncthreads();", "block barriers"),
    ("float v = __shfl_down_sync(0xffffffff, 1.0f, 1);", "warp shuffles"),
    ("unsigned b = __ballot_sync(0xffffffff, 1);", "warp votes"),
    ('#include "joseph_ray.cuh"', "without an include path"),
    ("#include <cuda_runtime.h>", "without an include path"),
])
def test_refuses_what_a_sequential_schedule_cannot_run(emulated_cp, snippet, feature):
    source = f'extern "C" __global__ void k(float* x) {{\n{snippet}\n}}\n'
    with pytest.raises(UnsupportedKernelError, match=feature):
        emulated_cp.RawModule(code=source, name_expressions=("k",)).compile()


def test_comments_may_mention_barriers():
    build.check_supported("// no __syncthreads here\n/* nor __shared__ */ __global__ void k() {}")


def test_unknown_nvrtc_option_is_refused():
    with pytest.raises(ValueError, match="--relocatable-device-code"):
        build.parse_nvrtc_options(["--relocatable-device-code=true"])
    options = build.parse_nvrtc_options(["--std=c++17", "-DA=3", "-arch=sm_90", "-ftz=true"])
    assert options == build.BuildOptions((("A", "3"),), "c++17", True)


def test_build_errors_carry_the_compiler_diagnostics(emulated_cp):
    with pytest.raises(build.HarnessBuildError, match="undeclared_name"):
        emulated_cp.RawModule(code='extern "C" __global__ void k(float* x) { x[0] = undeclared_name; }',
                              name_expressions=("k",)).compile()


def test_builds_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    source = 'extern "C" __global__ void k(float* x) { x[0] = 1.0f; }'
    first, _ = build.build_library(source, ["-DV=1"], ["k"])
    stamp = first.stat().st_mtime_ns
    again, _ = build.build_library(source, ["-DV=1"], ["k"])
    other, _ = build.build_library(source, ["-DV=2"], ["k"])
    assert again == first and first.stat().st_mtime_ns == stamp and other != first
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".so", ".so"]  # no temporaries left


def test_blocks_on_several_host_threads_give_the_same_results(emulated_cp, module, monkeypatch):
    """Blocks run concurrently (any order, as on a GPU): disjoint writes are bit for bit those of one thread, double
    atomics of integers add up exactly, and a fault in any block is reported."""
    from cbct.cuda import kernels

    cp = emulated_cp
    rng = np.random.default_rng(3)
    geom = cbct.ConeGeometry.circular(
        dso=200.0, dsd=300.0, detector_shape=(20, 24), detector_pixel_size=2.0, volume_shape=(12, 40, 36),
        voxel_size=1.0, n_views=9)
    proj = cp.asarray(rng.normal(size=geom.projection_shape).astype(np.float32))
    results = {}
    for threads in ("1", "3"):
        monkeypatch.setenv(build.THREADS_ENV, threads)
        results[threads] = kernels.backproject_fdk(proj, geom).get()
        total = cp.zeros(1, dtype=cp.float64)
        module.get_function("accumulate")((40,), (32,), (total, cp.arange(1270, dtype=cp.float64), np.int64(1270)))
        assert total.get()[0] == sum(range(1270))
    np.testing.assert_array_equal(results["1"], results["3"])
    tex = make_texture(cp, np.ones((2, 3, 3), np.float32), layered=True, filter_linear=False, modes=(3, 3, 3))
    coords = np.tile(np.array([[1.0, 1.0, 0.0]], np.float32), (64, 1))
    coords[50, 2] = 5.0  # one thread of the second block asks for a layer the texture lacks
    with pytest.raises(RuntimeError, match="layer index outside"):
        module.get_function("fetch_layered")((2,), (32,), (tex, cp.asarray(coords), cp.zeros(64, dtype=cp.float32),
                                                           np.int32(64)))
    monkeypatch.setenv(build.THREADS_ENV, "0")
    with pytest.raises(ValueError, match="CBCT_EMULATOR_THREADS must be a positive integer"):
        module.get_function("scale")((1,), (8,), (cp.ones(8, dtype=cp.float32), np.int32(8)))
