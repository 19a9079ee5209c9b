"""``cbct eval sbp-mac``: held-out evaluation of SBP-MAC against uncorrected FDK and a plain U-Net.

The held-out set is disjoint from training in three ways: phantom seeds (training uses seeds from 1000, this set
from 9000), anatomy (the real CT head ``head_mha`` is never trained on) and motion (the ``tilting`` waveform, and
mixtures that contain it, are never trained on). By default it has one scan of every waveform
(jerk, drift, nodding, tilting, tremor, mixed) for each of the dental phantom and the real CT head, simulated with
the scan settings the weights were trained with, except the motion amplitudes, which are always drawn between 10 %
and 100 % of the bounds.

When the weights were trained on motion-compensated scans (``data.scan.motion_estimation``), the networks get the
compensated FDK image and segments, and the table has one more row: that compensated FDK image alone. A plain U-Net
trained without motion estimation gets the uncorrected FDK image (the issue's baseline: a U-Net on the FDK image).

Metrics are computed inside the reconstructed field of view (the cylinder the objects are cut to), against the
motion-free noise-free FDK reference: PSNR (dB, data range = the reference's range), SSIM (2D per axial slice,
same data range) and RMSE (mm⁻¹). The table gives the mean over the scans of each group: all, per source, the
held-out waveform, and scans whose largest displacement of a point of the field of view is at least / below 1.5 mm.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cbct.learned.cli import eval_parser, markdown_table, run_command, write_results
from cbct.learned.device import resolve_device
from cbct.metrics import fov_disc
from cbct.motion_estimation import MotionEstimationConfig
from cbct.sbp_mac.data import SampleSpec, InGridScanConfig, cached_split
from cbct.sbp_mac.inference import correct_volume, load_network, volume_metrics
from cbct.simulation.motion import COMPONENT_KINDS

log = logging.getLogger(__name__)

__all__ = ["EVAL_SOURCES", "EVAL_WAVEFORMS", "eval_specs", "evaluate", "format_table", "main"]

EVAL_SOURCES = ("dental", "head_mha")
EVAL_WAVEFORMS = ("jerk", "drift", "nodding", "tilting", "tremor", "mixed")
HELD_OUT_WAVEFORMS = ("tilting",)
EVAL_MIN_MOTION_FRACTION = 0.1  # fixed protocol: motion amplitudes 10-100 % of the bounds, whatever training used
LARGE_MOTION_MM = 1.5
MOTION_COMPENSATED_FDK = "FDK, estimated motion compensated"  # table split: largest displacement of a point of the field of view during the scan


def eval_specs(sources: Sequence[str] = EVAL_SOURCES, waveforms: Sequence[str] = EVAL_WAVEFORMS, repeats: int = 1, seed: int = 9000) -> list[SampleSpec]:
    """The held-out scans: every source × waveform, ``repeats`` times, seeds from ``seed`` (mixtures draw from
    all component kinds, tilting included)."""
    specs = []
    i = 0
    for source in sources:
        for waveform in waveforms:
            for _ in range(repeats):
                specs.append(SampleSpec(source, seed + i, waveform, COMPONENT_KINDS))
                i += 1
    return specs


def evaluate(
    methods: dict[str, str | None],
    *,
    scan: InGridScanConfig | None = None,
    specs: Sequence[SampleSpec] | None = None,
    cache_dir: str = ".cache/sbp_mac",
    device: str = "cpu",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Metrics of uncorrected FDK and of each network in ``methods`` (name -> weights path; ``None``: shipped).

    Returns ``{"rows": [per scan and method], "scan": ..., "seconds": ...}``.
    """
    models = {name: load_network(path, device=device) for name, path in methods.items()}
    for name, model in models.items():
        if model.meta.get("config", {}).get("data", {}).get("kind") == "truncated":
            raise ValueError(f"{name}: these weights were trained on truncated scans of anatomy larger than the field of "
                             "view; evaluate them with `cbct eval motion` (this set holds objects inside the grid)")
    if scan is None:
        # the scans of the segment-based weights (a plain U-Net may have been trained on uncorrected scans)
        metas = [m.meta for m in sorted(models.values(), key=lambda m: not m.config.use_segments) if "config" in m.meta]
        if not metas:
            raise ValueError("no scan settings: give scan=... or weights whose meta holds their training config")
        scan = InGridScanConfig.from_dict(metas[0]["config"]["data"]["scan"])
        scan = dataclasses.replace(scan, motion=dataclasses.replace(scan.motion, min_motion_fraction=EVAL_MIN_MOTION_FRACTION))
    on_uncorrected: set[str] = set()  # networks trained on the FDK image of the nominal geometry
    for name, model in models.items():
        meta = model.meta
        if model.config.n_segments != scan.n_segments:
            raise ValueError(f"{name}: weights use K = {model.config.n_segments}, the scans K = {scan.n_segments}")
        trained = meta.get("config", {}).get("data", {}).get("scan", {}).get("motion_estimation")
        if trained is not None:
            trained = MotionEstimationConfig.from_dict(trained).to_dict()
        if "config" not in meta or trained == scan.motion_estimation:
            continue
        if trained is None and not model.config.use_segments:
            on_uncorrected.add(name)
            continue
        raise ValueError(
            f"{name}: weights were trained on scans with motion_estimation={trained}, the held-out scans use "
            f"{scan.motion_estimation}; evaluate weights trained on the same kind of input together (a plain U-Net "
            "trained without motion estimation is the one exception: it gets the uncorrected FDK image)"
        )
    specs = list(specs) if specs is not None else eval_specs()
    t0 = time.perf_counter()
    split = cached_split(specs, scan, cache_dir, "eval", augment=False)
    mask = fov_disc(scan.volume_shape, scan.fov_radius_voxels())
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for i, spec in enumerate(specs):
        fdk = split.fdk[i].astype(np.float32)
        seg = split.segments[i].astype(np.float32)
        ref = split.reference[i].astype(np.float32)
        base = {"source": spec.source, "waveform": spec.waveform, "seed": spec.seed,
                "max_displacement_mm": split.meta[i]["max_displacement_mm"]}
        rows.append({**base, "method": "FDK", **volume_metrics(split.fdk_uncorrected[i].astype(np.float32), ref, mask)})
        if scan.motion_estimation is not None:
            rows.append({**base, "method": MOTION_COMPENSATED_FDK, **volume_metrics(fdk, ref, mask)})
        for name, model in models.items():
            t = time.perf_counter()
            image = split.fdk_uncorrected[i].astype(np.float32) if name in on_uncorrected else fdk
            out = correct_volume(model, image, seg if model.config.use_segments else None, batch_size=batch_size, device=device)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
            rows.append({**base, "method": name, **volume_metrics(out, ref, mask)})
    return {"rows": rows, "scan": scan.to_dict(), "n_scans": len(specs), "seconds": time.perf_counter() - t0,
            "network_seconds": timings, "device": device}


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    sources = sorted({r["source"] for r in rows})
    groups = [("all held-out scans", rows)]
    for s in sources:
        groups.append((f"{s}", [r for r in rows if r["source"] == s]))
    held = [r for r in rows if r["waveform"] in HELD_OUT_WAVEFORMS]
    if held:
        groups.append(("held-out waveform (tilting)", held))
    big = [r for r in rows if r["max_displacement_mm"] >= LARGE_MOTION_MM]
    small = [r for r in rows if r["max_displacement_mm"] < LARGE_MOTION_MM]
    if big and small:
        groups.append((f"motion >= {LARGE_MOTION_MM:g} mm", big))
        groups.append((f"motion < {LARGE_MOTION_MM:g} mm", small))
    return groups


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table: mean PSNR / SSIM / RMSE per group and method."""
    rows = result["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cells = []
    for group, members in _groups(rows):
        for m in methods:
            sel = [r for r in members if r["method"] == m]
            if sel:
                cells.append([group, len(sel), m, f"{np.mean([r['psnr'] for r in sel]):.2f}",
                              f"{np.mean([r['ssim'] for r in sel]):.4f}", f"{np.mean([r['rmse'] for r in sel]):.2e}"])
    return markdown_table(["scans", "n", "method", "PSNR (dB)", "SSIM", "RMSE (mm⁻¹)"], cells)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cbct eval sbp-mac``."""
    p = eval_parser("cbct eval sbp-mac", "Evaluate SBP-MAC on the in-grid held-out set (objects inside the grid).")
    p.add_argument("--weights", help="SBP-MAC weights (default: the shipped cbct/models/sbp_mac.pt)")
    p.add_argument("--baseline", action="append", default=[], metavar="[NAME=]PATH",
                   help="plain U-Net weights (trained with --variant unet); repeatable, e.g. "
                        "'plain U-Net on FDK=runs/unet_fdk/model.pt'")
    p.add_argument("--ablation", action="append", default=[], metavar="NAME=PATH",
                   help="more weights to compare, e.g. 'no L_ac=runs/x/model.pt'")
    p.add_argument("--repeats", type=int, default=1, help="scans per source and waveform")
    args = p.parse_args(argv)
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    dev = resolve_device(args.device, threads=args.threads)
    methods: dict[str, str | None] = {}
    for item in args.baseline:
        name, _, path = item.rpartition("=")
        methods[name or "plain U-Net"] = path
    for item in args.ablation:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--ablation expects NAME=PATH, got {item!r}")
        methods[name] = path
    methods["SBP-MAC"] = args.weights
    result = evaluate(methods, specs=eval_specs(repeats=args.repeats), cache_dir=args.cache_dir or ".cache/sbp_mac",
                      device=dev)
    table = format_table(result)
    print(table)
    if args.out:
        write_results(args.out, {**result, "methods": {k: v or "shipped" for k, v in methods.items()}}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
