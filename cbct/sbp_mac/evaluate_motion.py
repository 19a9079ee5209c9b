"""``cbct eval motion``: motion correction on held-out real anatomy larger than the field of view, projected by RTK.

For every scan of :mod:`cbct.sbp_mac.heldout` (real heads, RTK's projector, waveforms including one never trained
on, and still scans), against the motion-free reconstruction in the declared pose (FDK of the noise-free still scan,
the pose of view 0), inside the field of view's disc: PSNR (dB, data range = the reference's range), SSIM (2D per
axial slice) and RMSE (mm⁻¹) of

- ``FDK``: FDK of the moving scan with the nominal geometry;
- ``compensated FDK``: :func:`cbct.motion_correction.correct_motion` (estimate, gate, pose "first") then FDK with
  the geometry it returns;
- ``plain U-Net``: a U-Net on the compensated FDK image (trained on the same data as SBP-MAC);
- ``SBP-MAC``: the network on the compensated FDK image and its K segments;
- ``pipeline <name>``: what the bundled pipeline (default ``motion``) returns for the scan, run from Python;
- ``pipeline <other>``: what each pipeline given with ``--also-pipeline`` returns (reported, never chosen from).

The motion estimation settings and the pose are those of the pipeline's ``motion_compensation`` stage (its defaults
when it has none). When the pipeline has that stage, the compensated FDK row and the networks use the geometry it
produced (one estimate per scan); otherwise :func:`~cbct.motion_correction.correct_motion` runs here. Results: a Markdown table per
metric (groups: every waveform, all moving scans, still scans, per source) and a JSON file with every row, the
settings and the decision of issue 12 (does the network beat compensated FDK by 0.5 dB and the plain U-Net?).
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cbct.fdk import fdk, fdk_filter
from cbct.io.atomic import atomic_path, write_text_atomic
from cbct.learned.cli import eval_parser, markdown_table, run_command, write_results
from cbct.learned.device import resolve_device
from cbct.motion_correction import correct_motion
from cbct.metrics import fov_disc
from cbct.motion_estimation import MotionEstimationConfig
from cbct.operators import segmented_backproject
from cbct.pipeline import load_pipeline, run_pipeline
from cbct.sbp_mac.cache import content_key
from cbct.sbp_mac.heldout import STILL, HeldOutConfig, heldout_scan, heldout_specs, load_heads
from cbct.sbp_mac.inference import SHIPPED_UNET, correct_volume, load_network, volume_metrics
from cbct.scan import Scan

log = logging.getLogger(__name__)

__all__ = ["COMPENSATED", "decision", "evaluate_motion", "format_tables", "main", "pipeline_estimation"]

FDK_ROW = "FDK"
COMPENSATED = "compensated FDK"
UNET = "plain U-Net"
SBP_MAC = "SBP-MAC"
MARGIN_DB = 0.5  # the network must beat compensated FDK by this much to stay in the default pipeline
STILL_LOSS_DB = 0.3  # the shipped pipeline may lose at most this much on still scans
TARGET_GAIN_DB = 3.0  # the shipped pipeline's target gain over FDK on moving scans


def pipeline_estimation(pipeline: str) -> tuple[dict[str, Any], str | int, float | str]:
    """The motion estimation settings, pose and FDK filter of ``pipeline``'s stages (defaults where absent)."""
    settings: dict[str, Any] = {}
    pose: str | int = "first"
    filt: float | str = "hann"
    for stage in load_pipeline(pipeline).stages:
        params = dict(stage.params or {})
        if stage.stage == "motion_compensation":
            pose = params.pop("pose", "first")
            settings = params
        if stage.stage in ("fdk", "sbp_mac") and "filter" in params:
            filt = params["filter"]
    return settings, pose, filt


def _compensate(projections, geom, settings: dict[str, Any], pose: str | int, pipeline_result) -> tuple[Any, dict[str, Any]]:
    """The compensated geometry and the gate's report: the pipeline's own when it ran ``motion_compensation``."""
    report = pipeline_result.metadata.get("motion_correction")
    if report is not None and "motion_compensation" in pipeline_result.timings:
        geometry = pipeline_result.state.geometry
    else:
        mc = correct_motion(projections, geom, config=MotionEstimationConfig.from_dict(settings), pose=pose)
        geometry, report = mc.geometry, mc.report
    return geometry, {"moved": report["moved"], "pose": report["pose"], "gate": report.get("gate"),
                      "estimation_seconds": report.get("seconds")}


