"""``cbct train sbp-mac --config FILE``: train SBP-MAC (or the plain U-Net baseline) on cached simulated scans.

The config (YAML) has the sections ``data`` (``cache_dir``; ``kind``: ``"inside"``, objects cut to lie inside the
grid, :mod:`cbct.sbp_mac.data`, or ``"truncated"``, anatomy larger than the field of view,
:mod:`cbct.sbp_mac.truncated`; ``scan``: its :class:`~cbct.sbp_mac.data.ScanConfig` or
:class:`~cbct.sbp_mac.truncated.TruncatedScanConfig`; ``train`` and ``val``: :class:`~cbct.sbp_mac.data.SplitConfig`), ``model`` (:class:`~cbct.sbp_mac.model.SBPMACConfig`
without ``n_segments``, which comes from the scan), ``loss`` (:class:`~cbct.sbp_mac.loss.LossWeights`) and ``train``
(see :data:`TRAIN_DEFAULTS`), plus ``seed`` and ``out_dir``. ``--set section.key=value`` overrides any entry.

Training samples are random crops of axial slices (with their neighbours) of random training scans; the loss is
:func:`~cbct.sbp_mac.loss.sbp_mac_loss`; AdamW with a cosine learning-rate decay; bfloat16 autocast on CUDA when
``train.amp``. Every ``checkpoint_every`` steps ``out_dir/checkpoint.pt`` holds the model, optimiser, scheduler,
step and random states, and a run started again on the same ``out_dir`` resumes from it (the batches it draws
afterwards are the ones an uninterrupted run would have drawn). Losses and validation metrics (PSNR, SSIM, RMSE over
whole validation volumes) are logged and appended to ``out_dir/log.jsonl``; the final weights go to
``out_dir/model.pt`` (the format of the shipped ``cbct/models/sbp_mac.pt``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import yaml

from cbct.sbp_mac.data import (
    ScanConfig,
    SplitArrays,
    SplitConfig,
    cached_split,
    split_specs,
)
from cbct.sbp_mac.inference import (
    correct_volume,
    fov_mask,
    save_weights,
    volume_metrics,
)
from cbct.sbp_mac.batches import SliceBatcher
from cbct.sbp_mac.loss import LossWeights, sbp_mac_loss
from cbct.sbp_mac.model import SBPMAC, SBPMACConfig
from cbct.sbp_mac.truncated import TruncatedScanConfig, cached_truncated_split

log = logging.getLogger(__name__)

__all__ = ["DATA_KINDS", "TRAIN_DEFAULTS", "SliceBatcher", "load_config", "main", "scan_config", "train"]

DATA_KINDS = ("inside", "truncated")

TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 3000,  # optimiser steps
    "batch_size": 8,  # slices per step
    "crop": 64,  # square crop of each slice, pixels (null: whole slices)
    "lr": 1e-3,  # AdamW peak learning rate (cosine decay to 2 % of it)
    "weight_decay": 1e-4,
    "warmup": 100,  # linear warm-up steps
    "log_every": 50,
    "val_every": 500,
    "checkpoint_every": 250,
    "threads": 1,  # torch CPU threads
    "device": "auto",  # "auto": CUDA if available, else CPU
    "amp": True,  # bfloat16 autocast on CUDA (ignored on the CPU)
    "grad_clip": 1.0,
    "intensity_jitter": 0.0,  # each item's volumes times a factor in [1 - j, 1 + j] (FDK and SBP are linear)
}


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | pathlib.Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config from ``path`` (YAML) over the defaults, with ``section.key=value`` overrides (values parsed as YAML)."""
    cfg: dict[str, Any] = {
        "seed": 0,
        "out_dir": "runs/sbp_mac",
        "data": {"kind": "inside", "cache_dir": ".cache/sbp_mac", "scan": {}, "train": {}, "val": {}},
        "model": {},
        "loss": {},
        "train": dict(TRAIN_DEFAULTS),
    }
    if path is not None:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config: no such file {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config: {path} must hold a mapping, got {type(loaded).__name__}")
        cfg = _deep_update(cfg, loaded)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise TypeError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    unknown = set(cfg["train"]) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"config: unknown train keys {sorted(unknown)}; expected some of {sorted(TRAIN_DEFAULTS)}")
    return cfg


