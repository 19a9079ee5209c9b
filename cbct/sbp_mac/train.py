"""``cbct train sbp-mac --config FILE``: train SBP-MAC (or the plain U-Net baseline) on cached simulated scans.

The config (YAML, over :data:`DEFAULTS`, loaded by :mod:`cbct.learned.config`: unknown keys refused, ``--set
section.key=value`` overrides) has the sections ``data`` (``cache_dir``; ``kind``: ``"inside"``, objects cut to lie
inside the grid, :mod:`cbct.sbp_mac.data`, or ``"truncated"``, anatomy larger than the field of view,
:mod:`cbct.sbp_mac.truncated`; ``scan``: its :class:`~cbct.sbp_mac.data.InGridScanConfig` or
:class:`~cbct.sbp_mac.truncated.TruncatedScanConfig`; ``train`` and ``val``: :class:`~cbct.sbp_mac.data.SplitConfig`),
``model`` (:class:`~cbct.sbp_mac.model.SBPMACConfig` without ``n_segments``, which comes from the scan), ``loss``
(:class:`~cbct.sbp_mac.loss.LossWeights`) and ``train`` (:class:`cbct.learned.loop.LoopSettings` plus ``crop`` and
``intensity_jitter``), plus ``seed``, ``device``, ``threads`` and ``out_dir``.

Training samples are random crops of axial slices (with their neighbours) of random training scans; the loss is
:func:`~cbct.sbp_mac.loss.sbp_mac_loss`. The loop is the one every learned stage uses (:mod:`cbct.learned.loop`:
seeded, resumable from ``out_dir/checkpoint.pt``, mixed precision on CUDA, validation metrics PSNR, SSIM and RMSE over
whole validation volumes, ``out_dir/log.jsonl``); the final weights go to ``out_dir/model.pt`` and the summary to
``out_dir/summary.json``; ``--ship`` also writes them over the shipped ``cbct/models/sbp_mac.pt`` (or
``sbp_mac_unet.pt`` for the U-Net).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cbct.learned import config as learned_config
from cbct.learned.cli import config_overrides, run_command, ship_weights, train_parser
from cbct.learned.device import describe_device, resolve_device
from cbct.learned.loop import LOOP_DEFAULTS, LoopSettings, run_training
from cbct.learned.weights import save_weights
from cbct.metrics import fov_disc
from cbct.sbp_mac.batches import SliceBatcher
from cbct.sbp_mac.data import InGridScanConfig, SplitArrays, SplitConfig, cached_split, split_specs
from cbct.sbp_mac.inference import SHIPPED, SHIPPED_UNET, correct_volume, volume_metrics
from cbct.sbp_mac.loss import LossWeights, sbp_mac_loss
from cbct.sbp_mac.model import SBPMAC, SBPMACConfig
from cbct.sbp_mac.truncated import TruncatedScanConfig, cached_truncated_split

log = logging.getLogger(__name__)

__all__ = ["DATA_KINDS", "DEFAULTS", "load_config", "main", "scan_config", "train"]

DATA_KINDS = ("inside", "truncated")

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",  # "auto": CUDA if available, else CPU
    "threads": 1,  # torch CPU threads
    "out_dir": "runs/sbp_mac",
    "data": {"kind": "inside", "cache_dir": ".cache/sbp_mac", "scan": {}, "train": {}, "val": {}},
    "model": {},
    "loss": {},
    "train": {
        **LOOP_DEFAULTS,
        "lr_floor": 0.02,
        "val_every": 500,
        "crop": 64,  # square crop of each slice, pixels (null: whole slices)
        "intensity_jitter": 0.0,  # each item's volumes times a factor in [1 - j, 1 + j] (FDK and SBP are linear)
    },
}


def load_config(path: str | pathlib.Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config from ``path`` (YAML) over :data:`DEFAULTS`, with ``section.key=value`` overrides."""
    return learned_config.load_config(DEFAULTS, path, overrides)


def scan_config(cfg: dict[str, Any]) -> InGridScanConfig | TruncatedScanConfig:
    """The scan settings of a config's ``data.scan``, of the kind ``data.kind`` names."""
    kind = cfg["data"].get("kind", "inside")
    if kind not in DATA_KINDS:
        raise ValueError(f"data.kind must be one of {DATA_KINDS}, got {kind!r}")
    cls = TruncatedScanConfig if kind == "truncated" else InGridScanConfig
    return cls.from_dict(cfg["data"]["scan"])


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


