"""The ``cbct`` command line end to end, as a new user would run it."""

from __future__ import annotations

import json
import pathlib

import h5py
import numpy as np
import pytest
import yaml

from cbct.cli import main
from cbct.io.manifest import sha256_file


def _summary(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> pathlib.Path:
    """Three scan files made with `cbct simulate`: good, truncated, and one whose geometry lost a view."""
    folder = tmp_path_factory.mktemp("scans")
    assert main(["simulate", "--size", "24", "--views", "36", "--noise", "1e5", "--out", str(folder / "good.h5")]) == 0
    data = (folder / "good.h5").read_bytes()
    (folder / "truncated.h5").write_bytes(data[: len(data) * 2 // 3])
    (folder / "mismatch.h5").write_bytes(data)
    with h5py.File(folder / "mismatch.h5", "r+") as f:
        vectors, angles = f["geometry/vectors"][:-1], f["geometry/angles"][:-1]
        del f["geometry/vectors"], f["geometry/angles"]
        f["geometry/vectors"], f["geometry/angles"] = vectors, angles
    return folder


def _manifest(folder: pathlib.Path, scans: pathlib.Path, extra: list[dict] | None = None) -> pathlib.Path:
    doc = {"name": "three", "version": 1, "scans": [
        {"id": "truncated", "path": str(scans / "truncated.h5")},
        {"id": "mismatch", "path": str(scans / "mismatch.h5"), "format": "cbct-hdf5"},
        {"id": "good", "path": str(scans / "good.h5"), "sha256": sha256_file(scans / "good.h5"),
         "provenance": {"source": "cbct simulate"}},
        *(extra or []),
    ]}
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_batch_isolates_failures_and_resumes(tmp_path, scans, capsys):
    manifest = _manifest(tmp_path, scans)
    out = tmp_path / "out"
    code = main(["run", str(manifest), "--pipeline", "fdk", "--out", str(out), "--no-progress"])
    assert code == 1  # two scans failed
    summary = _summary(capsys)
    status = {s["id"]: s for s in summary["scans"]}
    assert [s["id"] for s in summary["scans"]] == ["truncated", "mismatch", "good"]
    assert summary["counts"] == {"ok": 1, "skipped": 0, "failed": 2, "pending": 0}
    assert status["good"]["status"] == "ok"
    assert "truncated.h5" in status["truncated"]["error"] and "truncated or corrupt" in status["truncated"]["error"]
    assert "mismatch.h5" in status["mismatch"]["error"] and "do not match" in status["mismatch"]["error"]
    # only the finished scan has an output folder; nothing half-written, no temporary leftovers
    assert sorted(p.name for p in out.iterdir()) == [".cbct", "good", "pipeline.json", "summary.json"]
    good = out / "good"
    assert sorted(p.name for p in good.iterdir()) == ["result.json", "volume.h5", "volume.nii.gz", "volume.png", "volume_dicom"]
    record = json.loads((good / "result.json").read_text())
    assert record["status"] == "ok" and record["volume"]["shape"] == [24, 24, 24]
    assert record["provenance"] == {"source": "cbct simulate"} and set(record["timings_s"]) == {"preprocess", "fdk", "export"}
    assert len(list((good / "volume_dicom").iterdir())) == 24
    assert json.loads((out / "summary.json").read_text())["counts"] == summary["counts"]
    mtime = (good / "volume.h5").stat().st_mtime_ns

    # second run: the finished scan is skipped, the broken ones are reported again
    code = main(["run", str(manifest), "--pipeline", "fdk", "--out", str(out), "--no-progress"])
    assert code == 1
    summary = _summary(capsys)
    assert {s["id"]: s["status"] for s in summary["scans"]} == {"truncated": "failed", "mismatch": "failed", "good": "skipped"}
    assert (good / "volume.h5").stat().st_mtime_ns == mtime

    # --force redoes it; --only limits the batch: exit 0 when nothing failed; --profile keeps the measurements
    assert main(["run", str(manifest), "-p", "fdk", "-o", str(out), "--only", "good", "--force", "--profile",
                 "--no-progress"]) == 0
    assert _summary(capsys)["counts"] == {"ok": 1, "skipped": 0, "failed": 0, "pending": 0}
    assert (good / "volume.h5").stat().st_mtime_ns != mtime
    profile = json.loads((good / "result.json").read_text())["profile"]
    assert [s["name"] for s in profile["stages"]] == ["preprocess", "fdk", "export"] and profile["stages"][1]["gups"] > 0

    # another pipeline into the same folder: the result's fingerprint no longer matches, so it is recomputed
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"name": "other", "stages": [{"stage": "fdk"}, {"stage": "export"}]}))
    assert main(["run", str(manifest), "-p", str(other), "-o", str(out), "--only", "good", "--no-progress"]) == 0
    item = _summary(capsys)["scans"][0]
    assert item["status"] == "ok" and item["reason"] == "recomputed: pipeline changed"
    assert json.loads((good / "result.json").read_text())["pipeline"] == "other"
    # a folder that is not a cbct result is never replaced without --force
    (out / "truncated").mkdir()
    (out / "truncated" / "notes.txt").write_text("mine")
    assert main(["run", str(manifest), "-p", str(other), "-o", str(out), "--only", "truncated", "--no-progress"]) == 1
    assert "holds no finished cbct result" in _summary(capsys)["scans"][0]["error"]
    assert (out / "truncated" / "notes.txt").read_text() == "mine"


