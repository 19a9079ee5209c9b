"""The host side of the CUDA backend (cbct.cuda.kernels, textures, memory) on the emulated device
(cbct.cuda.emulator): CuPy's data model on NumPy with the real csrc kernels compiled for the CPU, reading exactly
what the host uploads and passes. Catches wrong constant layouts, chunk and slab bookkeeping, segment ids,
accumulate flags and texture set-up without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
from cbct.cpu import kernels as cpu
from kernel_checks import rel

AGREEMENT = 1e-4


pytestmark = pytest.mark.usefixtures("one_numba_thread")


@pytest.fixture
def cp(emulated_cp):
    return emulated_cp


@pytest.fixture(scope="module")
def scan(offset_shepp_logan_scan):
    """Shepp-Logan in an 18 x 20 x 19 grid with offsets, 30 views of 22 x 30 pixels; float64 reference data."""
    return offset_shepp_logan_scan((18, 20, 19), (22, 30), 30, half_size=19.0)


def launches(cp, name: str) -> list[tuple[str, tuple[int, ...], int]]:
    """(kernel, grid, views of the launch) of the stand-in's launches whose kernel starts with ``name``."""
    found = []
    for kernel, grid, _block, args in cp._emulator.launches:
        if kernel.startswith(name):
            found.append((kernel, grid, int(args[-1]) if kernel.startswith("fdk_backproject") else int(grid[2])))
    return found


def test_operators_dispatch_to_the_cuda_backend(cp, scan):
    proj = cp.asarray(scan["filtered"], dtype=cp.float32)
    out = cbct.backproject(proj, scan["filtered_geom"])
    assert isinstance(out, cp.ndarray) and out.dtype == np.float32
    assert rel(out, scan["bp"]) < AGREEMENT
    assert [l[:2] for l in launches(cp, "fdk_backproject")] == [("fdk_backproject<8, false>", (1, 3, 3))]


def test_fdk_chunks_and_segments(cp, scan, monkeypatch):
    import cbct.cuda.kernels as kernels

    monkeypatch.setattr(kernels, "MAX_FDK_VIEWS", 8)
    proj = cp.asarray(scan["filtered"], dtype=cp.float32)
    starts = np.array([0, 5, 5, 17, 30])
    out = kernels.backproject_fdk(proj, scan["filtered_geom"], starts, voxels_per_thread=4)
    assert sorted(l[2] for l in launches(cp, "fdk_backproject<4, false>")) == [7, 7, 8, 8]
    parts = out.get()
    assert np.all(parts[1] == 0)
    for k, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        if b > a:
            alone = cpu.backproject_fdk(np.ascontiguousarray(scan["filtered"][a:b]), scan["filtered_geom"][a:b])[0]
            assert rel(parts[k], alone) < AGREEMENT
    assert rel(parts.sum(axis=0), scan["bp"]) < AGREEMENT


def test_fdk_texture_memory_budget_cuts_views(cp, scan):
    import cbct.cuda.kernels as kernels

    fgeom = scan["filtered_geom"]
    per_view = fgeom.detector_shape[0] * fgeom.detector_shape[1] * 8
    out = kernels.backproject_fdk(cp.asarray(scan["filtered"]), fgeom, memory_limit=per_view * 6)
    assert out.dtype == np.float64  # float64 in, float64 out (computed in float32)
    assert all(l[2] <= 6 for l in launches(cp, "fdk_backproject")) and len(launches(cp, "fdk_backproject")) == 5
    assert rel(out[0], scan["bp"]) < AGREEMENT


def test_projector_slabs_accumulate(cp, scan, monkeypatch):
    import cbct.cuda.kernels as kernels

    monkeypatch.setattr(kernels, "MAX_PROJECT_VIEWS", 12)
    geom = scan["geom"]
    vol = cp.asarray(scan["volume"], dtype=cp.float32)
    expected = cpu.project(scan["volume"], geom)
    whole = kernels.project(vol, geom)
    assert rel(whole, expected) < AGREEMENT
    assert len(launches(cp, "joseph_project")) == 3  # 30 views in chunks of at most 12
    cp._emulator.launches.clear()
    plane = geom.volume.shape[1] * geom.volume.shape[2] * 8
    slabbed = kernels.project(vol, geom, memory_limit=plane * 7)
    assert len(launches(cp, "joseph_project")) == 3 * 3  # 18 planes in slabs of at most 7, each in 3 view chunks
    assert rel(slabbed, expected) < AGREEMENT