def validate(
    model: SBPMAC, split: SplitArrays, scan: InGridScanConfig | TruncatedScanConfig, device: torch.device, batch_size: int = 16
) -> dict[str, float]:
    """Mean PSNR/SSIM/RMSE of the corrected validation volumes against their references (inside the FOV)."""
    mask = fov_disc(scan.volume_shape, scan.fov_radius_voxels())
    rows = []
    for i in range(len(split)):
        fdk = split.fdk[i].astype(np.float32)
        seg = split.segments[i].astype(np.float32) if model.config.use_segments else None
        out = correct_volume(model, fdk, seg, batch_size=batch_size, device=device)
        rows.append(volume_metrics(out, split.reference[i].astype(np.float32), mask))
    model.train()
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def train(cfg: dict[str, Any], *, stop_after: int | None = None, resume: bool = True) -> dict[str, Any]:
    """Train as the config says; returns a summary (steps, seconds, device, final validation metrics, paths).

    ``stop_after``: leave after that many steps of this call with a checkpoint (a later call resumes), e.g. to
    train in time slices; the result is the same as one uninterrupted run.
    """
    tcfg = cfg["train"]
    out_dir = pathlib.Path(cfg["out_dir"])
    device = resolve_device(cfg["device"], threads=cfg["threads"])
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    scan = scan_config(cfg)
    mcfg = model_config(cfg)
    weights = LossWeights(**cfg["loss"])
    settings = LoopSettings.from_section(tcfg)
    t_data = time.perf_counter()
    train_split, val_split = load_splits(cfg)
    log.info("data: %d training and %d validation scans ready in %.1f s", len(train_split), len(val_split), time.perf_counter() - t_data)
    model = SBPMAC(mcfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    with_flow = mcfg.align_segments and weights.flow > 0
    batcher = SliceBatcher(
        train_split, mcfg, tcfg["crop"], scan=scan, with_flow=with_flow, intensity_jitter=float(tcfg["intensity_jitter"])
    )

    def loss_fn(rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        b = batcher.batch(rng, settings.batch, device)
        out = model(b["image"], b["segments"])
        centre = b["image"][:, mcfg.n_neighbours: mcfg.n_neighbours + 1]
        loss, parts = sbp_mac_loss(
            out.image.float(), b["target"], centre, None if out.artifact is None else out.artifact.float(), weights,
            aligned=None if out.aligned is None else out.aligned.float(),
            flow=out.flow.float() if with_flow else None, flow_target=b["flow"],
        )
        return loss, {k: v for k, v in parts.items() if k != "loss"}

    variant = "sbp_mac" if mcfg.use_segments else "unet"
    log.info("training %s (%d parameters) on %s for %d steps", variant, n_params, device, settings.steps)
    run = run_training(model, loss_fn, settings=settings, rng=np.random.default_rng(seed), device=device,
                       checkpoint=out_dir / "checkpoint.pt", identity=cfg, name=variant, resume=resume,
                       validate=lambda: validate(model, val_split, scan, device), stop_after=stop_after)
    if not run.finished:
        return {"stopped_at": run.step, "steps": run.steps, "train_seconds": run.seconds,
                "checkpoint": str(out_dir / "checkpoint.pt")}
    summary = {
        "variant": variant, "steps": run.steps, "train_seconds": run.seconds, "device": describe_device(device),
        "parameters": n_params, "train_scans": len(train_split), "val_scans": len(val_split), "val": run.validation,
        "loss": dataclasses.asdict(weights), "seed": seed, "config": cfg,
    }
    path = save_weights(out_dir / "model.pt", model, meta=summary)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("wrote %s (%.0f s of training)", path, run.seconds)
    return {**summary, "weights": str(path)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cbct train sbp-mac``."""
    p = train_parser("cbct train sbp-mac", "Train the SBP-MAC motion-artifact network (or its plain U-Net baseline).")
    p.add_argument("--variant", choices=("sbp_mac", "unet"), help="unet: the plain U-Net baseline on the FDK image")
    args = p.parse_args(argv)

    def body() -> int:
        overrides = config_overrides(args)
        if args.variant:
            overrides.append(f"model.use_segments={'true' if args.variant == 'sbp_mac' else 'false'}")
        summary = train(load_config(args.config, overrides), stop_after=args.stop_after, resume=not args.no_resume)
        if args.ship and "weights" in summary:
            ship_weights(pathlib.Path(summary["weights"]), SHIPPED if summary["variant"] == "sbp_mac" else SHIPPED_UNET)
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
        return 0

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
