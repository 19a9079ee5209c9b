"""BBC-Recon on the RTK-projected held-out set; the completion's structural guarantee (linear interpolation when its
learned correction is zero) and the scale equivariance of completion and restoration."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
pytest.importorskip("itk")

from cbct.angles import plan_completion  # noqa: E402
from cbct.bbc.baselines import interpolate_linear  # noqa: E402
from cbct.bbc.heldout import Pattern, load_heldout_config, pattern_indices  # noqa: E402
from cbct.bbc.inference import complete_views  # noqa: E402
from cbct.bbc.model import FlowCompletionConfig, FlowCompletionNet  # noqa: E402
from cbct.bbc.restoration import RestorationConfig, RestorationNet, restore_volume  # noqa: E402
from cbct.bbc.weights import load_completion, load_restoration  # noqa: E402
from cbct.learned.weights import save_weights  # noqa: E402
from cbct.geometry import ConeGeometry  # noqa: E402

HEAD = pathlib.Path(__file__).parent / "data" / "head.mha"
TINY = FlowCompletionConfig(channels=(8, 8, 16), corr_levels=2, corr_radius=2, hidden=16, iters=2, refine_channels=8,
                            gate=True, residual=True, min_scale=1e-3)


def _sparse_scan(n_views: int = 48, step: int = 4) -> tuple[np.ndarray, object]:
    geom = ConeGeometry.circular(dso=500.0, dsd=700.0, detector_shape=(24, 32), detector_pixel_size=4.0,
                                 volume_shape=8, voxel_size=1.0, n_views=n_views)
    gen = np.random.default_rng(3)
    proj = (2.0 + gen.random((n_views // step, 24, 32))).astype(np.float32)
    return proj, plan_completion(geom[::step], target=geom)


def test_residual_completion_is_linear_when_its_correction_is_zero():
    """Whatever the flows, a fusion head that outputs zero gives linear interpolation exactly."""
    torch.manual_seed(0)
    net = FlowCompletionNet(TINY)
    with torch.no_grad():
        net.fusion.out.weight.zero_()
        net.fusion.out.bias.zero_()
    proj, plan = _sparse_scan()
    dense = complete_views(net, proj, plan)
    np.testing.assert_allclose(dense, interpolate_linear(proj, plan), rtol=1e-5, atol=1e-5)
    # a non-zero correction (here the residual channel) does move the output away from linear: the test can fail
    with torch.no_grad():
        net.fusion.out.bias[5] = 0.1
    assert np.abs(complete_views(net, proj, plan) - interpolate_linear(proj, plan)).max() > 1e-3


@pytest.mark.parametrize("c", [0.37, 2.5])
def test_completion_is_scale_equivariant(c):
    torch.manual_seed(1)
    net = FlowCompletionNet(TINY)
    proj, plan = _sparse_scan()
    one = complete_views(net, proj, plan)
    scaled = complete_views(net, np.float32(c) * proj, plan)
    np.testing.assert_allclose(scaled, c * one, rtol=1e-4, atol=1e-5 * c)


@pytest.mark.parametrize("c", [0.6, 1.5])
def test_restoration_is_scale_equivariant(c):
    torch.manual_seed(2)
    net = RestorationNet(RestorationConfig(context=3, channels=4, normalise="volume"))
    with torch.no_grad():  # a visible correction, so equivariance is not the identity's
        net.out.weight.mul_(100.0)
    vol = (np.random.default_rng(0).random((6, 20, 20)) * 0.03).astype(np.float32)
    one = restore_volume(net, vol, batch=4)
    assert np.abs(one - vol).max() > 1e-4
    np.testing.assert_allclose(restore_volume(net, np.float32(c) * vol, batch=4), c * one, rtol=1e-4, atol=1e-7)
    fixed = RestorationNet(RestorationConfig(context=3, channels=4))
    with pytest.raises(ValueError, match="scale must be given exactly"):
        fixed(torch.zeros(1, 3, 8, 8), torch.ones(1))


def test_shipped_weights_load_with_the_new_normalisation():
    """The shipped networks are the issue-13 ones: residual completion, scale-normalised restoration, trained, and
    never trained on the held-out anatomy."""
    flow, rest = load_completion(), load_restoration()
    assert flow.config.residual and flow.config.gate
    assert rest.config.normalise == "volume"
    assert flow.meta["steps"] > 0 and rest.meta["steps"] > 0
    assert not any(src["kind"] in ("tigre_head", "head_mha") for src in flow.meta["data"])


def test_patterns_keep_the_stated_views():
    every8 = pattern_indices(Pattern("8x", step=8), 360, seed=0)
    assert every8.size == 45 and np.all(np.diff(every8) == 8)
    holed = pattern_indices(Pattern("hole", step=8, hole_deg=32.0), 360, seed=0)
    gaps = np.diff(np.r_[holed, holed[0] + 360])
    assert 40 <= gaps.max() <= 48 and set(holed) <= set(every8) and holed.size in (40, 41)
    rnd = pattern_indices(Pattern("45 random", random=45), 360, seed=0)
    assert rnd.size == 45 and np.all(np.diff(rnd) > 0)
    with pytest.raises(ValueError, match="exactly one of step and random"):
        Pattern("bad", step=4, random=10)


def test_rtk_heldout_evaluation_end_to_end(tmp_path):
    """``cbct eval bbc --heldout rtk`` on head.mha (RTK-projected, wider than the tiny detector's field of view, two
    calibrations): the table holds every pattern and method; linear interpolation beats sparse FDK at 8x."""
    import yaml

    from cbct.bbc.evaluate import main

    flow = save_weights(tmp_path / "flow.pt", FlowCompletionNet(TINY))
    rest = save_weights(tmp_path / "restore.pt", RestorationNet(RestorationConfig(context=3, channels=4, normalise="volume")))
    held = {
        "scan": {"dso": 500.0, "dsd": 700.0, "detector_shape": [16, 20], "detector_pixel_size": 4.8,
                 "volume_shape": [10, 16, 16], "voxel_size": 6.0, "n_views": 48},
        "anatomy": [{"kind": "head_mha", "path": str(HEAD)}],
        "calibrations": [1.0, 1.5],
        "i0": 2.0e5,
        "patterns": [{"name": "8x", "step": 8}, {"name": "12 random", "random": 12},
                     {"name": "4x + 32° hole", "step": 4, "hole_deg": 32}],
    }
    hpath = tmp_path / "heldout.yaml"
    hpath.write_text(yaml.safe_dump(held, allow_unicode=True))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"cache_dir": str(tmp_path / "cache")}))
    assert load_heldout_config(hpath).scan.fov_radius() < 100.0  # the 205 mm head overflows the field of view
    out = tmp_path / "eval"
    assert main(["--config", str(cfg), "--heldout", "rtk", "--heldout-config", str(hpath),
                 "--flow-weights", str(flow), "--restore-weights", str(rest), "--out", str(out)]) == 0
    text = (out / "table.md").read_text()
    for pattern in ("8x", "12 random", "4x + 32° hole"):
        for method in ("sparse FDK", "linear + FDK", "flow + FDK", "BBC-Recon"):
            assert f"| {pattern} | all (2) | {method} |" in text
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["calibration"] for r in rows} == {1.0, 1.5}
    by = {(r["pattern"], r["calibration"], r["method"]): r for r in rows}
    for cal in (1.0, 1.5):
        assert by[("8x", cal, "linear + FDK")]["psnr"] > by[("8x", cal, "sparse FDK")]["psnr"]
        assert np.isfinite(by[("8x", cal, "flow + FDK")]["proj_psnr"])
