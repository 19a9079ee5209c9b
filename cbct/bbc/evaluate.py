"""``cbct eval bbc``: BBC-Recon against its baselines on held-out scans, at 4× and 8× sparse views.

With ``--heldout rtk`` the held-out set is real anatomy wider than the field of view projected by RTK at several
calibrations and sparse patterns (:mod:`cbct.bbc.heldout`, :func:`evaluate_rtk`); otherwise as follows.

For every held-out scan (``data.eval`` of the config: phantom seeds and real anatomy never used in training) the dense
clean sequence gets Poisson noise at ``noise.eval_i0`` (seeded); the **reference** is FDK of all its views (the
full-view reconstruction). At each factor ``s`` every ``s``-th view is kept, and four methods are compared:

- ``sparse FDK``: FDK of the kept views (angular weights from the sparse angles);
- ``linear + FDK``: missing views linearly interpolated along the angle, FDK;
- ``flow + FDK``: missing views synthesised by the completion network, FDK;
- ``BBC-Recon``: flow + FDK, then the restoration network;
- with ``iterative=True`` (``--iterative``), two model-based methods that only see the kept views
  (:mod:`cbct.iterative`, started from sparse FDK, on the grid lengthened in z to all the detector sees, then
  cropped back): ``OS-SART`` (10 iterations, blocks of 10 views in angular order) and ``FISTA-TV`` (30 iterations,
  TV weight 1, chosen on one training scan).

Projection domain: PSNR of the synthesised views against the full scan's views at the same angles (range: the full
scan's max − min). Image domain: PSNR, SSIM (2D, per axial slice) and RMSE against the reference, inside the field of
view (a cylinder of 0.95 × the FOV radius, all slices); PSNR/SSIM range: the reference's max − min there.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import sys
import time
from typing import Any

import numpy as np
import torch

from cbct.bbc.baselines import linear_completion
from cbct.bbc.data import DenseScanConfig, dense_sequence, noisy
from cbct.bbc.heldout import HeldoutConfig, load_heldout_config, pattern_indices, rtk_scan
from cbct.bbc.inference import complete_views, measure_throughput
from cbct.bbc.restoration import restore_volume
from cbct.bbc.training import load_config, resolve_path
from cbct.bbc.weights import load_completion, load_restoration
from cbct.angles import plan_completion
from cbct.fdk import fdk
from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.iterative import fista_tv, os_sart
from cbct.learned.cli import eval_parser, markdown_table, run_command, write_results
from cbct.learned.device import describe_device, resolve_device
from cbct.metrics import fov_disc, psnr, rmse, ssim
from cbct.simulation.sparse import sparse_views

log = logging.getLogger(__name__)

METHODS = ("sparse FDK", "linear + FDK", "flow + FDK", "BBC-Recon")
ITERATIVE_METHODS = ("OS-SART", "FISTA-TV")

__all__ = ["compare_methods", "evaluate", "evaluate_rtk", "format_table", "main"]


def _scans(sources: list[dict[str, Any]]) -> list[tuple[str, int]]:
    out = []
    for src in sources:
        if "seed_list" in src:
            seeds = [int(s) for s in src["seed_list"]]
        else:
            a, b = src["seeds"]
            seeds = list(range(int(a), int(b)))
        out += [(src["kind"], s) for s in seeds]
    return out


def _proj_psnr(synth: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    return psnr(synth, ref, data_range=data_range)


def compare_methods(full: np.ndarray, geom: ConeGeometry, sp: np.ndarray, sg: ConeGeometry, *, flow, rest,
                    ref: np.ndarray, mask: np.ndarray, device: torch.device, iterative: bool = False,
                    base: dict[str, Any]) -> list[dict[str, Any]]:
    """One sparse scan against its dense reference: a row per method (``base`` merged into each).

    Args:
        full: (n, nv, nu) the dense noisy scan on ``geom`` (the completion target).
        sp, sg: the kept views and their geometry (their angles must be among ``geom``'s).
        flow, rest: the completion and restoration networks.
        ref: FDK of ``full``; ``mask``: (y, x) field of view where the image metrics are taken.
    """
    ref_in = ref[:, mask]
    img_range = float(ref_in.max() - ref_in.min())
    proj_range = float(full.max() - full.min())

    def image_metrics(vol: np.ndarray) -> dict[str, float]:
        return {
            "psnr": psnr(vol, ref, data_range=img_range, mask=mask),
            "ssim": ssim(vol, ref, data_range=img_range, mask=mask),
            "rmse": rmse(vol, ref, mask=mask),
        }

    plan = plan_completion(sg, target=geom)
    miss = plan.missing
    rows: list[dict[str, Any]] = [{**base, "method": METHODS[0], **image_metrics(np.asarray(fdk(sp, sg), np.float32))}]
    lin, _ = linear_completion(sp, sg, target=geom)
    rows.append({**base, "method": METHODS[1], "proj_psnr": _proj_psnr(lin[miss], full[miss], proj_range),
                 **image_metrics(np.asarray(fdk(lin, geom), np.float32))})
    t0 = time.perf_counter()
    dense = complete_views(flow, sp, plan, device=device)
    t_flow = time.perf_counter() - t0
    vol_flow = np.asarray(fdk(dense, geom), np.float32)
    rows.append({**base, "method": METHODS[2], "proj_psnr": _proj_psnr(dense[miss], full[miss], proj_range),
                 "seconds_completion": t_flow, **image_metrics(vol_flow)})
    vol_bbc = restore_volume(rest, vol_flow, device=device)
    rows.append({**base, "method": METHODS[3], "proj_psnr": rows[-1]["proj_psnr"], **image_metrics(vol_bbc)})
    if iterative:
        rows += [{**base, "method": m, **image_metrics(v)} for m, v in _iterative_volumes(sp, sg).items()]
    log.info("%s: %s", " ".join(str(v) for v in base.values()),
             ", ".join(f"{r['method']} {r['psnr']:.2f} dB" for r in rows))
    return rows


def evaluate(
    cfg: dict[str, Any],
    *,
    factors: tuple[int, ...] = (4, 8),
    flow_weights: str | None = None,
    restore_weights: str | None = None,
    device: torch.device | str = "cpu",
    iterative: bool = False,
    cache_dir: str | pathlib.Path | None = None,
) -> dict[str, Any]:
    """Run the comparison (weights: the shipped ones unless given; ``cache_dir``: the config's unless given); returns ``{"rows": [...], "scans": [...], "seconds": ...}`` (one row per scan,
    factor and method, with ``proj_psnr`` for the completion methods and ``psnr``, ``ssim``, ``rmse``).
    ``iterative`` adds the OS-SART and FISTA-TV rows."""
    dev = torch.device(device)
    scan = DenseScanConfig.from_dict(cfg["scan"])
    geom = scan.geometry()
    cache_dir = resolve_path(cache_dir or cfg["cache_dir"])
    flow = load_completion(resolve_path(flow_weights) if flow_weights else None, device=dev)
    rest = load_restoration(resolve_path(restore_weights) if restore_weights else None, device=dev)
    mask = fov_disc(scan.volume_shape[1:], 0.95 * scan.fov_radius(), scan.voxel_size)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    scans = _scans(cfg["data"]["eval"])
    for n, (kind, seed) in enumerate(scans):
        clean = dense_sequence(scan, kind, seed, cache_dir=cache_dir)
        full = noisy(clean, float(cfg["noise"]["eval_i0"]), np.random.default_rng([int(seed), 7, n]))
        ref = np.asarray(fdk(full, geom), np.float32)
        for f in factors:
            sp, sg, _ = sparse_views(full, geom, step=int(f))
            rows += compare_methods(full, geom, sp, sg, flow=flow, rest=rest, ref=ref, mask=mask, device=dev,
                                    iterative=iterative, base={"kind": kind, "seed": seed, "factor": int(f)})
    return {"rows": rows, "scans": [f"{k}:{s}" for k, s in scans], "seconds": time.perf_counter() - t_start}


def _iterative_volumes(projections: np.ndarray, geom: ConeGeometry) -> dict[str, np.ndarray]:
    """OS-SART and FISTA-TV of the kept views on ``geom``'s grid lengthened in z to all that the cone covers across
    the grid (they explain every ray, so the object beyond the grid must have somewhere to go), cropped back."""
    nz, ny, nx = geom.volume.shape
    dz = geom.volume.voxel_size[0]
    dso, dsd = geom.source_origin_distances(), geom.source_detector_distances()
    far = dso + np.hypot(ny * geom.volume.voxel_size[1], nx * geom.volume.voxel_size[2]) / 2  # grid corner, from the source
    seen = float(np.max(geom.detector_shape[0] * geom.pixel_sizes()[:, 0] * far / dsd)) / 2  # half height there, mm
    pad = max(0, int(np.ceil((seen - nz * dz / 2) / dz)))
    longer = geom.with_volume(VolumeGrid((nz + 2 * pad, ny, nx), geom.volume.voxel_size, geom.volume.offset))
    start = np.asarray(fdk(projections, longer), np.float32)
    crop = slice(pad, pad + nz)
    sart = os_sart(projections, longer, 10, blocksize=10, order="angular", init=start.copy())
    tv = fista_tv(projections, longer, 30, tv_weight=1.0, tv_iter=10, init=start.copy())
    return {"OS-SART": np.asarray(sart.volume[crop], np.float32), "FISTA-TV": np.asarray(tv.volume[crop], np.float32)}


def _group(row: dict[str, Any]) -> str:
    name = {"head_mha": "real CT (head.mha)", "tigre_head": "TIGRE head", "dental": "dental phantom (cbct.phantoms.dental)"}.get(
        row["kind"], "ellipsoid dental heads")
    return f"{name} ×{row['calibration']:g}" if "calibration" in row else name


def _pattern(row: dict[str, Any]) -> str:
    return row.get("pattern") or f"{row['factor']}×"


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of the mean metrics per sparse pattern (or factor), anatomy group and method (and over all
    scans)."""
    rows = result["rows"]
    cells = []
    groups = sorted({_group(r) for r in rows})
    for f in dict.fromkeys(_pattern(r) for r in rows):
        for grp in ["all", *groups] if len(groups) > 1 else groups:
            sel = [r for r in rows if _pattern(r) == f and (grp == "all" or _group(r) == grp)]
            n_scans = len({(r["kind"], r["seed"], r.get("calibration")) for r in sel})
            for m in METHODS + ITERATIVE_METHODS:
                rs = [r for r in sel if r["method"] == m]
                if not rs:
                    continue
                pp = [r["proj_psnr"] for r in rs if "proj_psnr" in r]
                cells.append([f, f"{grp} ({n_scans})", m, f"{np.mean(pp):.2f}" if pp else "—",
                              f"{np.mean([r['psnr'] for r in rs]):.2f}", f"{np.mean([r['ssim'] for r in rs]):.4f}",
                              f"{np.mean([r['rmse'] for r in rs]):.5f}"])
    return markdown_table(["pattern", "scans", "method", "projection PSNR (dB)", "PSNR (dB)", "SSIM", "RMSE (mm⁻¹)"], cells)


def evaluate_rtk(
    heldout: HeldoutConfig,
    *,
    flow_weights: str | pathlib.Path | None = None,
    restore_weights: str | pathlib.Path | None = None,
    device: torch.device | str = "cpu",
    cache_dir: str | pathlib.Path | None = None,
) -> dict[str, Any]:
    """The RTK-projected held-out set (:mod:`cbct.bbc.heldout`): every anatomy × calibration × pattern, completed to
    the stated dense angles; rows as :func:`evaluate` with ``pattern`` and ``calibration``."""
    dev = torch.device(device)
    scan = heldout.scan
    geom = scan.geometry()
    flow = load_completion(flow_weights, device=dev)
    rest = load_restoration(restore_weights, device=dev)
    mask = fov_disc(scan.volume_shape[1:], 0.95 * scan.fov_radius(), scan.voxel_size)
    rows: list[dict[str, Any]] = []
    scans = []
    t_start = time.perf_counter()
    for n, entry in enumerate(heldout.anatomy):
        for cal in heldout.calibrations:
            full = rtk_scan(entry, scan, cal, heldout.i0, seed=n, cache_dir=cache_dir)
            ref = np.asarray(fdk(full, geom), np.float32)
            scans.append(f"{entry['kind']} ×{cal:g}")
            for pat in heldout.patterns:
                keep = pattern_indices(pat, scan.n_views, seed=n)
                sp, sg, _ = sparse_views(full, geom, keep=keep)
                base = {"kind": entry["kind"], "seed": n, "calibration": cal, "pattern": pat.name,
                        "factor": scan.n_views / keep.size}
                rows += compare_methods(full, geom, sp, sg, flow=flow, rest=rest, ref=ref, mask=mask, device=dev,
                                        base=base)
    return {"rows": rows, "scans": scans, "seconds": time.perf_counter() - t_start,
            "heldout": {"set": "rtk", "scan": dataclasses.asdict(scan), "i0": heldout.i0,
                        "calibrations": list(heldout.calibrations)}}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cbct eval bbc``; prints the table and returns the exit status."""
    p = eval_parser("cbct eval bbc", "Evaluate BBC-Recon against sparse FDK and linear interpolation.")
    p.add_argument("--config", default="configs/bbc_cpu.yaml", help="YAML config (scan, held-out data, noise)")
    p.add_argument("--factors", type=int, nargs="+", default=[4, 8], help="sparse-view factors (default: 4 8)")
    p.add_argument("--flow-weights", help="completion weights (default: the shipped cbct/models/bbc_flow.pt)")
    p.add_argument("--restore-weights", help="restoration weights (default: the shipped cbct/models/bbc_restore.pt)")
    p.add_argument("--heldout", choices=("sim", "rtk"), default="sim",
                   help="held-out set: sim (the config's data.eval, cbct's projector, objects inside the FOV) or rtk "
                        "(real anatomy wider than the FOV, projected by RTK, several calibrations and patterns)")
    p.add_argument("--heldout-config", default="configs/bbc_heldout_rtk.yaml", help="settings of the rtk set")
    p.add_argument("--iterative", action="store_true",
                   help="also report OS-SART and FISTA-TV (cbct.iterative) on the kept views")
    p.add_argument("--throughput", action="store_true",
                   help="also measure synthesised views/s at the config's detector size and at 512 x 512")
    args = p.parse_args(argv)
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if any(f < 2 for f in args.factors):
        raise ValueError("--factors must be integers >= 2")
    cfg = load_config(args.config)
    dev = resolve_device(args.device, threads=args.threads)
    cache_dir = resolve_path(args.cache_dir or cfg["cache_dir"])
    flow_weights = resolve_path(args.flow_weights) if args.flow_weights else None
    restore_weights = resolve_path(args.restore_weights) if args.restore_weights else None
    if args.heldout == "rtk":
        result = evaluate_rtk(load_heldout_config(resolve_path(args.heldout_config)), flow_weights=flow_weights,
                              restore_weights=restore_weights, device=dev, cache_dir=cache_dir)
    else:
        result = evaluate(cfg, factors=tuple(args.factors), flow_weights=flow_weights, restore_weights=restore_weights,
                          device=dev, iterative=args.iterative, cache_dir=cache_dir)
    text = [format_table(result), "", f"held-out scans: {', '.join(result['scans'])}; {result['seconds']:.0f} s on "
            f"{describe_device(dev)}"]
    if args.throughput:
        flow = load_completion(flow_weights, device=dev)
        scan = DenseScanConfig.from_dict(cfg["scan"])
        result["throughput"] = {}
        for shape, n_acq, ppb in ((tuple(scan.detector_shape), 45, 8), ((512, 512), 4, 1)):
            tp = measure_throughput(flow, detector_shape=shape, n_acquired=n_acq, factor=8, pairs_per_batch=ppb,
                                    device=dev, repeats=1 if shape == (512, 512) else 3)
            result["throughput"][f"{shape[0]}x{shape[1]}"] = tp
            text.append(f"throughput {shape[0]}×{shape[1]}: {tp['views_per_s']:.2f} synthesised views/s on {dev} "
                        f"({int(tp['views'])} views in {tp['seconds']:.2f} s, {torch.get_num_threads()} torch thread(s))")
    out = "\n".join(text)
    sys.stdout.write(out + "\n")  # the command's output is the table
    if args.out:
        write_results(args.out, result, out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