def _scan_volumes(
    spec: tuple[str, str, int], cfg: HeldOutConfig, head, pipeline: str, ks: Sequence[int], others: Sequence[str] = (),
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One held-out scan's images (reference, FDK, the pipeline's output, compensated FDK and its K segments for
    every K in ``ks``) and its record (scan meta, gate report, seconds)."""
    source, waveform, seed = spec
    settings, pose, filt = pipeline_estimation(pipeline)
    scan = heldout_scan(source, waveform, seed, cfg, head=head)
    t = time.perf_counter()
    vols = {"reference": scan.reference, "fdk": fdk(scan.projections, scan.geometry, filter=filt)}
    seconds = {"fdk": time.perf_counter() - t}
    t = time.perf_counter()
    state = Scan.from_arrays(scan.geometry, projections=scan.projections, metadata={"id": f"{source}-{waveform}-{seed}"})
    piped = run_pipeline(pipeline, state)
    vols["pipeline"] = piped.volume
    seconds["pipeline"] = time.perf_counter() - t
    t = time.perf_counter()
    geometry, report = _compensate(scan.projections, scan.geometry, settings, pose, piped)
    filtered, fgeom = fdk_filter(scan.projections, geometry, filter=filt)
    for k in sorted(set(ks) | {1}):
        vols[f"segments_{k}"] = segmented_backproject(filtered, fgeom, k)
    vols["compensated"] = vols.pop("segments_1")[0]
    seconds["compensated_fdk"] = time.perf_counter() - t
    for other in others:
        t = time.perf_counter()
        vols[f"pipeline:{other}"] = run_pipeline(other, state).volume
        seconds[f"pipeline:{other}"] = time.perf_counter() - t
    record = {**scan.meta, "report": report, "seconds": seconds, "pipeline_stage_seconds": piped.timings}
    return vols, record


def _code_version() -> str:
    """A hash of the source of everything that makes the cached images (all of ``cbct`` but the learned stages and
    their shared package, plus the held-out scans): a change to any of it invalidates the cache."""
    root = pathlib.Path(__file__).resolve().parents[1]
    files = [p for p in sorted(root.rglob("*.py")) if p.relative_to(root).parts[0] not in ("bbc", "sbp_mac", "learned")]
    files.append(root / "sbp_mac" / "heldout.py")
    return content_key({str(p.relative_to(root)): p.read_text() for p in files})


def _cache_description(cfg: HeldOutConfig, pipeline: str, ks, others=()) -> dict[str, Any]:
    """What every cached scan of one evaluation shares in its key: the held-out settings, the pipelines' digests,
    the K values and the code version (read once per evaluation, not per scan)."""
    return {"cfg": cfg.to_dict(), "pipeline": load_pipeline(pipeline).digest(), "ks": sorted(ks),
            "code": _code_version(), "version": 1, "others": [load_pipeline(o).digest() for o in others]}


def _cached_scan_volumes(
    cache_dir, description, spec, cfg, head, pipeline, ks, others=()
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """:func:`_scan_volumes` through a cache (one ``.npz`` and ``.json`` per scan, keyed by the scan and
    :func:`_cache_description`); ``cache_dir=None``: no cache."""
    if cache_dir is None:
        return _scan_volumes(spec, cfg, head, pipeline, ks, others)
    key = content_key({**description, "spec": list(spec)})
    stem = pathlib.Path(cache_dir) / f"{spec[0]}-{spec[1]}-{spec[2]}-{key}"
    npz, meta = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if npz.is_file() and meta.is_file():
        with np.load(npz) as f:
            return {k: f[k] for k in f.files}, json.loads(meta.read_text())
    vols, record = _scan_volumes(spec, cfg, head, pipeline, ks, others)
    npz.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v, np.float32) for k, v in vols.items()})
    write_text_atomic(meta, json.dumps(record, default=str))
    return vols, record


def evaluate_motion(
    cfg: HeldOutConfig,
    *,
    networks: dict[str, str | None],
    pipeline: str = "motion",
    data_dir: str | pathlib.Path | None = None,
    batch_size: int = 8,
    cache_dir: str | pathlib.Path | None = None,
    also_pipelines: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Every held-out scan through every method (the networks on the torch ``device``); returns ``{"rows": [...], "config": ..., "seconds": ...}``.

    ``networks``: row name -> weights path (``None``: the shipped SBP-MAC weights); a network that reads segments
    gets the compensated segments, a plain U-Net the compensated FDK image. ``cache_dir``: keep each scan's images
    there (everything but the networks), so that evaluating other weights on the same scans is quick.
    ``also_pipelines``: more pipelines whose outputs are reported as rows of their own.
    """
    models = {name: load_network(path, device=device) for name, path in networks.items()}
    settings, pose, filt = pipeline_estimation(pipeline)
    ks = sorted({m.config.n_segments for m in models.values() if m.config.use_segments})
    mask = fov_disc(cfg.volume_shape, cfg.fov_radius_voxels())
    heads = load_heads(cfg.sources, data_dir)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    description = _cache_description(cfg, pipeline, ks, tuple(also_pipelines)) if cache_dir is not None else None
    for spec in heldout_specs(cfg):
        vols, record = _cached_scan_volumes(cache_dir, description, spec, cfg, heads[spec[0]], pipeline, ks,
                                            tuple(also_pipelines))
        base = {k: record[k] for k in ("source", "waveform", "seed", "max_displacement_mm", "max_rotation_deg")}
        sec = record["seconds"]

        def add(method: str, volume, seconds: float, **extra: Any) -> None:
            rows.append({**base, "method": method, **volume_metrics(volume, vols["reference"], mask), "seconds": seconds, **extra})

        add(FDK_ROW, vols["fdk"], sec["fdk"])
        add(COMPENSATED, vols["compensated"], sec["compensated_fdk"], **record["report"])
        for name, model in models.items():
            t = time.perf_counter()
            seg = vols[f"segments_{model.config.n_segments}"] if model.config.use_segments else None
            add(name, correct_volume(model, vols["compensated"], seg, batch_size=batch_size, device=device), time.perf_counter() - t)
        add(f"pipeline {pipeline}", vols["pipeline"], sec["pipeline"], stage_seconds=record["pipeline_stage_seconds"])
        for other in also_pipelines:
            add(f"pipeline {other}", vols[f"pipeline:{other}"], sec[f"pipeline:{other}"])
        n_rows = len(models) + 3 + len(also_pipelines)
        log.info("%s %s: %s", spec[0], spec[1], ", ".join(f"{r['method']} {r['psnr']:.2f} dB" for r in rows[-n_rows:]))
    result = {"rows": rows, "config": cfg.to_dict(), "pipeline": pipeline, "estimation": settings, "pose": pose,
              "filter": filt, "networks": {k: v or "shipped" for k, v in networks.items()},
              "seconds": time.perf_counter() - t_start, "torch_threads": torch.get_num_threads()}
    result["decision"] = decision(rows, pipeline)
    return result


