"""CPU benchmark: cbct's FDK and forward projector against RTK's CPU FDK and Joseph projector, same data, one run.

    python benchmarks/cpu_vs_rtk.py --size 256 --views 360

Data: RTK's analytic Shepp-Logan projections of a full circular scan (``views`` views of ``size``² pixels) and
the Shepp-Logan volume drawn by RTK on a ``size``³ grid. Each timed call runs to completion (FDK: weighting, ramp
filtering and backprojection; projector: all views); inputs are converted to each library's format before timing.
Every measurement is a warm-up call followed by ``repeats`` timed calls; the JSON records medians, spreads, the
machine (CPU, cores, load average before and after), thread counts and library versions, and the accuracy of our
results against RTK's on the same data.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cbct  # noqa: E402
from cbct.conventions import rtk as crtk  # noqa: E402

log = logging.getLogger("benchmarks.cpu_vs_rtk")

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cpu_fdk_vs_rtk.json"
DEFAULT_BASELINE = ROOT / "benchmarks" / "results" / "cpu_fdk_vs_rtk_baseline.json"  # before the kernel tuning
TARGETS = {"fdk_speedup": 3.0, "projector_speedup": 2.0}


def benchmark_geometry(size: int, views: int) -> cbct.ConeGeometry:
    """A dental-like full circular scan: DSO 500 mm, DSD 750 mm, ``views`` views; a 64 mm cube of ``size``³ voxels
    and a 96 mm square detector of ``size``² pixels (magnification 1.5: the detector spans the volume)."""
    voxel = 64.0 / size
    pixel = 96.0 / size  # magnification 1.5: the detector spans the volume with a margin
    return cbct.ConeGeometry.circular(
        dso=500.0, dsd=750.0, detector_shape=(size, size), detector_pixel_size=pixel,
        volume_shape=size, voxel_size=voxel, n_views=views,
    )


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "cbct": cbct.__version__}
    for dist in ("numpy", "numba", "scipy", "itk", "itk-rtk", "itk-core"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def timed(fn, repeats: int, setup=None) -> dict:
    """Warm up once, then time ``repeats`` calls: median, min, max and all times in seconds.

    ``setup()``, when given, runs untimed before each call and its result is passed to ``fn``."""
    args = () if setup is None else (setup(),)
    fn(*args)
    times = []
    for _ in range(repeats):
        args = () if setup is None else (setup(),)
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    arr = np.array(times)
    return {
        "median_s": float(np.median(arr)),
        "min_s": float(arr.min()),
        "max_s": float(arr.max()),
        "spread_pct": float(100 * (arr.max() - arr.min()) / np.median(arr)),
        "times_s": [float(t) for t in times],
    }


def compare_with_baseline(report: dict, baseline_path: pathlib.Path) -> dict | None:
    """Our medians now against an earlier report of the same sizes (e.g. before kernel tuning), or None."""
    try:
        base = json.loads(baseline_path.read_text())
    except (OSError, ValueError):
        return None
    if base.get("sizes", {}).get("volume") != report["sizes"]["volume"] or base["sizes"].get("views") != report["sizes"]["views"]:
        return None
    now_fdk, now_proj = report["fdk"]["ours"]["median_s"], report["projector"]["ours"]["median_s"]
    then_fdk, then_proj = base["fdk"]["ours"]["median_s"], base["projector"]["ours"]["median_s"]
    return {
        "file": str(baseline_path.relative_to(ROOT)) if baseline_path.is_relative_to(ROOT) else str(baseline_path),
        "git_commit": base.get("git_commit"),
        "load_average_before": base["machine"]["load_average_before"],
        "ours_fdk_median_s": then_fdk,
        "ours_projector_median_s": then_proj,
        "rtk_fdk_median_s": base["fdk"]["rtk"]["median_s"],
        "rtk_joseph_median_s": base["projector"]["rtk_joseph"]["median_s"],
        "fdk_speedup_vs_rtk": base["fdk"]["speedup"],
        "projector_speedup_vs_rtk": base["projector"]["speedup"],
        "fdk_faster_than_before": then_fdk / now_fdk,
        "projector_faster_than_before": then_proj / now_proj,
    }


def run(size: int, views: int, repeats: int, out: pathlib.Path | None, threads: int | None = None,
        baseline: pathlib.Path | None = None) -> dict:
    import itk
    from itk import RTK as rtk
    import numba

    image_type = itk.Image[itk.F, 3]
    if threads is not None:
        numba.set_num_threads(threads)
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads)
    load_before = os.getloadavg()
    geom = benchmark_geometry(size, views)
    rgeom, empty_proj, empty_vol = crtk.rtk_images(geom)
    log.info("geometry: %s", geom)

    # data: RTK's analytic projections and its drawn phantom
    phantom = rtk.SheppLoganPhantomFilter[image_type, image_type].New()
    phantom.SetInput(empty_proj)
    phantom.SetGeometry(rgeom)
    phantom.SetPhantomScale(28.0)
    phantom.Update()
    proj = crtk.itk_to_projections(phantom.GetOutput())
    proj_img = crtk.projections_to_itk(proj, geom)  # a plain image: RTK must not re-run the phantom while timed
    draw = rtk.DrawSheppLoganFilter[image_type, image_type].New()
    draw.SetInput(empty_vol)
    draw.SetPhantomScale(28.0)
    draw.Update()
    volume, _ = crtk.itk_to_volume(draw.GetOutput())
    vol_img = crtk.volume_to_itk(volume, geom.volume)

    results: dict = {}

    # ---- FDK
    def ours_fdk():
        results["ours_fdk_volume"] = cbct.fdk(proj, geom)

    def rtk_fdk(volume_zeros):
        fdk = rtk.FDKConeBeamReconstructionFilter[image_type].New()
        fdk.SetInput(0, volume_zeros)
        fdk.SetInput(1, proj_img)
        fdk.SetGeometry(rgeom)
        fdk.GetRampFilter().SetTruncationCorrection(0.0)
        fdk.Update()
        results["rtk_fdk_image"] = fdk.GetOutput()

    def ours_filter():
        results["filtered"] = cbct.fdk_filter(proj, geom)

    log.info("timing our FDK")
    t_ours_fdk = timed(ours_fdk, repeats)
    log.info("timing RTK FDK")
    t_rtk_fdk = timed(rtk_fdk, repeats, setup=crtk.volume_info(geom.volume).empty_image)
    log.info("timing our FDK stages")
    t_ours_filter = timed(ours_filter, repeats)
    filtered, filtered_geom = results["filtered"]
    t_ours_bp = timed(lambda: cbct.backproject(filtered, filtered_geom, "fdk"), repeats)
    rtk_volume, _ = crtk.itk_to_volume(results["rtk_fdk_image"])
    ours_volume = results["ours_fdk_volume"]
    radius = 0.9 * 500.0 * np.sin(np.arctan(48.0 / 750.0))
    aff = geom.volume.index_to_world()
    x = aff[0, 3] + aff[0, 0] * np.arange(size)
    fov = np.broadcast_to((x[None, :] ** 2 + x[:, None] ** 2 <= radius**2)[None], volume.shape).copy()
    fov[: size // 8] = False
    fov[-size // 8:] = False
    fdk_error = float(np.linalg.norm((ours_volume - rtk_volume)[fov]) / np.linalg.norm(rtk_volume[fov]))

    # ---- forward projection
    def ours_project():
        results["ours_proj"] = cbct.project(volume, geom)

    def rtk_project(projection_zeros):
        joseph = rtk.JosephForwardProjectionImageFilter[image_type, image_type].New()
        joseph.SetInput(0, projection_zeros)  # RTK accumulates onto its input, in place
        joseph.SetInput(1, vol_img)
        joseph.SetGeometry(rgeom)
        joseph.Update()
        results["rtk_proj_image"] = joseph.GetOutput()

    log.info("timing our projector")
    t_ours_proj = timed(ours_project, repeats)
    log.info("timing RTK Joseph")
    t_rtk_proj = timed(rtk_project, repeats, setup=crtk.projection_info(geom).empty_image)
    rtk_proj = crtk.itk_to_projections(results["rtk_proj_image"])
    covered = rtk_proj > 0
    proj_error = float(np.linalg.norm((results["ours_proj"] - rtk_proj)[covered]) / np.linalg.norm(rtk_proj[covered]))

    fdk_ratio = t_rtk_fdk["median_s"] / t_ours_fdk["median_s"]
    proj_ratio = t_rtk_proj["median_s"] / t_ours_proj["median_s"]
    n_vox = float(np.prod(geom.volume.shape))
    report = {
        "benchmark": "cpu_fdk_vs_rtk",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": list(load_before),
            "load_average_after": list(os.getloadavg()),
            "numba_threads": numba.get_num_threads(),
            "itk_threads": int(itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()),
        },
        "sizes": {
            "volume": list(geom.volume.shape),
            "voxel_size_mm": list(geom.volume.voxel_size),
            "views": geom.n_views,
            "detector": list(geom.detector_shape),
            "pixel_size_mm": [float(p) for p in geom.pixel_sizes()[0]],
            "dso_mm": 500.0,
            "dsd_mm": 750.0,
            "arc_deg": 360.0,
        },
        "repeats": repeats,
        "versions": versions(),
        "fdk": {
            "ours": t_ours_fdk,
            "rtk": t_rtk_fdk,
            "speedup": fdk_ratio,
            "target_speedup": TARGETS["fdk_speedup"],
            "target_met": bool(fdk_ratio >= TARGETS["fdk_speedup"]),
            "ours_stages": {"filter": t_ours_filter, "backprojection": t_ours_bp},
            "ours_backprojection_gups": n_vox * geom.n_views / t_ours_bp["median_s"] / 1e9,
            "relative_rmse_vs_rtk_in_fov": fdk_error,
        },
        "projector": {
            "ours": t_ours_proj,
            "rtk_joseph": t_rtk_proj,
            "speedup": proj_ratio,
            "target_speedup": TARGETS["projector_speedup"],
            "target_met": bool(proj_ratio >= TARGETS["projector_speedup"]),
            "rays_per_s_ours": float(np.prod(geom.projection_shape)) / t_ours_proj["median_s"],
            "relative_rmse_vs_rtk": proj_error,
        },
    }
    if baseline is not None and (out is None or baseline.resolve() != out.resolve()):
        before = compare_with_baseline(report, baseline)
        if before is not None:
            report["before_tuning"] = before
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        log.info("wrote %s", out)
    return report


def summary(report: dict) -> str:
    f, p = report["fdk"], report["projector"]
    m = report["machine"]
    return "\n".join([
        f"cpu: {m['cpu_model']} ({m['cpu_count']} cores), load {m['load_average_before'][0]:.2f} -> {m['load_average_after'][0]:.2f}",
        f"volume {report['sizes']['volume']}, {report['sizes']['views']} views of {report['sizes']['detector']}",
        f"FDK       ours {f['ours']['median_s']:8.3f} s   RTK {f['rtk']['median_s']:8.3f} s   speed-up {f['speedup']:.2f}x"
        f" (target {f['target_speedup']:.0f}x: {'met' if f['target_met'] else 'MISSED'})",
        f"          our stages: filter {f['ours_stages']['filter']['median_s']:.3f} s, "
        f"backprojection {f['ours_stages']['backprojection']['median_s']:.3f} s ({f['ours_backprojection_gups']:.2f} GUPS);"
        f" relative RMSE vs RTK {f['relative_rmse_vs_rtk_in_fov']:.2e}",
        f"projector ours {p['ours']['median_s']:8.3f} s   RTK {p['rtk_joseph']['median_s']:8.3f} s   speed-up {p['speedup']:.2f}x"
        f" (target {p['target_speedup']:.0f}x: {'met' if p['target_met'] else 'MISSED'}); relative RMSE vs RTK {p['relative_rmse_vs_rtk']:.2e}",
    ] + ([
        f"vs {report['before_tuning']['file']}: FDK {report['before_tuning']['fdk_faster_than_before']:.2f}x faster,"
        f" projector {report['before_tuning']['projector_faster_than_before']:.2f}x faster than before"
    ] if "before_tuning" in report else []))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="volume edge and detector edge in voxels/pixels")
    parser.add_argument("--views", type=int, default=360, help="number of views over the full circle")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after the warm-up (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="threads for both libraries (default: all cores)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--baseline", type=pathlib.Path, default=DEFAULT_BASELINE,
                        help="earlier JSON of the same sizes to compare our times with (skipped when absent)")
    args = parser.parse_args(argv)
    if args.size < 8 or args.views < 8 or args.repeats < 1:
        parser.error("--size and --views must be at least 8, --repeats at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run(args.size, args.views, args.repeats, args.out, args.threads, args.baseline)
    print(summary(report))
    return report


if __name__ == "__main__":
    main()
