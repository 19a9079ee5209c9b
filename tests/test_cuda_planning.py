"""The cuts of cbct.cuda.planning (view chunks, z slabs, detector-row bands) are exact: checked with the CPU
kernels, so they hold for the GPU kernels that implement the same operators. Also the streaming plan itself and
the per-chunk FDK filtering of cbct.cuda.memory. No GPU needed."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
from cbct.cpu import kernels as cpu
from cbct.cuda.kernels import check_options, fdk_constants, ray_constants, segment_ids
from cbct.cuda.memory import filter_chunk
from cbct.cuda.planning import (
    chunk_range,
    crop_rows,
    detector_rows,
    plan_fdk_streaming,
    slab_geometry,
    split_range,
)
from cbct.fdk.filters import padded_length
from cbct.fdk.reconstruction import plan_fdk_filter
from cbct.phantoms import shepp_logan_projections


pytestmark = pytest.mark.usefixtures("one_numba_thread")


@pytest.fixture
def geom() -> cbct.ConeGeometry:
    """Non-cubic volume with a z offset, detector offset in v: 14 x 12 x 13 voxels, 24 views of 20 x 26 pixels."""
    return cbct.ConeGeometry.circular(
        dso=120.0, dsd=180.0, detector_shape=(20, 26), detector_pixel_size=(1.3, 1.2), volume_shape=(14, 12, 13),
        voxel_size=(0.9, 1.0, 1.1), n_views=24, detector_offset=(1.5, 0.0), volume_offset=(1.0, 0.5, -0.4),
    )


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_split_and_chunk_ranges():
    assert split_range(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split_range(2, 5) == [(0, 1), (1, 2)]
    assert chunk_range(10, 4) == [(0, 3), (3, 6), (6, 10)]
    assert chunk_range(8, 8) == [(0, 8)]
    with pytest.raises(ValueError):
        chunk_range(5, 0)


def test_slab_geometry_places_the_planes(geom):
    slab = slab_geometry(geom, 3, 9)
    full_idx_to_world = geom.volume.index_to_world()
    slab_idx_to_world = slab.volume.index_to_world()
    # plane k of the slab is plane k + 3 of the volume
    np.testing.assert_allclose(slab_idx_to_world @ [2, 5, 4, 1], full_idx_to_world @ [2, 5, 7, 1], atol=1e-12)
    assert slab.volume.shape == (6, 12, 13)
    with pytest.raises(ValueError, match="slab"):
        slab_geometry(geom, 5, 5)


def test_fdk_backprojection_of_slabs_and_row_bands_is_exact(geom, rng):
    proj = rng.standard_normal(geom.projection_shape)
    full = cpu.backproject_fdk(proj, geom)[0]
    for z0, z1 in [(0, 5), (5, 14)]:
        slab = slab_geometry(geom, z0, z1)
        for a, b in [(0, 10), (10, 24)]:
            sub = slab[a:b]
            r0, r1 = detector_rows(sub)
            assert 0 <= r0 < r1 <= geom.detector_shape[0]
            band = cpu.backproject_fdk(np.ascontiguousarray(proj[a:b, r0:r1]), crop_rows(sub, r0, r1))[0]
            np.testing.assert_allclose(band, cpu.backproject_fdk(np.ascontiguousarray(proj[a:b]), sub)[0], rtol=1e-12,
                                       atol=1e-12)
        np.testing.assert_allclose(cpu.backproject_fdk(proj, slab)[0], full[z0:z1], rtol=1e-12, atol=1e-12)


def test_detector_rows_are_a_strict_band(geom):
    """A thin slab away from the centre needs fewer rows than the detector has."""
    r0, r1 = detector_rows(slab_geometry(geom, 0, 3)[0:4])
    assert r1 - r0 < geom.detector_shape[0]


def test_joseph_projection_of_slabs_adds_up(geom, rng):
    volume = rng.random(geom.volume.shape)
    full = cpu.project(volume, geom)
    total = sum(cpu.project(np.ascontiguousarray(volume[z0:z1]), slab_geometry(geom, z0, z1))
                for z0, z1 in [(0, 4), (4, 9), (9, 14)])
    assert rel(total, full) < 1e-12


def test_matched_backprojection_of_slabs_stacks(geom, rng):
    proj = rng.random(geom.projection_shape)
    full = cpu.backproject_matched(proj, geom)
    for z0, z1 in [(0, 6), (6, 14)]:
        np.testing.assert_allclose(cpu.backproject_matched(proj, slab_geometry(geom, z0, z1)), full[z0:z1],
                                   rtol=1e-10, atol=1e-12 * np.abs(full).max())


def test_kernel_constants_layout(geom):
    rows = fdk_constants(geom)
    assert rows.dtype == np.float32 and rows.shape == (geom.n_views, 3, 4) and rows.flags.c_contiguous
    # row 2 of the matrix gives w = depth / DSO, about 1 at the volume centre
    centre = [(n - 1) / 2 for n in geom.volume.shape[::-1]] + [1.0]
    assert np.allclose(rows[:, 2] @ centre, 1.0, atol=0.05)
    rays = ray_constants(geom)
    assert rays.dtype == np.float64 and rays.shape == (geom.n_views, 12)
    np.testing.assert_array_equal(rays[:, 0:3], cbct.cpu.joseph.ray_parameters(geom)[:, 0])


def test_segment_ids_and_options():
    np.testing.assert_array_equal(segment_ids(np.array([0, 2, 2, 5]), 5), [0, 0, 2, 2, 2])
    np.testing.assert_array_equal(segment_ids(None, 3), [0, 0, 0])
    with pytest.raises(ValueError, match="segment_starts"):
        segment_ids(np.array([0, 3, 2, 5]), 5)
    with pytest.raises(ValueError, match="segment_starts"):
        segment_ids(np.array([0, 4]), 5)
    assert check_options("texture", "float16") is True and check_options("exact", "float32") is False
    with pytest.raises(ValueError, match="interpolation"):
        check_options("cubic", "float32")
    with pytest.raises(ValueError, match="texture_dtype"):
        check_options("exact", "bfloat16")


def test_streaming_plan_fits_the_budget_and_covers_everything(geom):
    n_fft = padded_length(geom.detector_shape[1])
    roomy = plan_fdk_streaming(geom, geom, 1 << 30, n_fft=n_fft)
    assert roomy.slabs == ((0, 14),) and roomy.view_chunks == ((0, 24),)
    budget = 100_000
    tight = plan_fdk_streaming(geom, geom, budget, n_fft=n_fft, views_per_chunk=16)
    assert tight.device_bytes <= budget
    assert len(tight.slabs) > 1 and len(tight.view_chunks) > 1
    assert [z for slab in tight.slabs for z in range(*slab)] == list(range(14))
    assert [v for chunk in tight.view_chunks for v in range(*chunk)] == list(range(24))
    assert tight.max_rows == max(r1 - r0 for slab in tight.rows for r0, r1 in slab)
    with pytest.raises(MemoryError, match="budget"):
        plan_fdk_streaming(geom, geom, 1000, n_fft=n_fft)


@pytest.mark.parametrize("offset_u", [0.0, 6.0])
def test_filter_chunk_equals_rows_of_fdk_filter(offset_u):
    g = cbct.ConeGeometry.circular(dso=120.0, dsd=180.0, detector_shape=(12, 30), detector_pixel_size=1.2,
                                   volume_shape=10, voxel_size=1.0, n_views=20, detector_offset=(0.0, offset_u))
    proj = shepp_logan_projections(g).astype(np.float32)
    plan = plan_fdk_filter(g)
    whole, _ = cbct.fdk_filter(proj, g)
    assert (sum(plan.pad) > 0) == (offset_u > 0)
    part = filter_chunk(np.ascontiguousarray(proj[5:12, 3:9]), g, plan, (5, 12), (3, 9))
    np.testing.assert_allclose(part, whole[5:12, 3:9], rtol=1e-5, atol=1e-6 * np.abs(whole).max())


def test_streamed_fdk_decomposition_equals_fdk(geom):
    """The loop of cbct.cuda.memory.fdk_host, run with the CPU kernels on a tight plan, equals cbct.fdk."""
    proj = shepp_logan_projections(geom, half_size=6.0).astype(np.float64)
    expected = cbct.fdk(proj, geom)
    fplan = plan_fdk_filter(geom)
    plan = plan_fdk_streaming(geom, fplan.geometry, 80_000,
                              n_fft=2 * (fplan.response.shape[0] - 1), views_per_chunk=16)
    assert len(plan.slabs) > 1
    out = np.zeros(geom.volume.shape)
    for s, (z0, z1) in enumerate(plan.slabs):
        slab_geom = slab_geometry(fplan.geometry, z0, z1)
        for c, (a, b) in enumerate(plan.view_chunks):
            r0, r1 = plan.rows[s][c]
            filtered = filter_chunk(np.ascontiguousarray(proj[a:b, r0:r1]), geom, fplan, (a, b), (r0, r1))
            out[z0:z1] += cpu.backproject_fdk(filtered, crop_rows(slab_geom, r0, r1)[a:b])[0]
    assert rel(out, expected) < 1e-10
    assert plan.transferred_rows < len(plan.slabs) * geom.n_views * geom.detector_shape[0]