def scan_config(cfg: dict[str, Any]) -> ScanConfig | TruncatedScanConfig:
    """The scan settings of a config's ``data.scan``, of the kind ``data.kind`` names."""
    kind = cfg["data"].get("kind", "inside")
    if kind not in DATA_KINDS:
        raise ValueError(f"data.kind must be one of {DATA_KINDS}, got {kind!r}")
    cls = TruncatedScanConfig if kind == "truncated" else ScanConfig
    return cls.from_dict(cfg["data"]["scan"])


def fov_radius_voxels(scan: ScanConfig | TruncatedScanConfig) -> float:
    """Radius in voxels of the disc the metrics are computed in."""
    if isinstance(scan, TruncatedScanConfig):
        return scan.fov_radius_voxels()
    return min(scan.volume_shape[1:]) / 2 - scan.fov_margin_mm / scan.voxel_size


def load_splits(cfg: dict[str, Any]) -> tuple[SplitArrays, SplitArrays]:
    """The training and validation splits of a config (simulated and cached on first use)."""
    scan, cache = scan_config(cfg), cfg["data"]["cache_dir"]
    out = []
    for name in ("train", "val"):
        specs = split_specs(SplitConfig.from_dict(cfg["data"][name], f"data.{name}"))
        if isinstance(scan, TruncatedScanConfig):
            out.append(cached_truncated_split(specs, scan, cache, name))
        else:
            out.append(cached_split(specs, scan, cache, name))
    return out[0], out[1]


def model_config(cfg: dict[str, Any]) -> SBPMACConfig:
    """The network architecture a config describes (K from the scan section)."""
    scan = scan_config(cfg)
    return SBPMACConfig.from_dict({**cfg["model"], "n_segments": scan.n_segments})


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _lr_lambda(steps: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))

    return f


