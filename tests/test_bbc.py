"""BBC-Recon: warping, the completion network's boundary cases, wrap-around, training, shipped weights, stages."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

import cbct  # noqa: E402
from cbct.angles import plan_completion  # noqa: E402
from cbct.bbc.inference import complete_views, measure_throughput  # noqa: E402
from cbct.bbc.model import FlowCompletionConfig, FlowCompletionNet, backward_warp  # noqa: E402
from cbct.bbc.restoration import RestorationConfig, RestorationNet, restore_volume  # noqa: E402
from cbct.bbc.weights import DEFAULT_COMPLETION, DEFAULT_RESTORATION, load_completion, load_restoration  # noqa: E402
from cbct.learned.weights import save_weights  # noqa: E402
from cbct.phantoms import line_integrals, shepp_logan  # noqa: E402
from cbct.pipeline.state import PipelineState  # noqa: E402
from cbct.simulation.sparse import sparse_views  # noqa: E402

TINY = FlowCompletionConfig(channels=(8, 8, 16), corr_levels=2, corr_radius=2, hidden=16, iters=2, refine_channels=8)


def _smooth_image(h: int, w: int, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = x + dx, y + dy
    return (1.5 + np.sin(x / 5.0) * np.cos(y / 7.0) + 0.5 * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / 60.0)).astype(np.float32)


def test_backward_warp_reproduces_known_shift():
    h, w, dx, dy = 40, 56, 2.3, -1.6
    img = torch.from_numpy(_smooth_image(h, w))[None, None]
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    warped = backward_warp(img, flow)[0, 0].numpy()
    expected = _smooth_image(h, w, dx, dy)  # out(p) = img(p + flow)
    inner = (slice(4, h - 4), slice(4, w - 4))
    assert np.abs(warped[inner] - expected[inner]).max() < 0.02  # bilinear interpolation error of a smooth image
    # an integer shift is exact
    flow[:, 0], flow[:, 1] = 3.0, -2.0
    warped = backward_warp(img, flow)[0, 0].numpy()
    np.testing.assert_allclose(warped[4:-4, 4:-4], img[0, 0].numpy()[2:-6, 7:-1], atol=1e-5)
    with pytest.raises(ValueError, match="flow"):
        backward_warp(img, flow[:, :1])


@pytest.mark.parametrize("net", ["random", "shipped"])
def test_t0_and_t1_return_the_neighbours(net):
    torch.manual_seed(0)
    model = FlowCompletionNet(TINY) if net == "random" else load_completion()
    if net == "random":  # make the heads non-trivial so that the test does not pass by the zero initialisation
        with torch.no_grad():
            model.fusion.out.weight.normal_(0, 0.5)
            model.update.head[-1].weight.normal_(0, 0.5)
    a = torch.from_numpy(_smooth_image(30, 44))[None, None].repeat(2, 1, 1, 1)
    b = torch.from_numpy(_smooth_image(30, 44, dx=3.0))[None, None].repeat(2, 1, 1, 1)
    with torch.no_grad():
        out0 = model(a, b, torch.zeros(2))["view"]
        out1 = model(a, b, torch.ones(2))["view"]
        mid = model(a, b, torch.full((2,), 0.5))["view"]
    np.testing.assert_allclose(out0.numpy(), a.numpy(), atol=1e-4)
    np.testing.assert_allclose(out1.numpy(), b.numpy(), atol=1e-4)
    assert out0.shape == a.shape  # padding to a multiple of 8 is undone
    assert not torch.allclose(mid, a, atol=1e-3) and not torch.allclose(mid, b, atol=1e-3)


def test_untrained_network_is_linear_interpolation():
    model = FlowCompletionNet(TINY)
    a = torch.rand(3, 1, 24, 32) + 1
    b = torch.rand(3, 1, 24, 32) + 1
    t = torch.tensor([0.25, 0.5, 0.875])
    with torch.no_grad():
        out = model(a, b, t)["view"]
    lin = (1 - t)[:, None, None, None] * a + t[:, None, None, None] * b
    assert torch.allclose(out, lin, atol=0.05)


def test_completion_wraps_around_full_circle(small_geometry):
    """Views after the last acquired one are synthesised from the last and the first view (one turn later)."""
    proj = line_integrals(shepp_logan(28.0), small_geometry)
    sp, sg, kept = sparse_views(proj, small_geometry, step=8)  # kept 0..88: view 89 lies in the wrap gap
    plan = plan_completion(sg, target=small_geometry)
    assert plan.prev[89] == len(kept) - 1 and plan.next[89] == 0 and plan.t[89] == pytest.approx(0.5)
    model = FlowCompletionNet(TINY)
    dense = complete_views(model, sp, plan)
    assert dense.shape == proj.shape and dense.dtype == np.float32
    assert np.array_equal(dense[kept], proj[kept])
    # an untrained network is close to linear interpolation, so view 89 lies near the mean of views 88 and 0
    np.testing.assert_allclose(dense[89], 0.5 * (proj[88] + proj[0]), atol=0.02 * proj.max())
    assert np.abs(dense[89] - proj[88]).mean() > 5 * np.abs(dense[89] - 0.5 * (proj[88] + proj[0])).mean()


def test_training_step_lowers_the_loss_on_a_fixed_batch():
    from cbct.bbc.train import completion_loss

    torch.manual_seed(0)
    model = FlowCompletionNet(TINY)
    h, w = 32, 32
    # a pair of views of a moving blob and the true view in the middle: linear interpolation ghosts, flow does not
    a = torch.from_numpy(_smooth_image(h, w, dx=-3))[None, None].repeat(4, 1, 1, 1)
    b = torch.from_numpy(_smooth_image(h, w, dx=3))[None, None].repeat(4, 1, 1, 1)
    y = torch.from_numpy(_smooth_image(h, w))[None, None].repeat(4, 1, 1, 1)
    t = torch.full((4,), 0.5)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = float(completion_loss(model, a, b, y, t)[0].detach())
    for _ in range(12):
        loss, _ = completion_loss(model, a, b, y, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(completion_loss(model, a, b, y, t)[0].detach())
    assert last < 0.8 * first


def test_shipped_completion_weights_load_and_are_trained():
    flow = load_completion()
    assert DEFAULT_COMPLETION.stat().st_size < 5e6
    assert flow.meta["steps"] >= 1000
    # trained, not initial: the completion net beat linear interpolation on its validation views at 8x
    val = flow.meta["validation"]
    assert val["psnr_net_gap8"] > val["psnr_linear_gap8"] + 0.5


def test_shipped_restoration_weights_load_and_are_trained():
    rest = load_restoration()
    assert DEFAULT_RESTORATION.stat().st_size < 5e6
    assert rest.meta["steps"] >= 1000
    # trained, not initial: it improved the validation reconstructions of network-completed scans
    assert rest.meta["validation"]["gain_db"] > 1.0


def test_weights_round_trip(tmp_path):
    model = FlowCompletionNet(TINY)
    path = save_weights(tmp_path / "f.pt", model, meta={"steps": 1})
    again = load_completion(path)
    assert again.config == TINY and again.meta["steps"] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    with pytest.raises(ValueError, match="bbc_restore"):
        load_restoration(path)
    with pytest.raises(FileNotFoundError):
        load_completion(tmp_path / "missing.pt")


def test_shipped_completion_beats_linear_on_a_tiny_scan():
    """Inference on the CPU with the shipped network on a small unseen scan (a Shepp-Logan head at 8x)."""
    geom = cbct.ConeGeometry.circular(dso=500.0, dsd=700.0, detector_shape=(48, 64), detector_pixel_size=4.3,
                                      volume_shape=(40, 64, 64), voxel_size=3.0, n_views=120)
    proj = line_integrals(shepp_logan(80.0), geom)
    sp, sg, kept = sparse_views(proj, geom, step=8)
    plan = plan_completion(sg, target=geom)
    dense = complete_views(load_completion(), sp, plan)
    lin = (1 - plan.t)[:, None, None] * sp[plan.prev] + plan.t[:, None, None] * sp[plan.next]
    miss = plan.missing
    err_net = np.mean((dense[miss] - proj[miss]) ** 2)
    err_lin = np.mean((lin[miss] - proj[miss]) ** 2)
    assert np.all(np.isfinite(dense)) and err_net < err_lin


def test_restoration_net_shapes_and_identity_start():
    net = RestorationNet(RestorationConfig(context=3, channels=4))
    vol = np.random.default_rng(0).random((5, 18, 22), dtype=np.float32) * 0.02
    out = restore_volume(net, vol, batch=2)
    assert out.shape == vol.shape and out.dtype == np.float32
    assert np.abs(out - vol).max() < 0.01 * 0.02 * 50  # near the identity at initialisation
    with pytest.raises(ValueError, match="context"):
        RestorationConfig(context=2)


def test_throughput_is_measured():
    res = measure_throughput(FlowCompletionNet(TINY), detector_shape=(16, 24), n_acquired=6, factor=4, repeats=1)
    assert res["views"] == 18 and res["views_per_s"] > 0 and res["pixels"] == 16 * 24


def _tiny_weights(tmp_path):
    flow = save_weights(tmp_path / "flow.pt", FlowCompletionNet(TINY))
    rest = save_weights(tmp_path / "restore.pt", RestorationNet(RestorationConfig(context=3, channels=4)))
    return str(flow), str(rest)


def test_stages_run_end_to_end(tmp_path, small_geometry):
    from cbct.bbc.stage import completion_stage, restoration_stage

    flow_w, rest_w = _tiny_weights(tmp_path)
    proj = line_integrals(shepp_logan(28.0), small_geometry)
    sp, sg, kept = sparse_views(proj, small_geometry, step=4)
    state = PipelineState(geometry=sg, projections=sp, metadata={"id": "tiny"})
    untouched = completion_stage(state, weights=flow_w)  # no stated target: the scan goes on as it is
    assert untouched.projections is sp and untouched.geometry is sg
    assert untouched.extras["bbc_completion"]["skipped"] == "no views to complete to"
    dense = completion_stage(state, weights=flow_w, factor=4)
    assert dense.geometry.n_views == small_geometry.n_views and dense.projections.shape == proj.shape
    np.testing.assert_allclose(dense.geometry.vectors, small_geometry.vectors, atol=1e-9)
    assert dense.extras["sparse_geometry"] == sg and dense.extras["bbc_completion"]["synthesised"] == 90 - len(kept)
    assert state.projections is sp and state.geometry == sg  # the input state is untouched
    # a sparse simulation that left the full geometry behind needs no factor
    dense2 = completion_stage(state.replace(extras={"full_geometry": small_geometry}), weights=flow_w)
    np.testing.assert_allclose(dense2.projections, dense.projections, atol=1e-5)
    recon = dense.replace(volume=cbct.fdk(dense.projections, dense.geometry))
    restored = restoration_stage(recon, weights=rest_w)
    assert restored.volume.shape == small_geometry.volume.shape and np.all(np.isfinite(restored.volume))
    assert "bbc_restoration" in restored.extras
    with pytest.raises(ValueError, match="volume"):
        restoration_stage(state, weights=rest_w)
    with pytest.raises(TypeError, match="bogus"):
        completion_stage(state, weights=flow_w, factor=4, bogus=1)


def test_completion_stage_completes_to_the_scan_target(tmp_path, small_geometry):
    """Any acquired pattern (uneven, random, with a hole) completes to exactly the angles the scan states."""
    from cbct.bbc.stage import completion_stage
    from cbct.simulation.sparse import sparse_scan, uneven_indices

    flow_w, _ = _tiny_weights(tmp_path)
    proj = line_integrals(shepp_logan(28.0), small_geometry)
    full = cbct.Scan.from_arrays(small_geometry, projections=proj, metadata={"id": "t"})
    deg = np.degrees(small_geometry.angles)
    patterns = {"uneven": uneven_indices(90, 4, rng=0),
                "random": np.sort(np.random.default_rng(0).choice(90, 12, replace=False)),
                "hole": np.flatnonzero((np.arange(90) % 4 == 0) & ~((deg >= 100) & (deg < 160)))}
    for name, keep in patterns.items():
        sparse = sparse_scan(full, keep=keep)
        dense = completion_stage(PipelineState.from_scan(sparse), weights=flow_w)
        assert dense.geometry.n_views == 90, name
        np.testing.assert_allclose(dense.geometry.vectors, small_geometry.vectors, atol=1e-9)
        np.testing.assert_array_equal(dense.projections[keep], proj[keep])
        assert dense.extras["bbc_completion"]["synthesised"] == 90 - keep.size
    # sparse_step is a shortcut for the target of an even pattern; a stated target wins over it
    sparse = cbct.Scan.from_arrays(small_geometry[::4], projections=proj[::4], metadata={"sparse_step": 4})
    assert completion_stage(PipelineState.from_scan(sparse), weights=flow_w).geometry.n_views == 90
    stated = PipelineState.from_scan(sparse_scan(full, keep=patterns["uneven"]))
    stated.metadata["sparse_step"] = 8
    assert completion_stage(stated, weights=flow_w).geometry.n_views == 90
    # a target that does not hold the acquired views cannot be reached
    bad = PipelineState.from_scan(sparse).replace(extras={"target_angles": small_geometry.angles[1::2]})
    with pytest.raises(ValueError, match=r"cannot complete scan .* to its target_angles: .* do not contain"):
        completion_stage(bad, weights=flow_w)


def test_evaluation_command_on_a_tiny_config(tmp_path):
    """``cbct eval bbc`` end to end on a tiny scan with tiny weights: the table has every method and factor."""
    import yaml

    from cbct.bbc.evaluate import main

    flow_w, rest_w = _tiny_weights(tmp_path)
    cfg = {
        "cache_dir": str(tmp_path / "cache"),
        "scan": {"detector_shape": [24, 32], "detector_pixel_size": 8.6, "volume_shape": [16, 32, 32],
                 "voxel_size": 6.0, "n_views": 48},
        "data": {"eval": [{"kind": "dental_ellipsoids", "seed_list": [1000]}]},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "eval"
    assert main(["--config", str(path), "--factors", "4", "8", "--iterative", "--out", str(out),
                 "--flow-weights", str(flow_w), "--restore-weights", str(rest_w)]) == 0
    text = (out / "table.md").read_text()
    for method in ("sparse FDK", "linear + FDK", "flow + FDK", "BBC-Recon", "OS-SART", "FISTA-TV"):
        assert text.count(f"| {method} |") == 2
    import json

    rows = json.loads((out / "results.json").read_text())["rows"]
    by = {(r["factor"], r["method"]): r for r in rows}
    # linear interpolation beats sparse FDK at 8x, as it must; the model-based methods improve on their FDK start
    assert by[(8, "linear + FDK")]["psnr"] > by[(8, "sparse FDK")]["psnr"]
    assert by[(8, "OS-SART")]["psnr"] > by[(8, "sparse FDK")]["psnr"]
    assert by[(8, "FISTA-TV")]["psnr"] > by[(8, "sparse FDK")]["psnr"]
