"""GPU benchmark of the CUDA operators: backprojection GUPS, forward-projection samples/s, FDK end to end,
segmented backprojection (K = 8), peak memory, and the half-precision / texture-filtering variants.

    python benchmarks/gpu_benchmark.py                      # 512³ volume, 360 views of 512², 10 timed repeats
    python benchmarks/gpu_benchmark.py --size 128 --views 90 --repeats 5     # a quick smoke run

Method (see the device notes' METHOD.md): inputs are random (never zeros) and live on the device; each measurement
is ``warmup`` untimed calls (compilation, module load, FFT plans) then ``repeats`` calls timed with CUDA events on
the current stream; the JSON holds the median, min and max in ms and the rates derived from the median. Floors
are counted, not assumed: bytes each operation must move at least (inputs read once, outputs written once) over
the measured device-to-device copy bandwidth, and the work counts (voxel updates, ray samples). Accuracy is
measured on the same run: each variant against the exact float32 kernel at full size, and the exact kernels
against the float64 CPU twin at ``--check-size``. The JSON names the GPU, driver, CUDA and CuPy versions and the
kernels' register counts (when nvcc is available), under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
import pathlib
import platform
import re
import statistics
import sys
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cbct  # noqa: E402
from cbct.cpu.joseph import ray_parameters  # noqa: E402

log = logging.getLogger("benchmarks.gpu_benchmark")

RESULTS = ROOT / "benchmarks" / "results"
# Operations per voxel update of fdk_backproject (exact): 3 FMA for (uw, vw, w), 1 reciprocal, 2 mul, 4 clamp,
# 2 floor, 2 sub, 4 coordinate adds, 3 lerps (2 FMA-equivalents each), 1 mul, 1 FMA; plus 4 texture fetches.
FDK_OPS_PER_UPDATE = 25
FDK_FETCHES_PER_UPDATE = {"exact": 4, "texture": 1}
INTERPOLATIONS = ("exact", "texture")
TEXELS = {"float32": 4, "float16": 2}  # bytes per texel of each texture dtype


def benchmark_geometry(size: int, views: int, detector: int) -> cbct.ConeGeometry:
    """Full circular dental-like scan: DSO 500 mm, DSD 750 mm, a 64 mm cube of ``size``³ voxels, a 96 mm square
    detector of ``detector``² pixels (magnification 1.5: the detector spans the volume), ``views`` views."""
    return cbct.ConeGeometry.circular(
        dso=500.0, dsd=750.0, detector_shape=(detector, detector), detector_pixel_size=96.0 / detector,
        volume_shape=size, voxel_size=64.0 / size, n_views=views,
    )


def time_cuda(fn: Callable[[], Any], *, warmup: int, repeats: int) -> dict[str, float]:
    """Median/min/max milliseconds of ``fn`` over ``repeats`` runs timed with CUDA events after ``warmup`` runs."""
    import cupy as cp

    for _ in range(warmup):
        fn()
    cp.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repeats):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": repeats}


class PeakPoolMemory:
    """Peak bytes in use in CuPy's memory pool while the block runs (a ``cupy.cuda.MemoryHook``); CUDA arrays
    behind textures are allocated outside the pool and are reported separately, computed from their shapes."""

    def __init__(self) -> None:
        import cupy as cp

        class Hook(cp.cuda.MemoryHook):
            name = "PeakPoolMemory"

            def __init__(hook) -> None:
                hook.in_use = 0
                hook.peak = 0

            def malloc_postprocess(hook, device_id, size, mem_size, mem_ptr, pmem_id):
                hook.in_use += mem_size
                hook.peak = max(hook.peak, hook.in_use)

            def free_postprocess(hook, device_id, mem_size, mem_ptr, pmem_id):
                hook.in_use -= mem_size

        self.hook = Hook()

    def __enter__(self) -> PeakPoolMemory:
        self.hook.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hook.__exit__(*exc)

    @property
    def peak(self) -> int:
        return int(self.hook.peak)


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    import cupy as cp

    src = cp.random.random(nbytes // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    t = time_cuda(lambda: dst.__setitem__(Ellipsis, src), warmup=2, repeats=10)
    return 2 * src.nbytes / (t["median_ms"] * 1e-3)


def ray_samples(geom: cbct.ConeGeometry) -> int:
    """Number of plane samples the Joseph projector takes over all rays (same plane ranges as the kernels)."""
    rays = ray_parameters(geom)
    nz, ny, nx = geom.volume.shape
    n = np.array([nx, ny, nz], dtype=np.float64)
    nv, nu = geom.detector_shape
    iv, iu = np.meshgrid(np.arange(nv), np.arange(nu), indexing="ij")
    total = 0
    for view in range(geom.n_views):
        src = rays[view, 0]
        d = rays[view, 1][None, None] + iu[..., None] * rays[view, 2] + iv[..., None] * rays[view, 3] - src
        a = np.argmax(np.abs(d), axis=-1)
        lo = np.zeros(a.shape)
        hi = np.take(n - 1, a)
        r_a = np.take_along_axis(d, a[..., None], -1)[..., 0]
        s_a = src[a]
        for axis in range(3):
            other = axis != a
            slope = d[..., axis] / r_a
            c0 = src[axis] - s_a * slope
            with np.errstate(divide="ignore", invalid="ignore"):
                t1 = (-1.0 - c0) / slope
                t2 = (n[axis] - c0) / slope
            inside = (c0 > -1) & (c0 < n[axis])
            lo_ax = np.where(slope == 0, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
            hi_ax = np.where(slope == 0, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
            lo = np.where(other, np.maximum(lo, lo_ax), lo)
            hi = np.where(other, np.minimum(hi, hi_ax), hi)
        count = np.floor(hi) - np.ceil(lo) + 1
        total += int(np.clip(count, 0, None).sum())
    return total


def gpu_description() -> dict[str, Any]:
    import cupy as cp

    device = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(device.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = cp.cuda.runtime.memGetInfo()
    return {
        "name": name,
        "compute_capability": device.compute_capability,
        "multiprocessors": props.get("multiProcessorCount"),
        "l2_bytes": props.get("l2CacheSize"),
        "memory_bytes": int(total),
        "free_bytes_at_start": int(free),
        "driver_version": cp.cuda.runtime.driverGetVersion(),
        "runtime_version": cp.cuda.runtime.runtimeGetVersion(),
        "cupy_version": cp.__version__,
    }


def kernel_registers() -> dict[str, Any]:
    """Registers/spills per kernel from nvcc for sm_90 (empty without nvcc)."""
    from cbct.cuda.offline import find_nvcc, nvcc_resource_usage
    from cbct.cuda.sources import KERNEL_FILES

    if find_nvcc() is None:
        return {}
    report = {}
    for file in KERNEL_FILES:
        kernels, _ = nvcc_resource_usage(file, "sm_90")
        for k in kernels:
            report[k.name] = {"registers": k.registers, "stack_frame": k.stack_frame, "spill_stores": k.spill_stores}
    return report


def rel(a: Any, b: Any) -> float:
    import cupy as cp

    a = cp.asarray(a, dtype=cp.float64)
    b = cp.asarray(b, dtype=cp.float64)
    return float(cp.linalg.norm(a - b) / cp.linalg.norm(b))


def accuracy_against_cpu(size: int, views: int) -> dict[str, float]:
    """Relative L2 errors of the GPU kernels (float32, exact interpolation) against the float64 CPU twin."""
    import cupy as cp

    import cbct.cuda.kernels
    from cbct.cpu import kernels as cpu
    from cbct.phantoms import shepp_logan_projections, shepp_logan_volume

    geom = benchmark_geometry(size, views, size)
    volume = shepp_logan_volume(geom.volume, half_size=30.0).astype(np.float64)
    proj = shepp_logan_projections(geom, half_size=30.0).astype(np.float64)
    filtered, fgeom = cbct.fdk_filter(proj, geom)
    out = {}
    ref_bp = cpu.backproject_fdk(filtered, fgeom)[0]
    for label, kwargs in {"exact": {}, "half": {"texture_dtype": "float16"}, "texture": {"interpolation": "texture"}}.items():
        gpu = cbct.cuda.kernels.backproject_fdk(cp.asarray(filtered, dtype=cp.float32), fgeom, **kwargs)[0]
        out[f"fdk_backprojection_{label}"] = rel(gpu, ref_bp)
    ref_fp = cpu.project(volume, geom)
    for label, kwargs in {"exact": {}, "half": {"texture_dtype": "float16"}, "texture": {"interpolation": "texture"}}.items():
        gpu = cbct.cuda.kernels.project(cp.asarray(volume, dtype=cp.float32), geom, **kwargs)
        out[f"projection_{label}"] = rel(gpu, ref_fp)
    out["matched_backprojection"] = rel(
        cbct.cuda.kernels.backproject_matched(cp.asarray(proj, dtype=cp.float32), geom), cpu.backproject_matched(proj, geom)
    )
    out["fdk"] = rel(cbct.fdk(cp.asarray(proj, dtype=cp.float32), geom), cbct.fdk(proj, geom))
    return out


class DeviceScan(NamedTuple):
    """Random float32 scan data on the device; ``filtered``: FDK-filtered ``projections``, to backproject with ``fgeom``."""

    geom: cbct.ConeGeometry
    fgeom: cbct.ConeGeometry
    volume: Any
    projections: Any
    filtered: Any


class Entry(NamedTuple):
    """One timed operation: ``fn`` and its work counts, floor bytes and texture bytes."""

    fn: Callable[[], Any]
    work: dict[str, float]
    floor_bytes: int
    texture_bytes: int


def device_scan(size: int, views: int, detector: int, seed: int) -> DeviceScan:
    """Random inputs on the device (never zeros) for :func:`benchmark_geometry`; needs CuPy and a GPU."""
    import cupy as cp

    geom = benchmark_geometry(size, views, detector)
    rng = cp.random.default_rng(seed)
    volume = rng.random(geom.volume.shape, dtype=cp.float32) * 0.02
    projections = rng.random(geom.projection_shape, dtype=cp.float32)
    filtered, fgeom = cbct.fdk_filter(projections, geom)
    return DeviceScan(geom, fgeom, volume, projections, filtered)


def entries(scan: DeviceScan, samples: int, names: Collection[str] | None = None) -> dict[str, Entry]:
    """The timed operations of the benchmark (all, or those in ``names``), in order; ``samples`` is
    :func:`ray_samples` of the scan."""
    import cbct.cuda.kernels as kernels
    from cbct.cuda import fdk_host

    geom, fgeom, volume, projections, filtered = scan.geom, scan.fgeom, scan.volume, scan.projections, scan.filtered
    n_views, nv, nu = geom.projection_shape
    voxels = int(np.prod(geom.volume.shape))
    updates = voxels * n_views
    proj_bytes, vol_bytes = filtered.nbytes, voxels * 4
    out: dict[str, Entry] = {}
    for interp, tdtype in itertools.product(INTERPOLATIONS, TEXELS):
        out[f"fdk_backprojection[{interp},{tdtype}]"] = Entry(
            lambda i=interp, d=tdtype: kernels.backproject_fdk(filtered, fgeom, interpolation=i, texture_dtype=d),
            {"voxel_updates_count": updates, "texture_fetches_count": updates * FDK_FETCHES_PER_UPDATE[interp]},
            proj_bytes + vol_bytes, n_views * nv * fgeom.detector_shape[1] * TEXELS[tdtype],
        )
    starts = cbct.operators.segment_starts(n_views, 8)
    out["segmented_backprojection[K=8]"] = Entry(
        lambda: kernels.backproject_fdk(filtered, fgeom, starts), {"voxel_updates_count": updates},
        proj_bytes + 8 * vol_bytes, filtered.nbytes,
    )
    for interp, tdtype in itertools.product(INTERPOLATIONS, TEXELS):
        out[f"forward_projection[{interp},{tdtype}]"] = Entry(
            lambda i=interp, d=tdtype: kernels.project(volume, geom, interpolation=i, texture_dtype=d),
            {"ray_samples_count": samples, "rays_count": n_views * nv * nu},
            vol_bytes + projections.nbytes, voxels * TEXELS[tdtype],
        )
    out["matched_backprojection"] = Entry(
        lambda: kernels.backproject_matched(projections, geom), {"ray_samples_count": samples},
        projections.nbytes + vol_bytes, 0,
    )
    out["fdk_end_to_end[device]"] = Entry(lambda: cbct.fdk(projections, geom), {"voxel_updates_count": updates},
                                          projections.nbytes + vol_bytes, filtered.nbytes)
    if names is None or "fdk_end_to_end[host, streamed]" in names:
        host_projections = projections.get()
        host_out = np.empty(geom.volume.shape, dtype=np.float32)
        out["fdk_end_to_end[host, streamed]"] = Entry(
            lambda: fdk_host(host_projections, geom, out=host_out), {"voxel_updates_count": updates},
            projections.nbytes + vol_bytes, 0,
        )
    if names is not None and set(names) - set(out):
        raise ValueError(f"unknown benchmark entries {sorted(set(names) - set(out))}; expected some of {sorted(out)}")
    return out if names is None else {name: entry for name, entry in out.items() if name in names}


def measure(name: str, entry: Entry, *, bandwidth: float, warmup: int, repeats: int) -> dict[str, Any]:
    """Time one entry (:func:`time_cuda`) with CuPy's pool peak, and log it; rates from the median (GUPS: 1e9
    updates/s; bandwidth: the device copy's bytes/s, for the floor)."""
    import cupy as cp

    cp.get_default_memory_pool().free_all_blocks()
    with PeakPoolMemory() as peak:
        t = time_cuda(entry.fn, warmup=warmup, repeats=repeats)
    seconds = t["median_ms"] * 1e-3
    result = {**t, "pool_peak_bytes": peak.peak, "texture_bytes": entry.texture_bytes, "floor_bytes": entry.floor_bytes,
              "bandwidth_floor_ms": entry.floor_bytes / bandwidth * 1e3}
    for key, count in entry.work.items():
        result[key] = count
        result[key.replace("_count", "_per_s")] = count / seconds
    if "voxel_updates_count" in entry.work:
        result["gups"] = entry.work["voxel_updates_count"] / seconds / 1e9
    rate = f"{result['gups']:.1f} GUPS" if "gups" in result else f"{result.get('ray_samples_per_s', 0) / 1e9:.1f} G samples/s"
    log.info("%-40s %9.2f ms (min %.2f)  %s", name, result["median_ms"], result["min_ms"], rate)
    return result