def validate(
    model: SBPMAC, split: SplitArrays, scan: ScanConfig | TruncatedScanConfig, device: torch.device, batch_size: int = 16
) -> dict[str, float]:
    """Mean PSNR/SSIM/RMSE of the corrected validation volumes against their references (inside the FOV)."""
    mask = fov_mask(scan.volume_shape, fov_radius_voxels(scan))
    rows = []
    for i in range(len(split)):
        fdk = split.fdk[i].astype(np.float32)
        seg = split.segments[i].astype(np.float32) if model.cfg.use_segments else None
        out = correct_volume(model, fdk, seg, batch_size=batch_size, device=device)
        rows.append(volume_metrics(out, split.reference[i].astype(np.float32), mask))
    model.train()
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def train(cfg: dict[str, Any], *, stop_after: int | None = None) -> dict[str, Any]:
    """Train as the config says; returns a summary (steps, seconds, device, final validation metrics, paths).

    ``stop_after``: leave after that many steps of this call with a checkpoint (a later call resumes), e.g. to
    train in time slices; the result is the same as one uninterrupted run.
    """
    tcfg = cfg["train"]
    out_dir = pathlib.Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    device = _device(tcfg["device"])
    if device.type == "cpu":
        torch.set_num_threads(int(tcfg["threads"]))
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    scan = scan_config(cfg)
    mcfg = model_config(cfg)
    weights = LossWeights(**cfg["loss"])
    t_data = time.perf_counter()
    train_split, val_split = load_splits(cfg)
    log.info("data: %d training and %d validation scans ready in %.1f s", len(train_split), len(val_split), time.perf_counter() - t_data)

    model = SBPMAC(mcfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=float(tcfg["lr"]), weight_decay=float(tcfg["weight_decay"]))
    steps = int(tcfg["steps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, int(tcfg["warmup"])))
    rng = np.random.default_rng(seed)
    start, elapsed = 0, 0.0
    ckpt_path = out_dir / "checkpoint.pt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt.get("config") != cfg:
            raise ValueError(f"{ckpt_path} was written by another config; use another out_dir or remove it")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        log.info("resumed from %s at step %d", ckpt_path, start)
    with_flow = mcfg.align_segments and weights.flow > 0
    batcher = SliceBatcher(
        train_split, mcfg, tcfg["crop"], scan=scan, with_flow=with_flow, intensity_jitter=float(tcfg["intensity_jitter"])
    )
    use_amp = bool(tcfg["amp"]) and device.type == "cuda"
    log.info("training %s (%d parameters) on %s for %d steps", "SBP-MAC" if mcfg.use_segments else "plain U-Net", n_params, device, steps)
    logfile = (out_dir / "log.jsonl").open("a")
    model.train()
    running: dict[str, list[float]] = {}
    val: dict[str, float] = {}
    t0 = time.perf_counter() - elapsed
    last = steps if stop_after is None else min(steps, start + int(stop_after))
    for step in range(start, last):
        b = batcher.batch(rng, int(tcfg["batch_size"]), device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(b["image"], b["segments"])
        centre = b["image"][:, mcfg.n_neighbours: mcfg.n_neighbours + 1]
        loss, parts = sbp_mac_loss(
            out.image.float(), b["target"], centre, None if out.artifact is None else out.artifact.float(), weights,
            aligned=None if out.aligned is None else out.aligned.float(),
            flow=out.flow.float() if with_flow else None, flow_target=b["flow"],
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
        opt.step()
        sched.step()
        for k, v in parts.items():
            running.setdefault(k, []).append(v)
        done = step + 1
        if done % int(tcfg["log_every"]) == 0 or done == steps:
            means = {k: float(np.mean(v)) for k, v in running.items()}
            running = {}
            log.info("step %d/%d loss %s lr %.2e (%.0f s)", done, steps, " ".join(f"{k}={v:.4f}" for k, v in means.items()), sched.get_last_lr()[0], time.perf_counter() - t0)
            logfile.write(json.dumps({"step": done, "seconds": time.perf_counter() - t0, "lr": sched.get_last_lr()[0], **means}) + "\n")
            logfile.flush()
        if done % int(tcfg["val_every"]) == 0 or done == steps:
            val = validate(model, val_split, scan, device)
            log.info("step %d validation: PSNR %.2f dB, SSIM %.4f, RMSE %.2e", done, val["psnr"], val["ssim"], val["rmse"])
            logfile.write(json.dumps({"step": done, "seconds": time.perf_counter() - t0, **{f"val_{k}": v for k, v in val.items()}}) + "\n")
            logfile.flush()
        if done % int(tcfg["checkpoint_every"]) == 0 or done in (steps, last):
            torch.save({
                "config": cfg, "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": done,
                "elapsed": time.perf_counter() - t0,
            }, ckpt_path)
    logfile.close()
    seconds = time.perf_counter() - t0
    if last < steps:
        log.info("stopped at step %d of %d after %.0f s; run again to resume", last, steps, seconds)
        return {"stopped_at": last, "steps": steps, "train_seconds": seconds, "checkpoint": str(ckpt_path)}
    if not val and start >= steps:
        val = validate(model, val_split, scan, device)
    summary = {
        "variant": "sbp_mac" if mcfg.use_segments else "unet",
        "steps": steps,
        "train_seconds": seconds,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "parameters": n_params,
        "train_scans": len(train_split),
        "val_scans": len(val_split),
        "val": val,
        "loss": dataclasses.asdict(weights),
        "seed": seed,
        "config": cfg,
    }
    path = save_weights(model, out_dir / "model.pt", meta=summary)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("wrote %s (%.0f s of training)", path, seconds)
    return {**summary, "weights": str(path)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cbct train sbp-mac``."""
    parser = argparse.ArgumentParser(prog="cbct train sbp-mac", description="Train the SBP-MAC motion-artifact network.")
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/sbp_mac_cpu.yaml")
    parser.add_argument("--out", help="output folder (overrides out_dir); a checkpoint there is resumed")
    parser.add_argument("--variant", choices=("sbp_mac", "unet"), help="unet: the plain U-Net baseline on the FDK image")
    parser.add_argument("--stop-after", type=int, metavar="N", help="stop after N steps of this run (resume later)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry, e.g. loss.artifact=0")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = list(args.set)
    if args.out:
        overrides.append(f"out_dir={args.out}")
    if args.variant:
        overrides.append(f"model.use_segments={'true' if args.variant == 'sbp_mac' else 'false'}")
    try:
        cfg = load_config(args.config, overrides)
        summary = train(cfg, stop_after=args.stop_after)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
