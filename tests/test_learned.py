"""cbct.learned: the weights format, the config loader, the device, the training loop, and both learned stages
training, resuming and evaluating through them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from cbct.bbc.model import FlowCompletionConfig, FlowCompletionNet  # noqa: E402
from cbct.bbc.restoration import RestorationNet  # noqa: E402
from cbct.learned.config import load_config  # noqa: E402
from cbct.learned.device import resolve_device  # noqa: E402
from cbct.learned.loop import LoopSettings, lr_at  # noqa: E402
from cbct.learned.weights import WEIGHTS_VERSION, load_weights, save_weights  # noqa: E402
from cbct.pipeline.registry import check_stage_params  # noqa: E402
from cbct.schema import SchemaError  # noqa: E402
from cbct.sbp_mac.model import SBPMAC, SBPMACConfig  # noqa: E402

TINY_FLOW = {"channels": [8, 8, 16], "corr_levels": 2, "corr_radius": 2, "hidden": 16, "iters": 2, "refine_channels": 8}
DEFAULTS = {"seed": 0, "model": {}, "train": {"steps": 10, "lr": 1e-3}}


# ---------------------------------------------------------------------------------------------------- config
def test_config_merges_file_and_overrides_and_refuses_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {steps: 20}\nmodel: {anything: [1, 2]}\n")
    cfg = load_config(DEFAULTS, path, ["train.lr=0.5", "seed=3"])
    assert cfg == {"seed": 3, "model": {"anything": [1, 2]}, "train": {"steps": 20, "lr": 0.5}}
    assert DEFAULTS["train"]["steps"] == 10  # the defaults are not changed
    path.write_text("train: {stepz: 20}\n")
    with pytest.raises(ValueError, match=r"c\.yaml: unknown setting train\.'stepz'; expected one of \['lr', 'steps'\]"):
        load_config(DEFAULTS, path)
    with pytest.raises(ValueError, match=r"--set trian\.lr=1: unknown setting 'trian'"):
        load_config(DEFAULTS, None, ["trian.lr=1"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(DEFAULTS, None, ["train.lr"])
    with pytest.raises(ValueError, match="must be a mapping"):
        load_config(DEFAULTS, None, ["train=5"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(DEFAULTS, tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------------------------------- weights
def test_weights_round_trip_and_refusals(tmp_path):
    model = FlowCompletionNet(FlowCompletionConfig.from_dict(TINY_FLOW))
    path = save_weights(tmp_path / "w.pt", model, meta={"steps": np.int64(3), "note": "x"})
    blob = torch.load(path, weights_only=True)
    assert sorted(blob) == ["config", "kind", "meta", "state_dict", "version"] and blob["version"] == WEIGHTS_VERSION
    again = load_weights(path, FlowCompletionNet)
    assert again.config == model.config and again.meta == {"steps": 3, "note": "x"} and not again.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    with pytest.raises(ValueError, match="holds 'bbc_flow' weights, expected 'bbc_restore'"):
        load_weights(path, RestorationNet)
    torch.save({**blob, "version": WEIGHTS_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(ValueError, match="newer"):
        load_weights(tmp_path / "new.pt", FlowCompletionNet)
    (tmp_path / "junk.pt").write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match="junk.pt"):
        load_weights(tmp_path / "junk.pt", FlowCompletionNet)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_weights(tmp_path / "missing.pt", FlowCompletionNet)


def test_weights_of_the_earlier_sbp_mac_layout_still_load(tmp_path):
    model = SBPMAC(SBPMACConfig(n_segments=4, channels=(8, 16), encoder_channels=(8, 16), segment_features=2))
    legacy = {"format": "cbct.sbp_mac/1", "model_config": model.config.to_dict(), "state_dict": model.state_dict(),
              "meta": {"steps": 1}}
    torch.save(legacy, tmp_path / "old.pt")
    again = load_weights(tmp_path / "old.pt", SBPMAC)
    assert again.config == model.config and again.meta == {"steps": 1}


def test_device_resolution():
    assert resolve_device(None, np.zeros(2)).type == "cpu" and resolve_device("cpu").type == "cpu"
    assert resolve_device("cpu", threads=2).type == "cpu" and torch.get_num_threads() == 2  # the fixture restores it
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")


def test_learning_rate_warms_up_then_decays_to_its_floor():
    s = LoopSettings(steps=100, lr=1.0, warmup=10, lr_floor=0.05)
    assert lr_at(0, s) == pytest.approx(0.1) and lr_at(9, s) == pytest.approx(1.0)
    assert lr_at(10, s) == pytest.approx(1.0) and lr_at(99, s) == pytest.approx(0.05, abs=1e-3)
    assert all(lr_at(i, s) >= lr_at(i + 1, s) for i in range(10, 99))
    with pytest.raises(ValueError, match="steps"):
        LoopSettings(steps=0)


# ---------------------------------------------------------------------------------------------------- stages
def test_stage_parameters_are_checked_against_their_types():
    from cbct.bbc.stage import completion_stage
    from cbct.sbp_mac.stage import sbp_mac_stage

    check_stage_params(completion_stage, {"factor": 4, "full_circle": None, "pairs_per_batch": 2}, "p.yaml", "params")
    with pytest.raises(SchemaError, match=r"p.yaml: params.factor: 'four' is not a int \| None"):
        check_stage_params(completion_stage, {"factor": "four"}, "p.yaml", "params")
    with pytest.raises(SchemaError, match="params.bogus: unknown parameter"):
        check_stage_params(completion_stage, {"bogus": 1}, "p.yaml", "params")
    check_stage_params(sbp_mac_stage, {"pose": "mean", "motion_settings": {"gate_mm": 1.0}, "truncation": "on"}, "p", "params")
    with pytest.raises(SchemaError, match="params.keep_fdk"):
        check_stage_params(sbp_mac_stage, {"keep_fdk": "yes"}, "p", "params")
    with pytest.raises(SchemaError, match="params.n_segments"):
        check_stage_params(sbp_mac_stage, {"n_segments": 2.5}, "p", "params")


# ---------------------------------------------------------------------------------------------------- training
def _checkpoint_keys(path) -> set[str]:
    return set(torch.load(path, weights_only=True))


BBC_CONFIG = {
    "seed": 2, "device": "cpu", "threads": 1,
    "scan": {"detector_shape": [24, 32], "detector_pixel_size": 8.6, "volume_shape": [16, 32, 32], "voxel_size": 6.0,
             "n_views": 48},
    "data": {"train": [{"kind": "dental_ellipsoids", "seeds": [0, 2]}], "val": [{"kind": "dental_ellipsoids", "seeds": [500, 501]}],
             "eval": [{"kind": "dental_ellipsoids", "seed_list": [1000]}]},
    "completion": {"model": TINY_FLOW, "steps": 4, "batch": 2, "crop": [16, 16], "gap_range": [2, 4], "warmup": 1,
                   "log_every": 1, "val_every": 2, "checkpoint_every": 2},
    "restoration": {"model": {"context": 3, "channels": 4}, "steps": 3, "batch": 2, "crop": [16, 16], "warmup": 1,
                    "factors": [4, 8], "sequences": 1, "log_every": 1, "val_every": 3, "checkpoint_every": 2},
}


def test_bbc_trains_resumes_exactly_and_evaluates_through_the_shared_loop(tmp_path):
    from cbct.bbc import evaluate, train

    cfg = {**BBC_CONFIG, "cache_dir": str(tmp_path / "cache")}
    path = tmp_path / "bbc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert train.main(["--config", str(path), "--out", str(tmp_path / "a")]) == 0
    a = tmp_path / "a"
    flow_a = load_weights(a / "completion.pt", FlowCompletionNet)
    rest_a = load_weights(a / "restoration.pt", RestorationNet)
    assert flow_a.meta["steps"] == 4 and "psnr_net_gap8" in flow_a.meta["validation"]
    assert rest_a.meta["steps"] == 3 and np.isfinite(rest_a.meta["validation"]["gain_db"])
    log = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["name"] == "completion" and "loss" in r] == [1, 2, 3, 4]
    # the loop's checkpoint, the same for both stages (tests/test_sbp_mac.py checks SBP-MAC's)
    keys = {"identity", "model", "optimizer", "scaler", "numpy_rng", "torch_rng", "step", "seconds", "history"}
    assert _checkpoint_keys(a / "completion_ckpt.pt") == keys == _checkpoint_keys(a / "restoration_ckpt.pt")
    # stopped after 3 steps and resumed: the same completion weights as the uninterrupted run
    b = tmp_path / "b"
    assert train.main(["--config", str(path), "--out", str(b), "--stage", "completion", "--stop-after", "3"]) == 0
    assert not (b / "completion.pt").exists()
    assert train.main(["--config", str(path), "--out", str(b), "--stage", "completion"]) == 0
    flow_b = load_weights(b / "completion.pt", FlowCompletionNet)
    for (name, pa), pb in zip(flow_a.state_dict().items(), flow_b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)
    # another config on the same checkpoint is refused (status 2, one log line); unknown keys too
    assert train.main(["--config", str(path), "--out", str(b), "--stage", "completion", "--set", "completion.lr=0.5"]) == 2
    assert train.main(["--config", str(path), "--set", "completion.stepz=3"]) == 2
    # evaluated with the shared eval flags: --out is a folder with results.json and table.md
    out = tmp_path / "eval"
    assert evaluate.main(["--config", str(path), "--factors", "4", "--flow-weights", str(a / "completion.pt"),
                          "--restore-weights", str(a / "restoration.pt"), "--out", str(out), "--threads", "1"]) == 0
    assert "| BBC-Recon |" in (out / "table.md").read_text()
    assert {r["method"] for r in json.loads((out / "results.json").read_text())["rows"]} >= {"flow + FDK", "BBC-Recon"}


def test_training_never_writes_into_the_package_unless_shipped(tmp_path, monkeypatch):
    """``--ship`` is the only way trained weights reach ``cbct/models``: the copy goes to the shipped path."""
    from cbct.bbc import train

    shipped = []
    monkeypatch.setattr(train, "ship_weights", lambda trained, target: shipped.append((trained, target)))
    cfg = {**BBC_CONFIG, "cache_dir": str(tmp_path / "cache"), "out_dir": str(tmp_path / "run")}
    cfg["completion"] = {**cfg["completion"], "steps": 1, "val_every": 1}
    path = tmp_path / "bbc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert train.main(["--config", str(path), "--stage", "completion"]) == 0
    assert (tmp_path / "run" / "completion.pt").is_file() and shipped == []
    assert train.main(["--config", str(path), "--stage", "completion", "--ship", "--no-resume"]) == 0
    assert shipped == [(tmp_path / "run" / "completion.pt", train.DEFAULT_COMPLETION)]
