"""Inputs refused before they cost, each with its message; outputs other tools accept (dciodvfy, dcmtk)."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
import yaml

import cbct
from cbct.batch import run_batch
from cbct.cli import main
from cbct.io.manifest import load_manifest
from cbct.memory import InsufficientMemoryError, check_memory, format_bytes
from cbct.pipeline import Pipeline, PipelineError, SchemaError, Stage, run_pipeline
from cbct.pipeline.registry import StageNotAllowedError, installed_stages
from cbct.preprocess import check_line_integrals, counts_to_line_integrals
from cbct.scan import Scan


@pytest.fixture(scope="module")
def geometry() -> cbct.ConeGeometry:
    return cbct.ConeGeometry.circular(dso=400.0, dsd=600.0, detector_shape=(20, 28), detector_pixel_size=2.4,
                                      volume_shape=16, voxel_size=3.0, n_views=24)


@pytest.fixture(scope="module")
def line_integrals(geometry) -> np.ndarray:
    from cbct.phantoms import shepp_logan_projections

    return shepp_logan_projections(geometry)


def raw_scan(geometry, projections, *, dead: int = 0) -> Scan:
    counts = (1e4 * np.exp(-projections)).astype(np.float32) + 100.0
    counts[3, 5, 6 : 6 + dead] = 90.0  # below the dark level of 100
    return Scan.from_arrays(geometry, counts=counts, flat=np.full((2, 20, 28), 1e4 + 100.0), dark=np.full((20, 28), 100.0),
                            metadata={"id": "raw"})


def test_counts_at_or_below_dark_are_refused_unless_clipping_is_asked(geometry, line_integrals):
    scan = raw_scan(geometry, line_integrals, dead=4)
    with pytest.raises(PipelineError, match=r"scan 'raw': stage 1/2 'preprocess' failed: ValueError: 4 pixels .* in 1 of "
                                            r"24 views have raw counts at or below the dark level .* first at \(view, v, u\) "
                                            r"= \(3, 5, 6\).*clip_counts: true"):
        run_pipeline(Pipeline("p", [Stage("preprocess"), Stage("fdk")]), scan)
    clipped = run_pipeline(Pipeline("p", [Stage("preprocess", {"clip_counts": True}), Stage("fdk")]), scan)
    assert np.isfinite(clipped.volume).all()
    with pytest.raises(ValueError, match="at or below the dark level"):
        counts_to_line_integrals(scan.counts, dark=scan.dark, flat=scan.flat)


def test_negative_line_integrals_are_refused(geometry, line_integrals):
    check_line_integrals(line_integrals - 0.02)  # noise in air: accepted
    flipped = Scan.from_arrays(geometry, projections=-line_integrals, metadata={"id": "flipped"})
    with pytest.raises(PipelineError, match=r"scan 'flipped'.*line integrals .* below -0.5 \(minimum -\d.*first at "
                                            r"\(view, v, u\).*-log missing or its sign flipped"):
        run_pipeline(Pipeline("p", [Stage("preprocess"), Stage("fdk")]), Scan.from_arrays(
            geometry, projections=-4 * line_integrals, metadata={"id": "flipped"}))
    small = -0.1 * line_integrals / line_integrals.max() - 0.02  # mostly negative, never below -0.5
    with pytest.raises(ValueError, match=r"are negative"):
        check_line_integrals(small)
    kept = run_pipeline(Pipeline("p", [Stage("preprocess", {"clip_negative": True}), Stage("fdk")]), flipped)
    assert np.all(kept.volume == 0)


def test_a_pipeline_that_writes_nothing_is_refused_before_running(tmp_path, capsys):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"scans": [{"id": "a", "simulate": {"size": 16, "views": 12}}]}))
    pipeline = tmp_path / "nothing.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "nothing", "stages": [{"stage": "preprocess"}, {"stage": "fdk"}]}))
    assert main(["run", str(manifest), "-p", str(pipeline), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nothing.yaml: stages: no stage writes an output (stages: preprocess, fdk)" in err and "export" in err
    assert not (tmp_path / "out").exists()


def test_arbitrary_module_function_stages_need_an_opt_in(tmp_path, capsys, monkeypatch):
    called = []
    monkeypatch.setattr("os.getcwd", lambda: called.append(1) or "/")
    pipe = Pipeline("p", [Stage("os:getcwd")])
    with pytest.raises(StageNotAllowedError, match=r"stage 'os:getcwd' is neither a registered stage .* 'cbct.stages' "
                                                   r"entry-point group.*allow_any_stage=True"):
        pipe.resolve()
    assert not called
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"scans": [{"id": "a", "simulate": {"size": 16, "views": 12}}]}))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "p", "stages": [{"stage": "os:getcwd"}, {"stage": "export"}]}))
    assert main(["run", str(manifest), "-p", str(pipeline), "-o", str(tmp_path / "out")]) == 2
    assert "--allow-any-stage" in capsys.readouterr().err and not called
    assert pipe.resolve(allow_any_stage=True)[0][1] is not None  # opted in: imported


def test_stages_installed_through_the_entry_point_group(monkeypatch, geometry, line_integrals):
    def fake(group):
        assert group == "cbct.stages"
        return [importlib.metadata.EntryPoint("halve", "tests_stage_plugin:halve", "cbct.stages")]

    import sys
    import types

    plugin = types.ModuleType("tests_stage_plugin")
    plugin.halve = lambda state: state.replace(volume=state.volume / 2)
    monkeypatch.setitem(sys.modules, "tests_stage_plugin", plugin)
    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    installed_stages.cache_clear()
    try:
        assert dict(installed_stages()) == {"halve": "tests_stage_plugin:halve"}
        scan = Scan.from_arrays(geometry, projections=line_integrals)
        full = run_pipeline(Pipeline("p", [Stage("fdk")]), scan).volume
        half = run_pipeline(Pipeline.from_dict({"name": "p", "stages": [{"stage": "fdk"}, {"stage": "halve"}]}), scan)
        np.testing.assert_allclose(half.volume, full / 2)
    finally:
        installed_stages.cache_clear()


@pytest.mark.parametrize("doc, message", [
    ({"scans": [{"id": "a", "path": "x.h5", "geometry": {
        "type": "circular", "dso": "far", "dsd": 700, "detector_shape": [10, 10], "detector_pixel_size": 1.0,
        "volume_shape": 8, "voxel_size": 1.0, "n_views": 36}}]}, r"m.yaml: scans\[0\]\.geometry\.dso: expected a number, got 'far'"),
    ({"scans": [{"id": "a", "path": "x.h5", "geometry": {
        "type": "circular", "dso": 500, "dsd": 700, "detector_shape": [10.5, 10], "detector_pixel_size": 1.0,
        "volume_shape": 8, "voxel_size": 1.0, "n_views": 36}}]},
     r"scans\[0\]\.geometry\.detector_shape\[0\]: expected an integer, got 10.5"),
    ({"scans": [{"id": "a", "path": "x.h5", "volume": {"shape": [8, 16.5, 16]}}]}, r"scans\[0\]\.volume\.shape\[1\]: expected an integer"),
    ({"scans": [{"id": "a", "simulate": {"size": 24.5}}]}, r"scans\[0\]\.simulate\.size: expected an integer, got 24.5"),
    ({"scans": [{"id": "a", "simulate": {"sise": 24}}]}, r"scans\[0\]\.simulate\.sise: unknown field"),
    ({"scans": [{"id": "a", "simulate": {"views": 0}}]}, r"scans\[0\]\.simulate\.views: must be >= 1"),
    ({"scans": [{"id": "a", "path": "x.h5", "geometry": {"type": "fan"}}]}, r"scans\[0\]\.geometry\.type: must be 'circular' or 'cone_vec'"),
])
def test_manifest_fields_are_checked_on_load(tmp_path, doc, message):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SchemaError, match=message):
        load_manifest(path)


def test_manifest_that_is_not_utf8_and_geometry_files(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("scans:\n  - id: a\n    path: données.h5\n".encode("latin-1"))
    with pytest.raises(SchemaError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        load_manifest(path)
    (tmp_path / "geom.yaml").write_text(yaml.safe_dump({
        "type": "circular", "dso": 500, "dsd": "far", "detector_shape": [10, 10], "detector_pixel_size": 1.0,
        "volume_shape": 8, "voxel_size": 1.0, "n_views": 36}))
    path.write_text(yaml.safe_dump({"scans": [{"id": "a", "path": "x.h5", "geometry": "geom.yaml"}]}))
    with pytest.raises(SchemaError, match=r"geom.yaml: dsd: expected a number, got 'far'"):
        load_manifest(path)


def test_scans_confined_to_a_root(tmp_path, capsys):
    inside = tmp_path / "clinic"
    inside.mkdir()
    (inside / "scan.h5").write_bytes(b"")
    (inside / "escape.h5").symlink_to("/etc/hostname")
    doc = {"root": "clinic", "scans": [{"id": "a", "path": "clinic/scan.h5"}]}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert len(load_manifest(path)) == 1
    doc["scans"].append({"id": "b", "path": "clinic/../outside.h5"})
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SchemaError, match=r"scans\[1\]\.path: .*outside.h5 is outside the root folder .*clinic"):
        load_manifest(path)
    doc["scans"][1] = {"id": "b", "path": "clinic/escape.h5"}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SchemaError, match=r"escape.h5 is outside the root folder .*through a symbolic link: it resolves "
                                          r"to /etc/hostname"):
        load_manifest(path)
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"scans": [{"id": "a", "simulate": {"volume": "/etc/hostname"}}]}))
    assert main(["run", str(plain), "-p", "fdk", "-o", str(tmp_path / "out"), "--root", str(inside)]) == 2
    assert re.search(r"scans\[0\]\.simulate\.volume: /etc/hostname is outside the root folder", capsys.readouterr().err)


def test_impossible_sizes_are_refused_at_once(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["simulate", "--phantom", "dental", "--size", "4096", "--out", str(tmp_path / "big" / "s.h5")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"simulating a 4096\^3 dental phantom .* needs about [\d.]+ TiB of memory but only [\d.]+ [GMT]iB "
                     r"is host memory available", err)
    assert main(["demo", "--size", "4096", "--out", str(tmp_path / "demo")]) == 2
    assert re.search(r"the demo at --size 4096 .* needs about [\d.]+ TiB .* but only", capsys.readouterr().err)
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "demo").exists() and not (tmp_path / "big").exists()
    assert main(["simulate", "--size", "0", "--out", str(tmp_path / "s.h5")]) == 1
    assert "size must be a whole number >= 2, got 0" in capsys.readouterr().err
    with pytest.raises(InsufficientMemoryError, match=r"FDK of .* needs about 1.0 TiB of memory but only"):
        check_memory(1 << 40, "FDK of a test")
    assert format_bytes(1536) == "1.5 KiB"


def test_fdk_stage_checks_memory_before_allocating(geometry, line_integrals):
    scan = Scan.from_arrays(geometry, projections=line_integrals, metadata={"id": "huge"})
    with pytest.raises(PipelineError, match=r"scan 'huge': stage 1/1 'fdk' failed: InsufficientMemoryError: FDK of a "
                                            r"8192x8192x8192 volume from 24 views .* needs about [\d.]+ TiB"):
        run_pipeline(Pipeline("p", [Stage("fdk", {"volume_shape": 8192, "voxel_size": 0.001})]), scan)


def test_batch_reports_refused_inputs_per_scan(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"scans": [
        {"id": "dead", "simulate": {"size": 16, "views": 12, "raw": True, "noise": 2.0, "seed": 3}},
        {"id": "fine", "simulate": {"size": 16, "views": 12}}]}))
    summary = run_batch(manifest, "fdk", tmp_path / "out")
    status = {s["id"]: s for s in summary["scans"]}
    assert status["fine"]["status"] == "ok"
    assert status["dead"]["status"] == "failed" and "at or below the dark level" in status["dead"]["error"]


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory) -> pathlib.Path:
    from cbct.io import write_volume

    folder = tmp_path_factory.mktemp("dicom") / "series"
    volume = np.random.default_rng(0).uniform(0.0, 0.05, (4, 12, 10)).astype(np.float32)
    write_volume(volume, folder, format="dicom")
    return folder


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_dicom_series_passes_dciodvfy(dicom_series):
    for path in sorted(dicom_series.iterdir()):
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        text = report.stdout + report.stderr
        assert "CTImage" in text and not re.search(r"^Error", text, re.MULTILINE), text


@pytest.mark.skipif(shutil.which("dcm2pnm") is None, reason="dcm2pnm (Debian package dcmtk) is not installed")
def test_dicom_series_renders_in_dcmtk(dicom_series, tmp_path):
    from PIL import Image

    for i, path in enumerate(sorted(dicom_series.iterdir())):
        png = tmp_path / f"{i}.png"
        done = subprocess.run(["dcm2pnm", "--write-png", "--use-window", "1", str(path), str(png)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        image = np.asarray(Image.open(png))
        assert image.shape == (12, 10) and image.std() > 0


def test_fdk_stage_checks_gpu_memory_on_the_emulated_device(geometry, line_integrals, emulated_cp):
    """The GPU path: the estimate is compared with the device's free memory (the stand-in has 8 GiB free)."""
    scan = Scan.from_arrays(geometry, projections=line_integrals, metadata={"id": "gpu"})
    with pytest.raises(PipelineError, match=r"FDK of a 1400x1400x1400 volume .* needs about 10.2 GiB of memory but "
                                            r"only 8.0 GiB is free on cuda"):
        run_pipeline(Pipeline("p", [Stage("fdk", {"volume_shape": 1400, "voxel_size": 0.03})]), scan, device="cuda")
