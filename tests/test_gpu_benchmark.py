"""The GPU benchmark harness imports and counts its work correctly without a GPU; its full run needs one."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
from cbct.cpu.joseph import _grid_args, _setup_ray, ray_parameters


@pytest.fixture(scope="module")
def harness(load_benchmark):
    return load_benchmark("gpu_benchmark")


def test_ray_sample_count_matches_the_projector(harness):
    geom = cbct.ConeGeometry.circular(
        dso=60.0, dsd=90.0, detector_shape=(9, 11), detector_pixel_size=2.0, volume_shape=(7, 8, 9),
        voxel_size=(1.0, 1.2, 0.9), n_views=5, volume_offset=(0.5, 1.0, -1.0),
    )
    rays = ray_parameters(geom)
    shape, spacing = _grid_args(geom)
    expected = 0
    for view in range(geom.n_views):
        for iv in range(geom.detector_shape[0]):
            for iu in range(geom.detector_shape[1]):
                first, last = _setup_ray(rays, view, iv, iu, shape, spacing)[-2:]
                expected += max(0, last - first + 1)
    assert expected > 0 and harness.ray_samples(geom) == expected


def test_benchmark_geometry_and_cli_without_gpu(harness, monkeypatch):
    geom = harness.benchmark_geometry(32, 10, 48)
    assert geom.volume.shape == (32, 32, 32) and geom.projection_shape == (10, 48, 48)
    assert np.isclose(geom.volume.size[0], 64.0)
    monkeypatch.setattr("cbct.cuda.is_available", lambda: False)
    assert harness.main(["--size", "16", "--views", "4", "--detector", "16"]) == 2


def test_entries_run_on_the_emulated_device(harness):
    """Every timed operation once on the CPU harness (the csrc kernels on the CPU): shapes, work counts, floors."""
    try:
        from cbct.cuda.emulator import compiler_available, emulated_cupy
    except ImportError as exc:
        pytest.skip(f"no CPU harness: {exc}")
    if not compiler_available():
        pytest.skip("no C++ compiler for the CPU harness")
    geom = harness.benchmark_geometry(12, 10, 16)
    rng = np.random.default_rng(0)
    with emulated_cupy() as cp:
        volume = cp.asarray(rng.random(geom.volume.shape, dtype=np.float32))
        projections = cp.asarray(rng.random(geom.projection_shape, dtype=np.float32))
        filtered, fgeom = cbct.fdk_filter(projections, geom)
        scan = harness.DeviceScan(geom, fgeom, volume, projections, filtered)
        entries = harness.entries(scan, 1234)
        assert len(entries) == 12 and harness.scan_sizes(scan)["detector"] == [16, 16]
        for name, entry in entries.items():
            out = entry.fn()
            assert out.shape[-3:] == (geom.projection_shape if name.startswith("forward") else geom.volume.shape), name
            assert entry.floor_bytes > 0 and set(entry.work) & {"voxel_updates_count", "ray_samples_count"}
        assert entries["fdk_backprojection[exact,float16]"].texture_bytes == 10 * 16 * 16 * 2
        assert entries["segmented_backprojection[K=8]"].fn().shape == (8, 12, 12, 12)
        assert list(harness.entries(scan, 1, ["fdk_end_to_end[device]"])) == ["fdk_end_to_end[device]"]
        with pytest.raises(ValueError, match="unknown benchmark entries"):
            harness.entries(scan, 1, ["fdk"])


@pytest.mark.gpu
def test_smoke_run_writes_json(harness, tmp_path):
    import json

    out = tmp_path / "gpu.json"
    assert harness.main(["--size", "32", "--views", "12", "--detector", "40", "--repeats", "2", "--warmup", "1",
                         "--check-size", "24", "--check-views", "12", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["gpu"]["name"] and report["results"]["fdk_backprojection[exact,float32]"]["gups"] > 0
    assert report["accuracy_vs_cpu_float64"]["fdk_backprojection_exact"] < 1e-4