def _mean(rows: list[dict[str, Any]], method: str, key: str = "psnr") -> float | None:
    sel = [r[key] for r in rows if r["method"] == method]
    return float(np.mean(sel)) if sel else None


def decision(rows: list[dict[str, Any]], pipeline: str = "motion") -> dict[str, Any]:
    """Issue 12's tests: does SBP-MAC beat compensated FDK by :data:`MARGIN_DB` and the plain U-Net (mean PSNR over
    all held-out scans, and over the moving ones), and the shipped pipeline's gain over FDK on moving scans and its
    loss on still scans."""
    moving = [r for r in rows if r["waveform"] != STILL]
    still = [r for r in rows if r["waveform"] == STILL]
    out: dict[str, Any] = {}
    for label, sel in (("all", rows), ("moving", moving), ("still", still)):
        out[f"mean_psnr_{label}"] = {m: _mean(sel, m) for m in dict.fromkeys(r["method"] for r in rows)}
    means = out["mean_psnr_all"]
    net, comp, unet = means.get(SBP_MAC), means.get(COMPENSATED), means.get(UNET)
    if net is not None and comp is not None:
        out["sbp_mac_minus_compensated_db"] = net - comp
        out["sbp_mac_minus_unet_db"] = None if unet is None else net - unet
        out["network_earns_place"] = bool(net - comp >= MARGIN_DB and (unet is None or net > unet))
    pipe = f"pipeline {pipeline}"
    if moving and _mean(moving, pipe) is not None:
        out["pipeline_gain_over_fdk_moving_db"] = _mean(moving, pipe) - _mean(moving, FDK_ROW)
        out["pipeline_gain_target_met"] = out["pipeline_gain_over_fdk_moving_db"] >= TARGET_GAIN_DB
    if still and _mean(still, pipe) is not None:
        out["pipeline_loss_still_db"] = _mean(still, FDK_ROW) - _mean(still, pipe)
        out["pipeline_still_target_met"] = out["pipeline_loss_still_db"] < STILL_LOSS_DB
    return out


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups = [(w, [r for r in rows if r["waveform"] == w]) for w in dict.fromkeys(r["waveform"] for r in rows) if w != STILL]
    moving = [r for r in rows if r["waveform"] != STILL]
    if moving:
        groups.append(("**all moving**", moving))
    still = [r for r in rows if r["waveform"] == STILL]
    if still:
        groups.append(("**still**", still))
    for s in dict.fromkeys(r["source"] for r in rows):
        sel = [r for r in moving if r["source"] == s]
        if sel:
            groups.append((f"moving, {s}", sel))
    return groups


