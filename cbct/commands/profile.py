"""``cbct profile``: time a pipeline stage by stage on a simulated (or given) scan.

Warm-up runs first (Numba compilation, CUDA module loading, caches), then ``--repeat`` profiled runs; the table shows
the median wall and GPU time per stage, GUPS from the median, and memory from the last run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
from typing import Any

__all__ = ["add_parser", "run", "profile_pipeline"]


def profile_pipeline(pipeline: Any, scan: Any, *, device: str | None = None, repeat: int = 3, warmup: int = 1,
                     trace: pathlib.Path | None = None) -> dict[str, Any]:
    """Profile ``pipeline`` on ``scan``: returns per-stage medians and the last run's report (see module notes)."""
    from cbct.pipeline import load_pipeline, run_pipeline

    if repeat < 1 or warmup < 0:
        raise ValueError(f"repeat must be >= 1 and warmup >= 0, got {repeat}, {warmup}")
    pipe = load_pipeline(pipeline)
    reports = []
    with tempfile.TemporaryDirectory(prefix="cbct-profile-") as tmp:
        for _ in range(warmup):
            run_pipeline(pipe, scan, device=device, out_dir=tmp)
        for i in range(repeat):
            last = i == repeat - 1
            result = run_pipeline(pipe, scan, device=device, profile=True, out_dir=tmp,
                                  trace=trace if (last and trace is not None) else None)
            reports.append(result.profile)
    stages = []
    for k, rec in enumerate(reports[-1].stages):
        walls = [r.stages[k].wall_s for r in reports]
        gpus = [r.stages[k].gpu_s for r in reports if r.stages[k].gpu_s is not None]
        wall = statistics.median(walls)
        gpu = statistics.median(gpus) if gpus else None
        seconds = gpu if gpu else wall
        stages.append({
            "stage": rec.name, "wall_s_median": wall, "wall_s_min": min(walls), "gpu_s_median": gpu,
            "voxel_updates": rec.voxel_updates,
            "gups": (rec.voxel_updates / seconds / 1e9) if rec.voxel_updates and seconds > 0 else None,
            "peak_traced_bytes": rec.peak_traced_bytes, "max_rss_bytes": rec.max_rss_bytes,
            "gpu_used_bytes": rec.gpu_used_bytes, "torch_peak_bytes": rec.torch_peak_bytes,
        })
    return {"pipeline": pipe.name, "device": reports[-1].device, "repeat": repeat, "warmup": warmup,
            "stages": stages, "trace": str(trace) if trace else None}


def _table(report: dict[str, Any], scan_desc: str) -> str:
    def mb(x):
        return "-" if x is None else f"{x / 2**20:.1f}"

    lines = [f"pipeline {report['pipeline']} on {scan_desc}, device {report['device']}: median of "
             f"{report['repeat']} runs after {report['warmup']} warm-up",
             f"{'stage':<18}{'wall s':>10}{'gpu s':>10}{'GUPS':>9}{'peak traced MiB':>17}{'max RSS MiB':>13}{'GPU used MiB':>14}"]
    for s in report["stages"]:
        gpu = "-" if s["gpu_s_median"] is None else f"{s['gpu_s_median']:.4f}"
        gups = "-" if s["gups"] is None else f"{s['gups']:.3f}"
        lines.append(f"{s['stage']:<18}{s['wall_s_median']:>10.4f}{gpu:>10}{gups:>9}{mb(s['peak_traced_bytes']):>17}"
                     f"{mb(s['max_rss_bytes']):>13}{mb(s['gpu_used_bytes']):>14}")
    if report["trace"]:
        lines.append(f"PyTorch profiler trace (Chrome trace JSON; chrome://tracing or https://ui.perfetto.dev): {report['trace']}")
    lines.append("GUPS: 1e9 voxel updates (voxels x views) per second of the stage, filtering included.")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "profile", help="time a pipeline per stage (wall, GPU, GUPS, memory; optional trace)",
        description="Profile a pipeline stage by stage on a simulated Shepp-Logan scan (or --scan FILE): wall time, "
                    "GPU time from CUDA events, GUPS of backprojection stages, peak host and GPU memory. "
                    "--trace writes a PyTorch profiler Chrome trace; on a GPU every stage is an NVTX range, so "
                    "`nsys profile -t cuda,nvtx cbct profile --device cuda` shows the stages in Nsight Systems.",
        epilog="examples:\n"
               "  cbct profile                                  # fdk, 64^3 voxels, 180 views, CPU\n"
               "  cbct profile --size 128 --views 360 --device cuda --trace fdk-trace.json\n"
               "  cbct profile --scan scan.h5 --pipeline pipelines/fdk.yaml --json profile.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", "-p", default="fdk", help="pipeline file or built-in name (default fdk)")
    p.add_argument("--scan", type=pathlib.Path, help="scan to profile on (default: a simulated Shepp-Logan scan)")
    p.add_argument("--size", type=int, default=64, help="simulated volume: voxels per side (default 64)")
    p.add_argument("--views", type=int, default=180, help="simulated views (default 180)")
    p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    p.add_argument("--repeat", type=int, default=3, help="profiled runs (default 3; the median is shown)")
    p.add_argument("--warmup", type=int, default=1, help="unprofiled warm-up runs first (default 1)")
    p.add_argument("--trace", type=pathlib.Path, help="write a PyTorch profiler Chrome trace of the last run here")
    p.add_argument("--json", type=pathlib.Path, dest="json_out", help="also write the report as JSON here")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cbct.io import read_scan

    if args.scan is not None:
        scan = read_scan(args.scan)
        desc = f"{args.scan} ({scan.geometry.n_views} views, volume {scan.geometry.volume.shape})"
    else:
        from cbct.simulation.scans import simulate_scan

        scan = simulate_scan(phantom="shepp-logan", size=args.size, views=args.views, id="profile")
        desc = f"simulated Shepp-Logan ({args.views} views of {scan.geometry.detector_shape}, volume {args.size}^3)"
    report = profile_pipeline(args.pipeline, scan, device=args.device, repeat=args.repeat, warmup=args.warmup,
                              trace=args.trace)
    report["scan"] = desc
    print(_table(report, desc))
    if args.json_out:
        from cbct.io.atomic import write_text_atomic

        write_text_atomic(args.json_out, json.dumps(report, indent=2))
        print(f"report written to {args.json_out}", file=sys.stderr)
    return 0
