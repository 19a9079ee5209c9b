"""Issue 12, part 5: truncated training data, normalised inputs, the shipped weights and ``cbct eval motion``."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

import cbct
from cbct.sbp_mac.data import SampleSpec
from cbct.sbp_mac.inference import SHIPPED, correct_volume, load_network
from cbct.sbp_mac.model import SBPMAC, SBPMACConfig
from cbct.sbp_mac.truncated import TruncatedScanConfig, simulate_truncated_sample

HEAD = pathlib.Path(__file__).parent / "data" / "head.mha"
TINY = TruncatedScanConfig(volume_shape=(8, 32, 32), voxel_size=(1.6, 2.0), n_views=24, n_segments=4,
                           outer_half_width_mm=60.0, head_radius_mm=(45.0, 55.0), outer_voxel_factor=1.0)


def test_truncated_training_scans_overflow_the_grid_and_vary_in_scale():
    samples = [simulate_truncated_sample(SampleSpec("ellipsoids", seed, "jerk"), TINY) for seed in (1, 2, 3)]
    for s in samples:
        assert s.fdk.shape == s.reference.shape == TINY.volume_shape and s.segments.shape == (4, *TINY.volume_shape)
        np.testing.assert_allclose(s.segments.sum(axis=0), s.fdk, atol=1e-6)
        assert s.meta["outside_fraction"] > 0.3  # most of the head lies outside the reconstruction grid
        assert s.meta["edge_over_max_line_integral"] > 0.2  # the detector's edge columns do not reach air
        assert TINY.attenuation_scale[0] <= s.meta["attenuation_scale"] <= TINY.attenuation_scale[1]
        assert TINY.voxel_size[0] <= s.meta["voxel_size"] <= TINY.voxel_size[1]
    scales = [s.meta["attenuation_scale"] for s in samples]
    assert max(scales) - min(scales) > 0.05
    assert len({tuple(s.meta["detector_shape"]) for s in samples}) > 1  # detector widths vary
    # a pure function of the spec
    again = simulate_truncated_sample(SampleSpec("ellipsoids", 1, "jerk"), TINY)
    np.testing.assert_array_equal(again.fdk, samples[0].fdk)


def test_still_fraction_one_gives_still_scans_close_to_their_reference():
    cfg = TruncatedScanConfig(**{**TINY.to_dict(), "still_fraction": 1.0, "i0": (1e7, 1e7)})
    s = simulate_truncated_sample(SampleSpec("dental", 4, "drift"), cfg)
    assert s.meta["still"] and s.meta["max_translation_mm"] == 0.0
    err = np.abs(s.fdk - s.reference).mean()
    assert err < 0.05 * np.abs(s.reference).mean()  # only noise separates them


def test_normalised_network_is_invariant_to_the_attenuation_scale():
    torch.manual_seed(0)
    model = SBPMAC(SBPMACConfig(n_segments=4, channels=(8, 16), encoder_channels=(8, 16), segment_features=2, normalise=True))
    with torch.no_grad():  # non-trivial weights (the SFT heads start at zero)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(0)
    seg = rng.uniform(0, 0.01, (4, 6, 16, 16)).astype(np.float32)
    fdk = seg.sum(axis=0)
    out = correct_volume(model, fdk, seg).numpy()
    scaled = correct_volume(model, 2.5 * fdk, 2.5 * seg).numpy()
    np.testing.assert_allclose(scaled, 2.5 * out, rtol=1e-4, atol=1e-7)
    plain = SBPMAC(SBPMACConfig(**{**model.config.to_dict(), "normalise": False}))
    plain.load_state_dict(model.state_dict())
    assert not np.allclose(correct_volume(plain, 2.5 * fdk, 2.5 * seg).numpy(), 2.5 * correct_volume(plain, fdk, seg).numpy(), rtol=1e-3)


@pytest.mark.parametrize("name", ["sbp_mac.pt", "sbp_mac_unet.pt"])
def test_shipped_weights_load_and_run(name):
    model = load_network(SHIPPED.with_name(name))
    meta = model.meta
    assert model.config.normalise and meta["config"]["data"]["kind"] == "truncated"
    assert model.config.use_segments == (name == "sbp_mac.pt")
    rng = np.random.default_rng(1)
    seg = rng.uniform(0, 0.005, (model.config.n_segments, 3, 32, 32)).astype(np.float32)
    out = correct_volume(model, seg.sum(axis=0), seg if model.config.use_segments else None)
    assert out.shape == (3, 32, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["motion", "motion_sbp_mac"])
def test_motion_pipelines_return_a_volume_from_python(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    geom = cbct.ConeGeometry.circular(dso=300.0, dsd=450.0, detector_shape=(20, 40), detector_pixel_size=1.5,
                                      volume_shape=(8, 24, 24), voxel_size=1.0, n_views=64)
    vol = np.zeros(geom.volume.shape, np.float32)
    vol[2:6, 6:18, 6:18] = 0.02
    scan = cbct.Scan.from_arrays(geom, projections=cbct.project(vol, geom), metadata={"id": "still"})
    result = cbct.run_pipeline(name, scan)
    assert result.volume.shape == geom.volume.shape and np.isfinite(result.volume).all()
    assert list(tmp_path.iterdir()) == []


def test_eval_motion_runs_end_to_end_on_the_head_ct(tmp_path):
    from cbct.sbp_mac.evaluate_motion import COMPENSATED, main

    pipeline = tmp_path / "quick.yaml"
    pipeline.write_text(yaml.safe_dump({
        "name": "quick", "version": 1,
        "stages": [{"stage": "motion_compensation", "params": {"groups": [4, 4], "iterations": 2}},
                   {"stage": "fdk", "params": {"filter": "hann"}}],
    }))
    out = tmp_path / "out"
    code = main(["--sources", "head_mha", "--waveforms", "tilting", "still", "--shape", "8", "32", "32",
                 "--voxel-size", "2.5", "--views", "24", "--data-dir", str(HEAD.parent), "--pipeline", str(pipeline),
                 "--out", str(out)])
    assert code == 0
    table = (out / "table.md").read_text()
    assert "| tilting | 1 |" in table and "| **still** | 1 |" in table
    result = json.loads((out / "results.json").read_text())
    methods = {r["method"] for r in result["rows"]}
    assert methods == {"FDK", COMPENSATED, "plain U-Net", "SBP-MAC", f"pipeline {pipeline}"}
    assert all(np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 for r in result["rows"])
    by = {(r["waveform"], r["method"]): r for r in result["rows"]}
    # the truncated head: motion costs FDK PSNR; the pipeline's output equals compensated FDK (same estimate)
    assert by[("tilting", "FDK")]["psnr"] < by[("still", "FDK")]["psnr"] - 3
    for w in ("tilting", "still"):
        assert by[(w, f"pipeline {pipeline}")]["psnr"] == pytest.approx(by[(w, COMPENSATED)]["psnr"], abs=1e-3)
    still = by[("still", COMPENSATED)]
    if not still["moved"]:  # the gate kept the nominal geometry: bit for bit the FDK image
        assert still["psnr"] == by[("still", "FDK")]["psnr"]
    assert "pipeline_loss_still_db" in result["decision"] and "network_earns_place" in result["decision"]