def test_matched_backprojection_view_subsets(cp, scan, monkeypatch):
    import cbct.cuda.kernels as kernels

    monkeypatch.setattr(kernels, "MAX_MATCHED_VIEWS", 4)
    geom, proj = scan["geom"], scan["projections"]
    views = np.array([2, 3, 11, 12, 13, 29])
    out = kernels.backproject_matched(cp.asarray(proj, dtype=cp.float32), geom, views)
    assert [l[2] for l in launches(cp, "joseph_backproject")] == [3, 3]
    assert rel(out, cpu.backproject_matched(proj, geom, views)) < AGREEMENT
    with pytest.raises(ValueError, match="views must be indices"):
        kernels.backproject_matched(cp.asarray(proj, dtype=cp.float32), geom, np.array([0, 30]))


def test_precision_options_reach_the_texture(cp, scan):
    import cbct.cuda.kernels as kernels

    proj = cp.asarray(scan["filtered"], dtype=cp.float32)
    fgeom = scan["filtered_geom"]
    exact = rel(kernels.backproject_fdk(proj, fgeom)[0], scan["bp"])
    half = rel(kernels.backproject_fdk(proj, fgeom, texture_dtype="float16")[0], scan["bp"])
    filtered_by_texture = rel(kernels.backproject_fdk(proj, fgeom, interpolation="texture")[0], scan["bp"])
    assert exact < 1e-5 < half < 5e-4 and AGREEMENT < filtered_by_texture < 5e-3
    assert launches(cp, "fdk_backproject<8, true>")


def test_fdk_end_to_end_on_the_device(cp, scan):
    out = cbct.fdk(cp.asarray(scan["projections"], dtype=cp.float32), scan["geom"])
    assert isinstance(out, cp.ndarray)
    assert rel(out, cbct.fdk(scan["projections"], scan["geom"])) < AGREEMENT


def test_fdk_host_streams_slabs_and_row_bands(cp, scan):
    from cbct.cuda import fdk_host

    expected = cbct.fdk(scan["projections"], scan["geom"])
    out = np.full(scan["geom"].volume.shape, np.nan, dtype=np.float32)
    result = fdk_host(scan["projections"], scan["geom"], memory_limit=150_000, views_per_chunk=8, out=out)
    assert result is out and np.isfinite(out).all()
    assert rel(out, expected) < AGREEMENT
    fdk_launches = launches(cp, "fdk_backproject")
    assert len(fdk_launches) > len(range(0, 30, 8))  # several slabs, each over every view chunk
    with pytest.raises(TypeError, match="projections must be a NumPy array"):
        fdk_host(cp.asarray(scan["projections"]), scan["geom"])
    with pytest.raises(ValueError, match="out must be"):
        fdk_host(scan["projections"], scan["geom"], out=np.zeros((2, 2, 2), np.float32))


def test_kernels_reject_host_arrays_and_bad_options(cp, scan):
    import cbct.cuda.kernels as kernels

    with pytest.raises(TypeError, match="volume must be a CuPy array"):
        kernels.project(scan["volume"], scan["geom"])
    with pytest.raises(ValueError, match="interpolation"):
        kernels.backproject_fdk(cp.asarray(scan["filtered"]), scan["filtered_geom"], interpolation="nearest")
    with pytest.raises(ValueError, match="voxels_per_thread"):
        kernels.backproject_fdk(cp.asarray(scan["filtered"]), scan["filtered_geom"], voxels_per_thread=3)


def test_motion_estimation_keeps_cupy_data_on_the_device(cp, scan, monkeypatch):
    from cbct import motion_estimation
    from cbct.motion_estimation import MotionEstimationConfig, estimate_rigid_motion
    from cbct.simulation.motion import RigidMotion

    seen: list[str] = []
    normal_equations = motion_estimation._normal_equations

    def spy(jac, r):
        seen.append(type(jac).__module__)
        return normal_equations(jac, r)

    monkeypatch.setattr(motion_estimation, "_normal_equations", spy)
    geom = scan["geom"]
    step = (np.arange(geom.n_views) >= 15).astype(float) - 0.5
    motion = RigidMotion.from_vectors(np.outer(step, np.radians([0.0, 0.0, 2.0])), np.outer(step, [2.0, 0.0, 0.0]))
    moving = cpu.project(scan["volume"].astype(np.float32), motion.apply(geom))
    cfg = MotionEstimationConfig(groups=(3,), iterations=2, binning=2)
    on_host = estimate_rigid_motion(moving, geom, cfg)
    on_device = estimate_rigid_motion(cp.asarray(moving), geom, cfg)
    assert seen and set(seen) == {"numpy", "cupy"}  # host run, then Jacobians built on the device
    assert np.abs(on_host.translations).max() > 0.3  # a real estimate, not the zero start
    np.testing.assert_allclose(on_device.translations, on_host.translations, atol=1e-3)
    np.testing.assert_allclose(on_device.rotations, on_host.rotations, atol=1e-5)