def format_tables(result: dict[str, Any]) -> str:
    """Markdown: mean PSNR, SSIM and RMSE per group (rows) and method (columns), then the decision."""
    rows = result["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    scans = len({(r["source"], r["waveform"], r["seed"]) for r in rows})
    parts = []
    for key, title, fmt in (("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("rmse", "RMSE (mm⁻¹)", "{:.2e}")):
        cells = [[group, len({(r["source"], r["seed"]) for r in members}),
                  *(fmt.format(v) if (v := _mean(members, m, key)) is not None else "" for m in methods)]
                 for group, members in _groups(rows)]
        parts.append(f"{title}, mean over the scans of each group ({scans} scans):\n\n"
                     + markdown_table(["scans", "n", *methods], cells))
    d = result.get("decision", {})
    notes = []
    if "sbp_mac_minus_compensated_db" in d:
        unet = d.get("sbp_mac_minus_unet_db")
        notes.append(f"SBP-MAC minus compensated FDK (all scans): {d['sbp_mac_minus_compensated_db']:+.2f} dB (needed: "
                     f">= {MARGIN_DB} dB); minus the plain U-Net: " + ("n/a" if unet is None else f"{unet:+.2f} dB")
                     + f"; the network {'earns' if d['network_earns_place'] else 'does not earn'} its place in the default pipeline.")
    if "pipeline_gain_over_fdk_moving_db" in d:
        notes.append(f"Pipeline {result['pipeline']} over FDK on moving scans: {d['pipeline_gain_over_fdk_moving_db']:+.2f} dB "
                     f"(target >= {TARGET_GAIN_DB} dB).")
    if "pipeline_loss_still_db" in d:
        notes.append(f"Pipeline {result['pipeline']} loss on still scans: {d['pipeline_loss_still_db']:.3f} dB (target < {STILL_LOSS_DB} dB).")
    return "\n\n".join(parts + ["\n".join(f"- {n}" for n in notes)]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cbct eval motion``."""
    d = HeldOutConfig()
    p = eval_parser("cbct eval motion", __doc__.split("\n\n")[0])
    p.add_argument("--sources", nargs="+", default=list(d.sources), help="head_mha, tigre_head")
    p.add_argument("--waveforms", nargs="+", default=list(d.waveforms), help=f"motion waveforms and/or {STILL!r}")
    p.add_argument("--repeats", type=int, default=d.repeats, help="scans per source and waveform")
    p.add_argument("--shape", type=int, nargs=3, default=list(d.volume_shape), metavar=("NZ", "NY", "NX"))
    p.add_argument("--voxel-size", type=float, default=d.voxel_size, help="mm")
    p.add_argument("--views", type=int, default=d.n_views)
    p.add_argument("--data-dir", help="folder holding head.mha / head_phantom.mat (default: the shared data folder)")
    p.add_argument("--weights", help="SBP-MAC weights (default: the shipped cbct/models/sbp_mac.pt)")
    p.add_argument("--unet", help="plain U-Net weights trained on the same data (default: cbct/models/sbp_mac_unet.pt; "
                                   "'none': no U-Net row)")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=PATH", help="more weights to compare")
    p.add_argument("--pipeline", default="motion", help="the pipeline whose output is the last row (name or YAML)")
    p.add_argument("--also-pipeline", action="append", default=[], metavar="PIPELINE",
                   help="another pipeline (name or YAML) whose output is reported as a row; repeatable")
    args = p.parse_args(argv)
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    dev = resolve_device(args.device, threads=args.threads)
    networks: dict[str, str | None] = {UNET: args.unet or str(SHIPPED_UNET), SBP_MAC: args.weights}
    if args.unet == "none":
        del networks[UNET]
    for item in args.extra:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--extra expects NAME=PATH, got {item!r}")
        networks[name] = path
    cfg = HeldOutConfig(volume_shape=tuple(args.shape), voxel_size=args.voxel_size, n_views=args.views,
                        sources=tuple(args.sources), waveforms=tuple(args.waveforms), repeats=args.repeats)
    result = evaluate_motion(cfg, networks=networks, pipeline=args.pipeline, data_dir=args.data_dir,
                             cache_dir=args.cache_dir, also_pipelines=args.also_pipeline, device=dev)
    table = format_tables(result)
    print(table)
    if args.out:
        write_results(args.out, result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