def test_checksum_missing_file_and_bad_geometry_entries(tmp_path, scans, capsys):
    entries = [
        {"id": "bad_sum", "path": str(scans / "good.h5"), "sha256": "0" * 64},
        {"id": "missing", "path": "no/such/scan.h5"},
        {"id": "wrong_geometry", "path": str(scans / "good.h5"),
         "geometry": {"type": "circular", "dso": 500, "dsd": 700, "detector_shape": [10, 10], "detector_pixel_size": 1.0,
                      "volume_shape": 8, "voxel_size": 1.0, "n_views": 36}},
    ]
    doc = {"scans": entries}
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    assert main(["run", str(manifest), "--pipeline", "fdk", "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    errors = {s["id"]: s["error"] for s in _summary(capsys)["scans"]}
    assert "sha256 mismatch" in errors["bad_sum"] and "good.h5" in errors["bad_sum"]
    assert "file not found" in errors["missing"] and "no/such/scan.h5" in errors["missing"]
    assert "do not match" in errors["wrong_geometry"] and "scans[2]" in errors["wrong_geometry"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".cbct", "pipeline.json", "summary.json"]


@pytest.mark.parametrize("manifest_doc, pipeline, message", [
    ({"scans": [{"id": "a", "pth": "x.h5"}]}, "fdk", r"scans\[0\]\.pth: unknown field"),
    ({"scans": [{"id": "a", "path": "x.h5"}, {"id": "a", "path": "y.h5"}]}, "fdk", r"scans\[1\]\.id: duplicate id 'a'"),
    ({"scans": [{"id": "a", "path": "x.h5", "sha256": "abc"}]}, "fdk", r"scans\[0\]\.sha256: 'abc' does not match"),
    ({"scans": [{"id": "a", "path": "x.h5"}]}, {"name": "p", "stages": [{"stage": "denoise"}]}, r"unknown stage 'denoise'"),
    ({"scans": [{"id": "a", "path": "x.h5"}]}, "no_such_pipeline", r"pipeline not found"),
])
def test_bad_inputs_exit_2_before_anything_runs(tmp_path, capsys, manifest_doc, pipeline, message):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(manifest_doc))
    if isinstance(pipeline, dict):
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline))
        pipeline = str(tmp_path / "p.yaml")
    assert main(["run", str(manifest), "--pipeline", pipeline, "--out", str(tmp_path / "out")]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_simulate_options(tmp_path, capsys):
    from cbct.io import read_scan

    assert main(["simulate", "--phantom", "dental", "--size", "24", "--views", "32", "--sparse", "4",
                 "--out", str(tmp_path / "sparse.h5")]) == 0
    sparse = read_scan(tmp_path / "sparse.h5")
    assert sparse.geometry.n_views == 8 and sparse.metadata["sparse_step"] == 4
    assert sparse.metadata["sparse"]["kept_indices"] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert sparse.reference is not None and sparse.reference.data.max() > 0
    assert main(["simulate", "--size", "24", "--views", "32", "--motion", "nodding", "--max-rotation-deg", "3",
                 "--out", str(tmp_path / "moving.h5")]) == 0
    moving = read_scan(tmp_path / "moving.h5")
    still = read_scan(tmp_path / "sparse.h5")  # noqa: F841 - only to exercise a second read
    assert moving.metadata["motion"]["waveform"] == "nodding"
    rot = np.degrees(np.linalg.norm(np.asarray(moving.metadata["motion"]["rotation_vectors"]), axis=1))
    assert 0 < rot.max() <= 3.0 + 1e-6
    # the saved geometry is the nominal one (a circle), not the moved one
    np.testing.assert_allclose(np.linalg.norm(moving.geometry.sources[:, :2], axis=1), 500.0)
    # a real DICOM CT series as the input volume (HU -> mm^-1 with mu_water = 0.02)
    from pydicom.data import get_testdata_file

    series = pathlib.Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
    assert main(["simulate", "--volume", str(series), "--views", "20", "--out", str(tmp_path / "ct.h5")]) == 0
    ct = read_scan(tmp_path / "ct.h5")
    assert ct.geometry.volume.shape == (5, 16, 16) and ct.reference.data.max() > 0.01
    assert ct.projections.max() > 0.1 and ct.metadata["phantom"] == "volume"
    assert main(["simulate", "--raw", "--out", str(tmp_path / "raw.h5")]) == 1
    assert "raw counts need a photon count" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "moving.h5")]) == 2  # exists: refuses without --force


def test_info_profile_demo_and_model_dispatch(tmp_path, capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"fdk", "motion", "sparse_view"} <= set(info["pipelines"]) and "demo" in info["manifests"]
    assert info["stages"]["fdk"]["available"] and "numpy" in info["versions"]

    report = tmp_path / "profile.json"
    assert main(["profile", "--size", "24", "--views", "30", "--repeat", "2", "--warmup", "1",
                 "--pipeline", "fdk", "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "GUPS" in table and "fdk" in table
    stages = {s["stage"]: s for s in json.loads(report.read_text())["stages"]}
    assert stages["fdk"]["voxel_updates"] == 24**3 * 30 and stages["fdk"]["gups"] > 0
    assert stages["fdk"]["gpu_s_median"] is None  # no GPU on this machine: not measured, not invented

    assert main(["demo", "--out", str(tmp_path / "demo"), "--size", "16"]) == 0
    demo = json.loads(capsys.readouterr().out)
    assert pathlib.Path(demo["volume"]).is_file() and pathlib.Path(demo["preview"]).is_file()

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "bbc", "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()
    with pytest.raises(SystemExit):
        main(["train", "nerf"])  # not a model: argparse names the choices
    assert "invalid choice" in capsys.readouterr().err
