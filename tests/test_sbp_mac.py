"""SBP-MAC: data, model, loss, training, shipped weights and the pipeline stage."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

import cbct
from cbct.phantoms import real
from cbct.pipeline.state import PipelineState
from cbct.sbp_mac import data as sbp_data
from cbct.sbp_mac.data import SampleSpec, InGridScanConfig, sample_geometry, simulate_sample
from cbct.learned.weights import save_weights
from cbct.metrics import fov_disc
from cbct.sbp_mac.inference import SHIPPED, correct_volume, load_network, volume_metrics
from cbct.sbp_mac.loss import LossWeights, sbp_mac_loss
from cbct.sbp_mac.model import SBPMAC, SBPMACConfig
from cbct.sbp_mac.objects import ellipsoid_head
from cbct.sbp_mac.stage import sbp_mac_stage
from cbct.simulation.motion import evaluate_motion, sample_motion_parameters
from cbct.simulation.noise import add_noise

TINY = InGridScanConfig(volume_shape=(12, 32, 32), voxel_size=2.0, n_views=32, dso=300.0, dsd=450.0, n_segments=4)
TINY_MODEL = {"n_segments": 4, "channels": (8, 16), "encoder_channels": (8, 16), "segment_features": 2}


def test_sample_segments_sum_to_the_fdk_of_the_moving_scan():
    spec = SampleSpec("ellipsoids", 3, "jerk")
    s = simulate_sample(spec, TINY)
    assert s.segments.shape == (4, *TINY.volume_shape) and s.fdk.shape == s.reference.shape == TINY.volume_shape
    # the same scan rebuilt from the spec's random streams, reconstructed by plain FDK
    geom = sample_geometry(TINY)
    obj_rng, motion_rng, noise_rng = sbp_data._streams(spec)
    radius = min(TINY.grid.size[1:]) / 2 - TINY.fov_margin_mm
    vol = sbp_data.source_volume("ellipsoids", TINY.grid, obj_rng, radius_mm=radius)
    params = sample_motion_parameters(waveform="jerk", max_rotation_deg=2.0, max_translation_mm=2.0, pivot=TINY.motion.pivot, rng=motion_rng)
    i0 = float(np.exp(noise_rng.uniform(np.log(TINY.i0[0]), np.log(TINY.i0[1]))))
    scan = add_noise(cbct.project(vol, evaluate_motion(params, geom.n_views).apply(geom)), i0=i0, rng=noise_rng)
    expected = cbct.fdk(scan, geom, filter=TINY.filter)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(s.segments.sum(axis=0), expected, atol=1e-5 * scale)
    np.testing.assert_allclose(s.fdk, expected, atol=1e-5 * scale)
    # the reference is the motion-free noise-free FDK; the corrupted image differs from it
    np.testing.assert_allclose(s.reference, cbct.fdk(cbct.project(vol, geom), geom, filter=TINY.filter), atol=1e-5 * scale)
    assert np.sqrt(np.mean((s.fdk - s.reference) ** 2)) > 1e-3 * scale
    # every segment is a partial image: none alone is the FDK image
    assert all(np.abs(seg * 4 - s.fdk).max() > 0.05 * scale for seg in s.segments)


def test_samples_are_reproducible_and_seeds_differ():
    a = simulate_sample(SampleSpec("ellipsoids", 7, "mixed"), TINY)
    b = simulate_sample(SampleSpec("ellipsoids", 7, "mixed"), TINY)
    c = simulate_sample(SampleSpec("ellipsoids", 8, "mixed"), TINY)
    np.testing.assert_array_equal(a.segments, b.segments)
    assert a.meta["i0"] == b.meta["i0"] and not np.array_equal(a.fdk, c.fdk)


def test_real_anatomy_source_fits_the_field_of_view(data_file, monkeypatch):
    monkeypatch.setenv(real.ENV_VAR, str(data_file("head.mha").parent))  # the loader's default folder
    grid = TINY.grid
    vol = sbp_data.source_volume("head_mha", grid, np.random.default_rng(0), radius_mm=26.0, augment=False)
    assert vol.shape == grid.shape and vol.dtype == np.float32
    assert 0.01 < float(vol.max()) < 0.2 and float(vol[grid.shape[0] // 2].mean()) > 0.003
    yy, xx = np.mgrid[:32, :32] - 15.5
    assert np.all(vol[:, (xx * 2) ** 2 + (yy * 2) ** 2 > 27.0**2] == 0)  # nothing outside the cylinder


@pytest.mark.parametrize("use_segments,align", [(True, False), (True, True), (False, False)])
def test_model_shapes(use_segments, align):
    cfg = SBPMACConfig(**{**TINY_MODEL, "use_segments": use_segments, "n_neighbours": 2, "align_segments": align})
    model = SBPMAC(cfg)
    image = torch.randn(3, 5, 16, 24)
    seg = image[:, None].repeat(1, 4, 1, 1, 1) + torch.randn(3, 4, 5, 16, 24) if use_segments else None
    out, artifact, aligned, flow = model(image, seg)
    assert out.shape == (3, 1, 16, 24)
    assert (flow.shape == (3, 4, 2, 16, 24)) if align else flow is None
    assert (artifact.shape == (3, 1, 16, 24)) if use_segments else artifact is None
    if align:  # at initialisation the displacement fields are zero: the aligned image is the segments' mean
        torch.testing.assert_close(aligned, seg.mean(dim=1)[:, 2:3])
    else:
        assert aligned is None
    # at initialisation the generator passes the centre slice (FDK, or the aligned segments) through unchanged
    torch.testing.assert_close(out, aligned if align else image[:, 2:3], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="segments"):
        SBPMAC(SBPMACConfig(**TINY_MODEL))(image[:, :3], None)
    with pytest.raises(ValueError, match="multiples of 2"):
        model(torch.randn(1, 5, 15, 16), torch.randn(1, 4, 5, 15, 16) if use_segments else None)


@pytest.mark.parametrize("align", [False, True])
def test_a_training_step_lowers_the_loss_on_a_fixed_batch(align):
    torch.manual_seed(0)
    model = SBPMAC(SBPMACConfig(**TINY_MODEL, align_segments=align))
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(4, 1, 16, 16, generator=gen)
    seg = target[:, None].repeat(1, 4, 3, 1, 1) + 0.3 * torch.randn(4, 4, 3, 16, 16, generator=gen)
    image = seg.mean(dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        pred, artifact, aligned, _ = model(image, seg)
        loss, parts = sbp_mac_loss(pred, target, image[:, 1:2], artifact, LossWeights(1.0, 0.5, 0.5), aligned=aligned)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["total"])
    assert set(parts) == ({"pixel", "artifact", "segment", "total"} if align else {"pixel", "artifact", "total"})
    assert losses[-1] < 0.7 * losses[0]


def test_loss_terms():
    y = torch.zeros(2, 1, 4, 4)
    x = torch.ones(2, 1, 4, 4)
    loss, parts = sbp_mac_loss(y + 0.5, y, x, x - y, LossWeights(1.0, 2.0))
    assert parts["pixel"] == pytest.approx(0.5) and parts["artifact"] == pytest.approx(0.0)
    loss, parts = sbp_mac_loss(y, y, x, torch.zeros_like(x), LossWeights(1.0, 2.0))
    assert float(loss) == pytest.approx(2.0)  # the artifact map must equal FDK minus reference
    with pytest.raises(ValueError, match="target"):
        sbp_mac_loss(y, y[:1], x, None)


def _tiny_weights(tmp_path, use_segments=True, motion_estimation=None):
    torch.manual_seed(0)
    model = SBPMAC(SBPMACConfig(**{**TINY_MODEL, "use_segments": use_segments}))
    with torch.no_grad():  # a non-trivial output layer, so the network changes the image
        model.out.weight.normal_(0, 0.05)
    scan = {**TINY.to_dict(), "motion_estimation": motion_estimation}
    return save_weights(tmp_path / "w.pt", model, meta={"config": {"data": {"scan": scan}}}), model


def test_correct_volume_pads_and_matches_slicewise_calls(tmp_path):
    path, _ = _tiny_weights(tmp_path)
    model = load_network(path)
    meta = model.meta
    rng = np.random.default_rng(0)
    seg = rng.random((4, 5, 18, 22), dtype=np.float32) * 0.005
    out = correct_volume(model, seg.sum(0), seg, batch_size=2)
    assert out.shape == (5, 18, 22) and meta["config"]["data"]["scan"]["filter"] == "hann"
    out_all = correct_volume(model, seg.sum(0), seg, batch_size=5)
    torch.testing.assert_close(out, out_all, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="K = 4"):
        correct_volume(model, seg.sum(0), seg[:3])


def test_stage_runs_end_to_end_on_a_tiny_scan(tmp_path):
    path, _ = _tiny_weights(tmp_path)
    geom = sample_geometry(TINY)
    vol = ellipsoid_head(TINY.grid, np.random.default_rng(0), 26.0)
    scan = cbct.project(vol, geom)
    state = PipelineState(geometry=geom, projections=scan, metadata={"id": "tiny"})
    out = sbp_mac_stage(state, weights=str(path), n_segments=4, batch_size=4, keep_fdk=True)
    assert out.volume.shape == TINY.volume_shape and out.volume.dtype == np.float32 and np.all(np.isfinite(out.volume))
    np.testing.assert_allclose(out.extras["fdk"], cbct.fdk(scan, geom, filter="hann"), atol=1e-5 * float(np.abs(vol).max()))
    assert not np.allclose(out.volume, out.extras["fdk"])  # the network did something
    assert out.extras["sbp_mac"]["n_segments"] == 4 and state.volume is None  # the input state is untouched
    # views given in reverse order are put back in angular order first
    rev = sbp_mac_stage(PipelineState(geometry=geom[::-1], projections=scan[::-1].copy()), weights=str(path), n_segments=4)
    np.testing.assert_allclose(rev.volume, out.volume, atol=1e-5)
    with pytest.raises(ValueError, match="n_segments"):
        sbp_mac_stage(state, weights=str(path), n_segments=8)
    with pytest.raises(TypeError, match="colour"):
        sbp_mac_stage(state, weights=str(path), n_segments=4, colour="red")


def test_training_cli_runs_and_resumes_exactly(tmp_path):
    from cbct.sbp_mac import train

    config = {
        "seed": 3,
        "data": {
            "cache_dir": str(tmp_path / "cache"),
            "scan": {**json.loads(json.dumps(TINY.to_dict()))},
            "train": {"sources": ["ellipsoids"], "waveforms": ["jerk", "drift"], "n": 2, "seed": 10},
            "val": {"sources": ["ellipsoids"], "waveforms": ["nodding"], "n": 1, "seed": 20},
        },
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_MODEL.items() if k != "n_segments"},
        "train": {"steps": 4, "batch": 2, "crop": 16, "log_every": 1, "val_every": 4, "checkpoint_every": 2, "warmup": 1},
    }
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(json.dumps(config))  # JSON is YAML
    assert train.main(["--config", str(cfg_path), "--out", str(tmp_path / "a")]) == 0
    model_a = load_network(tmp_path / "a" / "model.pt")
    meta = model_a.meta
    assert meta["steps"] == 4 and np.isfinite(meta["val"]["psnr"])
    log_lines = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_lines if "total" in r] == [1, 2, 3, 4] and any("val_psnr" in r for r in log_lines)
    # the shared loop's checkpoint (cbct.learned.loop), as BBC's (tests/test_learned.py)
    assert set(torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)) == {
        "identity", "model", "optimizer", "scaler", "numpy_rng", "torch_rng", "step", "seconds", "history"}
    # stop after 2 steps, then resume to 4: the same weights as the uninterrupted run
    assert train.main(["--config", str(cfg_path), "--out", str(tmp_path / "b"), "--stop-after", "3"]) == 0
    assert not (tmp_path / "b" / "model.pt").exists()
    assert train.main(["--config", str(cfg_path), "--out", str(tmp_path / "b")]) == 0
    model_b = load_network(tmp_path / "b" / "model.pt")
    for (name, pa), pb in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)
    assert train.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    with pytest.raises(ValueError, match="another config"):  # a checkpoint of another config is not resumed
        train.train(train.load_config(cfg_path, [f"out_dir={tmp_path / 'b'}", "train.lr=0.5"]))


def test_shipped_weights_are_refused_by_the_in_grid_evaluation():
    """The shipped weights were trained on truncated scans (tests/test_motion_eval.py checks them): the in-grid
    held-out set of ``cbct eval sbp-mac`` refuses them with a pointer to ``cbct eval motion``."""
    from cbct.sbp_mac.evaluate import eval_specs, evaluate

    assert SHIPPED.stat().st_size < 5 * 2**20
    with pytest.raises(ValueError, match="cbct eval motion"):
        evaluate({"SBP-MAC": None}, scan=TINY, specs=eval_specs(sources=("ellipsoids",), waveforms=("jerk",)))


def test_evaluation_table_on_tiny_held_out_scans(tmp_path):
    from cbct.sbp_mac.evaluate import eval_specs, evaluate, format_table

    path, _ = _tiny_weights(tmp_path)
    (tmp_path / "u").mkdir()
    unet_path, _ = _tiny_weights(tmp_path / "u", use_segments=False)
    specs = eval_specs(sources=("ellipsoids",), waveforms=("tilting", "jerk"))
    assert [s.seed for s in specs] == [9000, 9001] and specs[0].waveform == "tilting"
    result = evaluate({"plain U-Net": str(unet_path), "SBP-MAC": str(path)}, scan=TINY, specs=specs, cache_dir=str(tmp_path / "c"))
    assert [r["method"] for r in result["rows"]] == ["FDK", "plain U-Net", "SBP-MAC"] * 2
    fdk_rows = [r for r in result["rows"] if r["method"] == "FDK"]
    assert all(10 < r["psnr"] < 80 and 0 < r["ssim"] <= 1 for r in fdk_rows)
    table = format_table(result)
    assert "| all held-out scans | 2 | SBP-MAC |" in table and "held-out waveform (tilting)" in table


def test_true_displacement_fields_realign_the_segments():
    """Warping each segment by the true in-plane displacement of its mean pose moves it towards the reference."""
    from cbct.sbp_mac.data import displacement_field, segment_motion
    from cbct.sbp_mac.model import warp

    cfg = InGridScanConfig(volume_shape=(8, 48, 48), n_views=64, n_segments=4, i0=(1e7, 1e7),
                     motion={"max_rotation_deg": 0.5, "max_translation_mm": 3.0})
    spec = SampleSpec("ellipsoids", 11, "jerk")
    s = simulate_sample(spec, cfg)
    w, t, pivot = segment_motion(spec, cfg)
    assert w.shape == t.shape == (4, 3) and np.abs(t).max() > 0.5
    z = 4
    flow = torch.from_numpy(displacement_field(w, t, pivot, cfg.grid, z, slice(None), slice(None)))
    assert flow.shape == (4, 2, 48, 48)
    # a pure-translation check of the field itself: with w = 0 the field is t / voxel everywhere
    flat = displacement_field(np.zeros((1, 3)), np.array([[1.0, -2.0, 0.5]]), pivot, cfg.grid, z, slice(None), slice(None))
    np.testing.assert_allclose(flat[0, 0], 1.0) and np.testing.assert_allclose(flat[0, 1], -2.0)
    seg = torch.from_numpy(s.segments[:, z][:, None] * 4)
    ref = torch.from_numpy(s.reference[z])
    aligned = warp(seg, flow).mean(dim=0)[0]
    wrong = warp(seg, -flow).mean(dim=0)[0]
    err_fdk = float((torch.from_numpy(s.fdk[z]) - ref).abs().mean())
    assert float((aligned - ref).abs().mean()) < 0.8 * err_fdk < float((wrong - ref).abs().mean())


TINY_ESTIMATION = {"groups": [4, 8], "iterations": 3, "binning": 1}


def test_motion_compensated_sample_keeps_the_uncorrected_fdk():
    spec = SampleSpec("ellipsoids", 3, "jerk")
    plain = simulate_sample(spec, TINY)
    est_cfg = dataclasses.replace(TINY, motion_estimation=TINY_ESTIMATION)
    s = simulate_sample(spec, est_cfg)
    assert est_cfg.motion_estimation["groups"] == [4, 8] and est_cfg.motion_estimation["prior"] > 0  # defaults filled
    np.testing.assert_array_equal(s.fdk_uncorrected, plain.fdk)
    np.testing.assert_array_equal(plain.fdk_uncorrected, plain.fdk)
    np.testing.assert_allclose(s.segments.sum(axis=0), s.fdk, atol=1e-6)
    np.testing.assert_array_equal(s.reference, plain.reference)
    assert s.meta["motion_estimation_seconds"] > 0

    def rmse(x):
        return float(np.sqrt(np.mean((x - s.reference) ** 2)))

    assert rmse(s.fdk) < 0.8 * rmse(s.fdk_uncorrected), (rmse(s.fdk), rmse(s.fdk_uncorrected))
    with pytest.raises(ValueError, match="unknown motion estimation keys"):
        dataclasses.replace(TINY, motion_estimation={"rounds": 3})


def test_stage_estimates_motion_when_the_weights_were_trained_on_compensated_scans(tmp_path):
    from cbct.simulation.motion import RigidMotion

    path, _ = _tiny_weights(tmp_path, motion_estimation=TINY_ESTIMATION)
    geom = sample_geometry(TINY)
    vol = ellipsoid_head(TINY.grid, np.random.default_rng(0), 26.0)
    scan = cbct.project(vol, geom)
    out = sbp_mac_stage(PipelineState(geometry=geom, projections=scan), weights=str(path), n_segments=4, keep_fdk=True)
    motion = out.extras["sbp_mac"]["motion"]
    assert isinstance(motion, RigidMotion) and motion.n_views == geom.n_views
    np.testing.assert_allclose(out.extras["fdk"], cbct.fdk(scan, motion.apply(geom), filter="hann"), atol=1e-5 * float(vol.max()))
    plain = sbp_mac_stage(PipelineState(geometry=geom, projections=scan), weights=str(path), n_segments=4, estimate_motion=False)
    assert plain.extras["sbp_mac"]["motion"] is None


def test_evaluation_of_compensated_weights_adds_the_compensated_fdk_row(tmp_path):
    from cbct.sbp_mac.evaluate import eval_specs, evaluate

    path, _ = _tiny_weights(tmp_path, motion_estimation=TINY_ESTIMATION)
    (tmp_path / "u").mkdir()
    plain_path, _ = _tiny_weights(tmp_path / "u", use_segments=False)
    specs = eval_specs(sources=("ellipsoids",), waveforms=("jerk",))
    scan = dataclasses.replace(TINY, motion_estimation=TINY_ESTIMATION)
    result = evaluate({"SBP-MAC": str(path)}, scan=scan, specs=specs, cache_dir=str(tmp_path / "c"))
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["FDK", "FDK, estimated motion compensated", "SBP-MAC"]
    assert rows["FDK, estimated motion compensated"]["psnr"] > rows["FDK"]["psnr"]
    # a plain U-Net trained without motion estimation is evaluated on the uncorrected FDK image; the scan settings
    # come from the segment-based weights whatever the order
    both = evaluate({"U-Net on FDK": str(plain_path), "SBP-MAC": str(path)}, specs=specs, cache_dir=str(tmp_path / "c"))
    assert both["scan"]["motion_estimation"] == scan.motion_estimation
    unet = [r for r in both["rows"] if r["method"] == "U-Net on FDK"][0]
    plain_model = load_network(plain_path)
    split = sbp_data.cached_split(specs, InGridScanConfig.from_dict(both["scan"]), str(tmp_path / "c"), "eval", augment=False)
    image = correct_volume(plain_model, split.fdk_uncorrected[0].astype(np.float32), None).numpy()
    mask = fov_disc(scan.volume_shape, min(scan.volume_shape[1:]) / 2 - scan.fov_margin_mm / scan.voxel_size)
    assert unet["psnr"] == pytest.approx(volume_metrics(image, split.reference[0].astype(np.float32), mask)["psnr"], abs=1e-6)
    # segment-based weights trained without motion estimation cannot be fed compensated segments
    (tmp_path / "s").mkdir()
    seg_plain, _ = _tiny_weights(tmp_path / "s")
    with pytest.raises(ValueError, match="motion_estimation"):
        evaluate({"old": str(seg_plain)}, scan=scan, specs=specs, cache_dir=str(tmp_path / "c"))


def test_scan_configs_share_scanner_and_motion_bounds():
    from cbct.sbp_mac.heldout import HeldOutConfig
    from cbct.sbp_mac.scan_base import MotionBounds
    from cbct.sbp_mac.truncated import TruncatedScanConfig

    # a partial mapping changes only what it names of the class's own default bounds
    cfg = TruncatedScanConfig.from_dict({"motion": {"max_rotation_deg": 1.5}})
    assert cfg.motion == MotionBounds(1.5, 1.0, 0.1, (0.0, 60.0, -40.0))
    # the flat keys of older configs and weights files are still read
    assert InGridScanConfig.from_dict({"max_translation_mm": 3.0, "pivot": [1, 2, 3]}).motion == MotionBounds(2.0, 3.0, 0.25, (1.0, 2.0, 3.0))
    assert HeldOutConfig().motion.min_motion_fraction == 0.5 and HeldOutConfig().n_views == 180
    with pytest.raises(ValueError, match="unknown motion keys"):
        InGridScanConfig.from_dict({"motion": {"max_rot": 1.0}})
    with pytest.raises(ValueError, match="min_motion_fraction"):
        MotionBounds(min_motion_fraction=1.5)
    # the draw is the one sample_motion_parameters makes with the same bounds
    bounds = TINY.motion
    drawn = bounds.draw("jerk", np.random.default_rng(4), reference="mean")
    direct = sample_motion_parameters(waveform="jerk", max_rotation_deg=bounds.max_rotation_deg,
                                      max_translation_mm=bounds.max_translation_mm,
                                      min_fraction=bounds.min_motion_fraction, pivot=bounds.pivot, reference="mean",
                                      rng=np.random.default_rng(4))
    assert drawn == direct
