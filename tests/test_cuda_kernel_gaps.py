"""The corners of the CUDA kernels that the everyday scans miss, on the emulated device (every run) and a GPU:
rays whose dominant axis is z, nz not a multiple of the voxels per thread over several launches, many view
chunks with constant-memory refills in all three kernels, segments that straddle launches, every specialisation
against the Numba twin, and the constant memory of each kernel file within 64 KiB."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
from cbct.cpu import kernels as cpu
from cbct.cuda.compile import FDK_VOXELS_PER_THREAD, compile_options
from cbct.cuda.sources import KERNEL_FILES, kernel_source
from cbct.phantoms import shepp_logan_volume
from kernel_checks import rel, tilted

pytestmark = pytest.mark.usefixtures("one_numba_thread")
AGREEMENT = 1e-4
CONSTANT_MEMORY = 64 * 1024


@pytest.fixture(scope="module")
def steep():
    """A tilted orbit: over 40 % of the rays advance fastest along z, the rest along x or y; 19 planes (not a
    multiple of 4 or 8), 23 views."""
    base = cbct.ConeGeometry.circular(
        dso=150.0, dsd=240.0, detector_shape=(24, 28), detector_pixel_size=2.0, volume_shape=(19, 22, 21),
        voxel_size=(1.6, 1.5, 1.4), n_views=23, volume_offset=(0.7, -0.4, 0.3),
    )
    geom = tilted(base, 60.0, 45.0)
    volume = shepp_logan_volume(geom.volume, half_size=15.0).astype(np.float64)
    return geom, volume


def dominant_axes(geom: cbct.ConeGeometry) -> np.ndarray:
    """Fraction of rays of ``geom`` whose dominant index axis is x, y, z (as joseph_ray.cu decides)."""
    from cbct.cpu.joseph import ray_parameters

    rays = ray_parameters(geom).reshape(geom.n_views, 4, 3)
    nv, nu = geom.detector_shape
    u, v = np.meshgrid(np.arange(nu), np.arange(nv))
    d = rays[:, None, None, 1] + u[None, ..., None] * rays[:, None, None, 2] + v[None, ..., None] * rays[:, None, None, 3]
    d = np.abs(d - rays[:, None, None, 0])
    axis = np.where((d[..., 0] >= d[..., 1]) & (d[..., 0] >= d[..., 2]), 0, np.where(d[..., 1] >= d[..., 2], 1, 2))
    return np.bincount(axis.ravel(), minlength=3) / axis.size


def test_rays_along_z_project_and_scatter_like_the_twin(device_cp, steep, rng, monkeypatch):
    from cbct.cuda import kernels

    geom, volume = steep
    assert dominant_axes(geom)[2] > 0.4 and dominant_axes(geom).min() > 0.1  # z dominant often; all three occur
    monkeypatch.setattr(kernels, "MAX_PROJECT_VIEWS", 5)
    monkeypatch.setattr(kernels, "MAX_MATCHED_VIEWS", 4)
    projected = kernels.project(device_cp.asarray(volume, dtype=device_cp.float32), geom)
    assert rel(projected, cpu.project(volume, geom)) < AGREEMENT
    y = rng.random(geom.projection_shape)
    scattered = kernels.backproject_matched(device_cp.asarray(y, dtype=device_cp.float32), geom)
    assert rel(scattered, cpu.backproject_matched(y, geom)) < AGREEMENT
    x = rng.random(geom.volume.shape)
    ax = kernels.project(device_cp.asarray(x, dtype=device_cp.float32), geom).get().astype(np.float64)
    lhs, rhs = float(np.vdot(ax, y)), float(np.vdot(x, scattered.get().astype(np.float64)))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)  # still the adjoint, through several constant refills


@pytest.mark.parametrize("voxels_per_thread", FDK_VOXELS_PER_THREAD)
@pytest.mark.parametrize("interpolation, texture_dtype, bound", [
    ("exact", "float32", AGREEMENT), ("exact", "float16", 5e-4), ("texture", "float32", 5e-3),
    ("texture", "float16", 5e-3),
])
def test_fdk_specialisations_over_launches_and_straddling_segments(device_cp, steep, rng, monkeypatch,
                                                                   voxels_per_thread, interpolation, texture_dtype, bound):
    """nz = 19 planes (not a multiple of 4 or 8), 23 views in launches of 5, 6, 6 and 6 (four fills of the
    constant tables), segments [0, 3) [3, 3) [3, 14) [14, 23): the third spans three launches and the fourth two,
    both starting and ending inside a launch."""
    from cbct.cuda import kernels

    geom, _ = steep
    monkeypatch.setattr(kernels, "MAX_FDK_VIEWS", 6)
    proj = rng.normal(size=geom.projection_shape)
    starts = np.array([0, 3, 3, 14, 23])
    out = kernels.backproject_fdk(device_cp.asarray(proj, dtype=device_cp.float32), geom, starts,
                                  interpolation=interpolation, texture_dtype=texture_dtype,
                                  voxels_per_thread=voxels_per_thread).get()
    assert out.shape == (4, *geom.volume.shape)
    assert np.all(out[1] == 0)
    for k, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        if b > a:
            alone = cpu.backproject_fdk(np.ascontiguousarray(proj[a:b]), geom[a:b])[0]
            assert rel(out[k], alone) < bound, (k, interpolation, texture_dtype)
    if hasattr(device_cp, "_emulator"):
        launched = [args[-1] for name, _g, _b, args in device_cp._emulator.launches if name.startswith("fdk")]
        assert [int(n) for n in launched] == [5, 6, 6, 6]


@pytest.mark.parametrize("interpolation, texture_dtype, bound", [
    ("exact", "float32", AGREEMENT), ("exact", "float16", 1e-3), ("texture", "float32", 5e-3),
    ("texture", "float16", 5e-3),
])
def test_projector_specialisations_over_slabs_and_chunks(device_cp, steep, monkeypatch, interpolation,
                                                         texture_dtype, bound):
    """Several z slabs (all but the first accumulate) times five view chunks, each specialisation of joseph_project."""
    from cbct.cuda import kernels

    geom, volume = steep
    monkeypatch.setattr(kernels, "MAX_PROJECT_VIEWS", 5)
    plane = geom.volume.shape[1] * geom.volume.shape[2] * (2 if texture_dtype == "float16" else 4) * 2
    out = kernels.project(device_cp.asarray(volume, dtype=device_cp.float32), geom, interpolation=interpolation,
                          texture_dtype=texture_dtype, memory_limit=plane * 5)
    assert rel(out, cpu.project(volume, geom)) < bound
    if hasattr(device_cp, "_emulator"):
        accumulate = [int(args[-1]) for name, _g, _b, args in device_cp._emulator.launches if name.startswith("joseph_p")]
        assert len(accumulate) % 5 == 0 and len(accumulate) > 5  # slabs x 5 view chunks
        assert accumulate[:5] == [0] * 5 and set(accumulate[5:]) == {1}  # the first slab overwrites, the rest add


@pytest.mark.parametrize("file", sorted(KERNEL_FILES))
def test_constant_memory_of_each_kernel_file_fits_64_kib(emulated_cp, file):
    module = emulated_cp.RawModule(code=kernel_source(file), options=compile_options(file),
                                   name_expressions=KERNEL_FILES[file])
    module.compile()
    symbols = module._host.symbols
    assert symbols, f"{file} has no __constant__ tables"
    total = sum(module.get_global(name).size for name in symbols)
    assert total <= CONSTANT_MEMORY, f"{file}: {total} bytes of __constant__ ({symbols})"
