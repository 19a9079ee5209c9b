"""Motion correction with a gate and a declared pose (cbct.motion_correction), on truncated real anatomy."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import cbct
from cbct.metrics import psnr
from cbct.motion_correction import correct_motion, fov_points, relative_to_pose
from cbct.motion_estimation import MotionEstimationConfig
from cbct.operators import project
from cbct.phantoms.real import load_head_mha
from cbct.pipeline.stages import fdk_stage, motion_compensation_stage
from cbct.pipeline.state import PipelineState
from cbct.simulation.motion import RigidMotion

HEAD = pathlib.Path(__file__).parent / "data" / "head.mha"


@pytest.fixture(scope="module")
def head_scan():
    """head.mha (205 mm across) seen by a detector covering ~85 mm at the axis; a 80 × 80 × 48 mm grid."""
    volume, grid = load_head_mha(HEAD)
    geom = cbct.ConeGeometry.circular(dso=400.0, dsd=600.0, detector_shape=(32, 64), detector_pixel_size=2.0,
                                      volume_shape=(24, 40, 40), voxel_size=2.0, n_views=96,
                                      volume_offset=(20.0, 0.0, 0.0))
    return volume, grid, geom


def _scan_state(projections, geom) -> PipelineState:
    return PipelineState(geometry=geom, projections=projections, extras={"device": "cpu"})


def test_still_truncated_head_is_left_exactly_as_plain_fdk(head_scan):
    volume, grid, geom = head_scan
    still = project(volume, geom.with_volume(grid))
    assert still[:, :, :2].max() > 0.2 * still.max()  # truncated: the rows do not reach air
    state = motion_compensation_stage(_scan_state(still, geom))
    report = state.metadata["motion_correction"]
    assert report["moved"] is False and state.geometry is geom and report["truncation"] is True
    json.dumps(report)  # JSON-able
    assert report["pose"] == "first view" and len(report["rotation_deg"]) == geom.n_views
    assert np.abs(np.array(report["translation_mm"])).max() == 0
    plain = fdk_stage(_scan_state(still, geom), filter="hann").volume
    assert np.array_equal(fdk_stage(state, filter="hann").volume, plain)


def test_a_jerk_of_truncated_head_never_comes_out_worse_than_plain_fdk(head_scan):
    """The gate accepts an estimate only when the image gets sharper; on this scan the estimate is poor (the
    estimate forced through would lose ~4 dB) and must not be applied."""
    volume, grid, geom = head_scan
    step = (np.arange(geom.n_views) >= 50).astype(float)
    motion = RigidMotion.from_vectors(np.outer(step, np.radians([1.0, 0.0, 0.5])), np.outer(step, [2.0, -1.5, 1.0]),
                                      pivot=(0.0, 60.0, -60.0))
    moving = project(volume, motion.apply(geom.with_volume(grid)))
    result = correct_motion(moving, geom)
    reference = cbct.fdk(project(volume, geom.with_volume(grid)), geom, filter="hann")
    y, x = np.mgrid[:40, :40]
    mask = np.broadcast_to(np.hypot(x - 19.5, y - 19.5) < 17, reference.shape)
    rng = float(reference[mask].max() - reference[mask].min())
    before = psnr(cbct.fdk(moving, geom, filter="hann")[mask], reference[mask], data_range=rng)
    after = psnr(cbct.fdk(moving, result.geometry, filter="hann")[mask], reference[mask], data_range=rng)
    assert after >= before - 0.05, (result.moved, before, after)
    assert result.moved == (result.report["gate"]["relative_gain"] >= result.report["gate"]["gain_threshold"]
                            and result.report["gate"]["displacement_mm"] >= result.report["gate"]["displacement_threshold_mm"])


@pytest.fixture(scope="module")
def inside_scan():
    """A 48³ Shepp-Logan head inside the field of view (no truncation), 120 views."""
    from cbct.phantoms.shepp_logan import shepp_logan_volume

    geom = cbct.ConeGeometry.circular(dso=400.0, dsd=600.0, detector_shape=(64, 96), detector_pixel_size=1.2,
                                      volume_shape=48, voxel_size=1.0, n_views=120)
    return np.asarray(shepp_logan_volume(geom.volume, half_size=20.0), np.float32), geom


def test_gate_keeps_a_still_scan_and_accepts_a_jerk(inside_scan):
    volume, geom = inside_scan
    cfg = MotionEstimationConfig(groups=(8, 16))
    still = correct_motion(project(volume, geom), geom, config=cfg)
    assert not still.moved and still.geometry is geom and still.report["truncation"] is False
    step = (np.arange(geom.n_views) >= 70).astype(float)
    motion = RigidMotion.from_vectors(np.outer(step, np.radians([0.0, 0.0, 1.5])), np.outer(step, [1.5, -1.0, 0.8]),
                                      pivot=(0.0, -40.0, 0.0))
    moving = project(volume, motion.apply(geom))
    moved = correct_motion(moving, geom, config=cfg, pose="first")
    assert moved.moved and moved.pose == "first view"
    assert moved.report["gate"]["relative_gain"] > still.report["gate"]["relative_gain"]
    # in the first-view pose the views before the jerk stay (nearly) still, those after carry the jerk
    pts = fov_points(geom)
    assert moved.motion.displacement_mm(pts)[:60].mean() < 0.3 * motion.displacement_mm(pts)[90:].mean()
    reference = cbct.fdk(project(volume, geom), geom, filter="hann")
    rng = float(reference.max() - reference.min())
    before = psnr(cbct.fdk(moving, geom, filter="hann"), reference, data_range=rng)
    after = psnr(cbct.fdk(moving, moved.geometry, filter="hann"), reference, data_range=rng)
    assert after > before + 1.5, (before, after)


def test_a_scan_too_sparse_to_estimate_is_left_as_it_is(inside_scan, caplog):
    """Never worse than doing nothing: 15 views cannot hold the estimation's 16 groups, so the scan keeps its geometry
    (with a warning and the reason in the report) instead of failing the run."""
    volume, geom = inside_scan
    sparse = geom[::8]
    with caplog.at_level("WARNING", logger="cbct.motion_correction"):
        result = correct_motion(project(volume, sparse), sparse, config=MotionEstimationConfig(groups=(8, 16)))
    assert not result.moved and result.geometry is sparse and "skipped" in result.report
    assert result.report["rotation_deg"] == [[0.0, 0.0, 0.0]] * sparse.n_views
    assert "motion correction skipped" in caplog.text
    state = motion_compensation_stage(_scan_state(project(volume, sparse), sparse))
    assert state.geometry is sparse


def test_relative_to_pose_makes_the_chosen_view_still():
    rng = np.random.default_rng(3)
    motion = RigidMotion.from_vectors(rng.normal(0, 0.02, (7, 3)), rng.normal(0, 1, (7, 3)), pivot=(1.0, 2.0, 3.0))
    for pose, index in (("first", 0), (4, 4), (-1, 6)):
        rel, label = relative_to_pose(motion, pose)
        assert rel[index].is_identity(atol=1e-12)
        # composing back with the reference pose gives the original motion
        pts = np.array([[10.0, -5.0, 2.0], [0.0, 30.0, -8.0]])
        back = np.einsum("nij,pj->npi", rel.rotations, (np.einsum("ij,pj->pi", motion.rotations[index], pts - motion.pivot)
                                                          + motion.pivot + motion.translations[index]) - rel.pivot)
        back = back + rel.pivot + rel.translations[:, None]
        direct = np.einsum("nij,pj->npi", motion.rotations, pts - motion.pivot) + motion.pivot + motion.translations[:, None]
        np.testing.assert_allclose(back, direct, atol=1e-9)
    assert relative_to_pose(motion, "mean")[1] == "mean" and relative_to_pose(motion, 3)[1] == "view 3"
    with pytest.raises(ValueError, match="pose"):
        relative_to_pose(motion, "last")
    with pytest.raises(ValueError, match="outside"):
        relative_to_pose(motion, 7)


def test_pipeline_writes_the_pose_and_the_decision(inside_scan, tmp_path):
    from cbct.io import read_volume
    from cbct.pipeline import Pipeline, Stage, run_pipeline

    volume, geom = inside_scan
    scan = cbct.Scan.from_arrays(geom, projections=project(volume, geom), metadata={"id": "still"})
    pipe = Pipeline("p", [Stage("motion_compensation", {"groups": [4], "pose": "mean"}), Stage("fdk", {"filter": "hann"}),
                          Stage("export", {"formats": ["hdf5"]})])
    result = run_pipeline(pipe, scan, out_dir=tmp_path)
    report = result.metadata["motion_correction"]
    assert report["pose"] == "mean" and report["moved"] is False and result.metadata["pose"] == "mean"
    written = read_volume(result.outputs["hdf5"])
    assert written.metadata["pose"] == "mean" and written.metadata["motion_corrected"] is False
    np.testing.assert_array_equal(written.data, cbct.fdk(scan.projections, geom, filter="hann"))