def scan_sizes(scan: DeviceScan) -> dict[str, Any]:
    n_views, nv, nu = scan.geom.projection_shape
    return {"volume": list(scan.geom.volume.shape), "views": n_views, "detector": [nv, nu],
            "filtered_detector": list(scan.fgeom.detector_shape)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import cbct.cuda.kernels as kernels

    scan = device_scan(args.size, args.views, args.detector, args.seed)
    geom, fgeom, volume, filtered = scan.geom, scan.fgeom, scan.volume, scan.filtered
    bandwidth = copy_bandwidth()
    log.info("device-to-device copy: %.0f GB/s", bandwidth / 1e9)
    log.info("counting ray samples on the host ...")
    samples = ray_samples(geom)
    timing = {"warmup": args.warmup, "repeats": args.repeats}
    results: dict[str, Any] = {}
    for name, entry in entries(scan, samples).items():
        results[name] = measure(name, entry, bandwidth=bandwidth, **timing)
    # accuracy of the variants against the exact float32 kernels, same data, full size
    reference_bp = kernels.backproject_fdk(filtered, fgeom)
    reference_fp = kernels.project(volume, geom)
    variants = {}
    for label, kwargs in {"exact,float16": {"texture_dtype": "float16"}, "texture,float32": {"interpolation": "texture"}}.items():
        variants[f"fdk_backprojection[{label}]"] = rel(kernels.backproject_fdk(filtered, fgeom, **kwargs), reference_bp)
        variants[f"forward_projection[{label}]"] = rel(kernels.project(volume, geom, **kwargs), reference_fp)
    return {
        "benchmark": "gpu_benchmark",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": gpu_description(),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "sizes": scan_sizes(scan),
        "method": {"timer": "CUDA events on the current stream", **timing, "inputs": "random on the device, seed %d" % args.seed},
        "floors": {"copy_bandwidth_bytes_per_s": bandwidth, "voxel_updates": int(np.prod(geom.volume.shape)) * geom.n_views,
                   "ray_samples": samples, "fdk_ops_per_update_estimate": FDK_OPS_PER_UPDATE},
        "results": results,
        "variant_error_vs_exact_float32": variants,
        "accuracy_vs_cpu_float64": accuracy_against_cpu(args.check_size, args.check_views) if args.check_size else {},
        "kernels_sm_90": kernel_registers(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="volume edge in voxels (default 512)")
    parser.add_argument("--views", type=int, default=360, help="number of views (default 360)")
    parser.add_argument("--detector", type=int, default=512, help="detector edge in pixels (default 512)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-size", type=int, default=64, help="size of the accuracy check against the CPU (0: skip)")
    parser.add_argument("--check-views", type=int, default=60)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON path (default: benchmarks/results/gpu_<gpu>_<size>.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from cbct.cuda import is_available

    if not is_available():
        log.error("no CUDA GPU visible to CuPy: nothing to benchmark")
        return 2
    report = run(args)
    slug = re.sub(r"[^a-z0-9]+", "-", report["gpu"]["name"].lower()).strip("-")
    out = args.out or RESULTS / f"gpu_{slug}_{args.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
