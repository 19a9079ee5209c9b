"""Pipelines: schema validation, the stage registry, the engine, built-in stages and profiling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import cbct
from cbct.io import read_scan
from cbct.phantoms import shepp_logan_projections
from cbct.pipeline import (STAGES, Pipeline, PipelineError, PipelineState, SchemaError, Stage, builtin_pipelines,
                           load_pipeline, run_pipeline)
from cbct.scan import Scan


@pytest.fixture(scope="module")
def geometry() -> cbct.ConeGeometry:
    return cbct.ConeGeometry.circular(dso=400.0, dsd=600.0, detector_shape=(40, 56), detector_pixel_size=1.2,
                                      volume_shape=32, voxel_size=1.5, n_views=48)


@pytest.fixture(scope="module")
def scan(geometry) -> Scan:
    return Scan.from_arrays(geometry, projections=shepp_logan_projections(geometry), metadata={"id": "sl"})


def write_yaml(path, doc) -> str:
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_builtin_pipelines_validate():
    shipped = builtin_pipelines()
    assert {"fdk", "motion", "sparse_view"} <= set(shipped)
    fdk = load_pipeline("fdk")
    assert [s.stage for s in fdk.stages] == ["preprocess", "fdk", "export"]
    fdk.resolve()  # our stages import and their parameters match their signatures
    assert [s.stage for s in load_pipeline("motion").stages] == ["preprocess", "motion_compensation", "fdk", "export"]
    assert [s.stage for s in load_pipeline("motion_sbp_mac").stages] == ["preprocess", "motion_compensation", "sbp_mac", "export"]
    assert [s.stage for s in load_pipeline("sparse_view.yaml").stages] == [
        "preprocess", "bbc_completion", "fdk", "export"]
    assert STAGES["sbp_mac"] == "cbct.sbp_mac.stage:sbp_mac_stage"
    assert STAGES["bbc_completion"] == "cbct.bbc.stage:completion_stage"
    assert STAGES["bbc_restoration"] == "cbct.bbc.stage:restoration_stage"


def test_python_pipeline_matches_fdk_and_yaml_round_trip(scan, geometry, tmp_path):
    pipe = Pipeline("mine", [Stage("preprocess"), Stage("fdk", {"filter": "hann"})])
    result = run_pipeline(pipe, scan)
    expected = cbct.fdk(scan.projections, geometry, filter="hann")
    np.testing.assert_array_equal(result.volume, expected)
    assert result.volume.dtype == np.float32 and result.volume.shape == (32, 32, 32)
    assert result.voxel_size == (1.5, 1.5, 1.5)
    assert result.origin == (-23.25, -23.25, -23.25)
    assert list(result.timings) == ["preprocess", "fdk"] and all(t >= 0 for t in result.timings.values())
    assert result.profile is None
    # the same pipeline as a YAML file
    path = write_yaml(tmp_path / "p.yaml", pipe.to_dict())
    again = load_pipeline(path)
    assert again.digest() == pipe.digest()
    np.testing.assert_array_equal(run_pipeline(path, scan).volume, expected)


def test_motion_compensation_stage_feeds_fdk_the_compensated_geometry(geometry):
    from cbct.simulation.motion import RigidMotion

    n = geometry.n_views
    step = (np.arange(n) >= 30).astype(float) - 18 / n
    motion = RigidMotion.from_vectors(np.outer(step, np.radians([0.0, 0.0, 2.0])), np.outer(step, [1.5, 0.0, 0.0]))
    moving = Scan.from_arrays(geometry, projections=shepp_logan_projections(motion.apply(geometry)), metadata={"id": "m"})
    # the motion is centred on its mean pose, the pose of the reference below: declare it
    pipe = Pipeline("p", [Stage("motion_compensation", {"groups": [8, 8], "pose": "mean"}), Stage("fdk", {"filter": "hann"})])
    pipe.resolve()
    result = run_pipeline(pipe, moving)
    estimated = result.state.extras["motion"]
    assert isinstance(estimated, RigidMotion) and estimated.n_views == n
    np.testing.assert_allclose(result.volume, cbct.fdk(moving.projections, estimated.apply(geometry), filter="hann"), atol=1e-6)
    reference = cbct.fdk(shepp_logan_projections(geometry), geometry, filter="hann")
    plain = run_pipeline(Pipeline("p", [Stage("fdk", {"filter": "hann"})]), moving).volume

    def rmse(x):
        return float(np.sqrt(np.mean((x - reference) ** 2)))

    assert rmse(result.volume) < 0.8 * rmse(plain), (rmse(result.volume), rmse(plain))
    with pytest.raises(SchemaError, match="jump"):
        Pipeline("p", [Stage("motion_compensation", {"jump": 1.0})]).resolve()


def test_raw_counts_go_through_preprocess(scan, geometry):
    i0 = 5e4
    counts = (i0 * np.exp(-scan.projections)).astype(np.float32) + 100.0
    raw = Scan.from_arrays(geometry, counts=counts, flat=np.full((2, 40, 56), i0 + 100.0), dark=np.full((40, 56), 100.0))
    pipe = Pipeline("p", [Stage("preprocess"), Stage("fdk")])
    np.testing.assert_allclose(run_pipeline(pipe, raw).volume, run_pipeline(pipe, scan).volume, atol=2e-5)
    with pytest.raises(PipelineError, match=r"stage 1/1 'fdk' failed.*add a 'preprocess' stage"):
        run_pipeline(Pipeline("p", [Stage("fdk")]), raw)


def test_grid_override_and_export(scan, tmp_path):
    pipe = Pipeline("p", [Stage("fdk", {"volume_shape": [8, 16, 16], "voxel_size": 3.0}),
                          Stage("export", {"formats": ["hdf5", "png"]})])
    result = run_pipeline(pipe, scan, out_dir=tmp_path)
    assert result.volume.shape == (8, 16, 16) and result.voxel_size == (3.0, 3.0, 3.0)
    assert set(result.outputs) == {"hdf5", "png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.h5", "volume.png"]
    back = cbct.io.read_volume(result.outputs["hdf5"])
    np.testing.assert_array_equal(back.data, result.volume)



def test_without_out_dir_export_writes_nothing_and_the_volume_is_returned(scan, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    pipe = Pipeline("p", [Stage("fdk"), Stage("export", {"formats": ["hdf5", "png"]})])
    with caplog.at_level("INFO", logger="cbct.pipeline.stages"):
        result = run_pipeline(pipe, scan)
    assert result.volume.shape == scan.geometry.volume.shape and result.outputs == {}
    assert list(tmp_path.iterdir()) == []
    assert "nothing written" in caplog.text


@pytest.mark.parametrize("name", ["fdk", "sparse_view", "motion"])
def test_bundled_pipelines_return_a_volume_from_python(name, geometry, tmp_path, monkeypatch):
    """The shipped pipelines run from Python without an output folder (sparse view: every 2nd view of the scan)."""
    monkeypatch.chdir(tmp_path)
    projections = shepp_logan_projections(geometry).astype(np.float32)
    scan = Scan.from_arrays(geometry, projections=projections, metadata={"id": name})
    if name == "sparse_view":
        scan = Scan.from_arrays(geometry[::2], projections=projections[::2], metadata={"id": name, "sparse_step": 2})
    result = run_pipeline(name, scan)
    assert result.volume.shape == geometry.volume.shape and np.isfinite(result.volume).all()
    assert list(tmp_path.iterdir()) == []


def test_tooth_through_the_pipeline(data_file):
    """Real raw counts: preprocess, the parallel half scan completed automatically, FDK."""
    tooth = read_scan(data_file("tooth.h5"))
    pipe = Pipeline("tooth", [Stage("preprocess"),
                              Stage("fdk", {"filter": "hann", "volume_shape": [2, 128, 128], "voxel_size": [0.025, 0.125, 0.125]})])
    vol = run_pipeline(pipe, tooth).volume[1]
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 63.5, xx - 63.5) * 0.125
    tooth_mask = vol > 0.5 * np.percentile(vol, 99.5)
    assert 0.05 < tooth_mask.mean() < 0.5
    assert vol[tooth_mask].mean() > 10 * np.abs(vol[r > 7.0]).mean()


@pytest.mark.parametrize("doc, message", [
    ("name: x\nstages: [\n  - stage: fdk\n", r"not valid YAML \(line \d+"),
    ({"name": "x", "stages": [{"stage": "fdk", "parms": {}}]}, r"stages\[0\]\.parms: unknown field"),
    ({"name": "x"}, r"stages: required field missing"),
    ({"name": "x", "stages": []}, r"stages: needs at least 1"),
    ({"name": "x", "stages": [{"stage": "preprocess"}, {"stage": "fdkk"}]}, r"stages\[1\]\.stage: unknown stage 'fdkk'"),
    ({"name": "x", "stages": [{"stage": "fdk"}, {"stage": "fdk"}]}, r"appear more than once"),
])
def test_bad_pipeline_files(tmp_path, doc, message):
    path = write_yaml(tmp_path / "bad.yaml", doc)
    with pytest.raises(SchemaError, match=message):
        load_pipeline(path)


@pytest.mark.parametrize("params, message", [
    ({"cutoff": "high"}, r"stages\[0\]\.params\.cutoff: expected a number, got 'high'"),
    ({"filtr": "hann"}, r"stages\[0\]\.params\.filtr: unknown field"),
    ({"filter": "gauss"}, r"stages\[0\]\.params\.filter: must be one of 'ram-lak'"),
])
def test_bad_stage_parameters_fail_before_running(scan, params, message):
    with pytest.raises(SchemaError, match=message):
        run_pipeline(Pipeline("p", [Stage("fdk", params)]), scan)


def test_unimportable_and_misbehaving_stages(scan):
    with pytest.raises(ImportError, match=r"stage 'cbct.not_a_module:run' .*cannot be imported"):
        run_pipeline(Pipeline("p", [Stage("cbct.not_a_module:run")]), scan, allow_any_stage=True)

    def bad(state):
        return 42

    with pytest.raises(PipelineError, match=r"'bad' failed: TypeError: stage returned int"):
        run_pipeline(Pipeline("p", [Stage(bad)]), scan)
    with pytest.raises(PipelineError, match="ended without a volume"):
        run_pipeline(Pipeline("p", [Stage("preprocess")]), scan)
    with pytest.raises(FileNotFoundError, match="pipeline not found: nope.*built-in pipelines: .*fdk"):
        load_pipeline("nope")


def test_nan_projections_are_reported(scan, geometry):
    proj = scan.projections.copy()
    proj[5, 10, 10] = np.nan
    state = PipelineState(geometry=geometry, projections=proj, metadata={"id": "nan-scan"})
    with pytest.raises(PipelineError, match=r"scan 'nan-scan': stage 1/2 'preprocess' failed.*NaN"):
        run_pipeline(Pipeline("p", [Stage("preprocess"), Stage("fdk")]), state)


def test_device_checks(scan):
    with pytest.raises(ValueError, match="device must be"):
        run_pipeline(Pipeline("p", [Stage("fdk")]), scan, device="gpu0")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="needs CuPy"):
            run_pipeline(Pipeline("p", [Stage("fdk")]), scan, device="cuda")


def test_profile_and_trace(scan, tmp_path):
    pytest.importorskip("torch")
    trace = tmp_path / "trace.json"
    result = run_pipeline(Pipeline("p", [Stage("preprocess"), Stage("fdk")]), scan, profile=True, trace=trace)
    report = result.profile
    names = [s.name for s in report.stages]
    assert names == ["preprocess", "fdk"]
    fdk = report.stages[1]
    assert fdk.voxel_updates == 32**3 * 48 and fdk.gups > 0
    assert fdk.peak_traced_bytes >= 32**3 * 4  # at least the output volume was allocated
    assert fdk.max_rss_bytes > 0 and fdk.gpu_s is None  # no GPU here
    assert "fdk" in report.format_table()
    events = json.loads(trace.read_text())["traceEvents"]
    assert {"preprocess", "fdk"} <= {e.get("name") for e in events}


def test_cuda_device_path_on_the_emulated_device(scan, geometry, monkeypatch, emulated_cp):
    """The GPU branch of the engine and the profiler (device check, transfers, CUDA events, NVTX ranges, GPU memory)
    on the emulated device (cbct.cuda.emulator: a CuPy stand-in running the real csrc kernels on the CPU)."""
    import sys
    import types

    cupy = emulated_cp
    ranges: list[str] = []
    nvtx = types.ModuleType("cupy.cuda.nvtx")
    nvtx.RangePush = ranges.append
    nvtx.RangePop = lambda: ranges.append("pop")
    monkeypatch.setitem(sys.modules, "cupy.cuda.nvtx", nvtx)
    monkeypatch.setattr(cupy.cuda, "nvtx", nvtx, raising=False)
    monkeypatch.setattr(cupy.cuda, "get_elapsed_time", lambda start, end: 1.5, raising=False)
    result = run_pipeline(Pipeline("p", [Stage("preprocess"), Stage("fdk")]), scan, device="cuda", profile=True)
    with pytest.raises(RuntimeError, match="only 1 GPU"):
        run_pipeline(Pipeline("p", [Stage("fdk")]), scan, device="cuda:1")
    assert isinstance(result.volume, np.ndarray)  # brought back to the host
    np.testing.assert_allclose(result.volume, cbct.fdk(scan.projections, geometry), atol=2e-4)
    fdk = result.profile.stages[1]
    assert fdk.gpu_s == pytest.approx(1.5e-3) and fdk.gups == pytest.approx(32**3 * 48 / 1.5e-3 / 1e9)
    assert fdk.gpu_used_bytes == 8 << 30  # the stand-in's memGetInfo: 8 of 16 GiB free
    assert ranges == ["preprocess", "pop", "fdk", "pop"]
