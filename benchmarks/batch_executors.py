"""Batch executors compared: 8 simulated 96^3 scans through ``cbct run``'s engine with the local executor (1 and 2
workers) and with Ray (a local cluster, one CPU per scan), and the overhead per scan of Ray over local.

    python benchmarks/batch_executors.py --json benchmarks/results/batch_executors.json

The scans are simulated once (HDF5 files, line integrals with noise) and listed in a manifest; each configuration
writes a fresh output folder (pipeline: preprocess, FDK with a Hann ramp, HDF5 export). Wall time is that of
``cbct.run_batch`` (worker start-up included; the Ray cluster's own start is timed apart, once). The volumes of every
configuration are checked to be identical, bit for bit. Overhead of Ray per scan = (wall of Ray - wall of local with
2 workers) / scans, both with two scans at a time; and, less sensitive to other load, the difference of the time per
scan spent outside the worker's ``run_job`` (wall x concurrent slots - the scans' own seconds, per scan). The machine's
load average is recorded: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import yaml

PIPELINE = {"name": "fdk_h5", "stages": [{"stage": "preprocess"}, {"stage": "fdk", "params": {"filter": "hann"}},
                                         {"stage": "export", "params": {"formats": ["hdf5"]}}]}


def make_inputs(folder: pathlib.Path, n: int, size: int, views: int) -> tuple[pathlib.Path, pathlib.Path]:
    from cbct.io import write_scan
    from cbct.simulation.scans import simulate_scan

    scans = []
    for i in range(n):
        path = folder / f"scan{i}.h5"
        write_scan(simulate_scan(phantom="dental" if i % 2 else "shepp-logan", size=size, views=views, noise=2e5,
                                 seed=i, id=f"scan{i}"), path)
        scans.append({"id": f"scan{i}", "path": str(path)})
    manifest = folder / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"name": "bench", "scans": scans}))
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(PIPELINE))
    return manifest, pipeline


def run(manifest: pathlib.Path, pipeline: pathlib.Path, out: pathlib.Path, **options) -> dict:
    from cbct.batch import run_batch

    t0 = time.perf_counter()
    summary = run_batch(manifest, pipeline, out, **options)
    wall = time.perf_counter() - t0
    if summary["counts"]["ok"] != len(summary["scans"]):
        raise RuntimeError(f"not every scan finished: {summary['counts']}")
    work = [json.loads((out / s["id"] / "result.json").read_text())["seconds"] for s in summary["scans"]]
    return {"wall_s": wall, "scan_s_sum": sum(work), "scan_s_median": statistics.median(work)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--views", type=int, default=180)
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration (the median is reported)")
    parser.add_argument("--json", type=pathlib.Path, help="write the results here")
    args = parser.parse_args()
    import ray

    from cbct.batch import ResultStore

    work = pathlib.Path(tempfile.mkdtemp(prefix="cbct-bench-"))
    os.environ.setdefault("RAY_TMPDIR", str(work))
    t0 = time.perf_counter()
    manifest, pipeline = make_inputs(work, args.scans, args.size, args.views)
    print(f"simulated {args.scans} scans of {args.size}^3 in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    configs = {"local_1_worker": {"workers": 1}, "local_2_workers": {"workers": 2}, "ray_2_cpus": {"executor": "ray"}}
    slots = {"local_1_worker": 1, "local_2_workers": 2, "ray_2_cpus": 2}
    results: dict[str, dict] = {}
    reference = None
    load_before = os.getloadavg()
    ray_start = None
    for name, options in configs.items():
        if options.get("executor") == "ray":  # started only now: its idle processes do not disturb the local runs
            t0 = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ray_start = time.perf_counter() - t0
        runs = []
        for r in range(args.repeat):
            out = work / f"{name}-{r}"
            runs.append(run(manifest, pipeline, out, **options))
            got = ResultStore(out).volumes()
            if reference is None:
                reference = got
            elif sorted(got) != sorted(reference) or any(not np.array_equal(got[k], reference[k]) for k in reference):
                raise RuntimeError(f"{name}: volumes differ from local_1_worker")
            print(f"{name} run {r + 1}: {runs[-1]['wall_s']:.2f} s", file=sys.stderr)
        # time per scan spent outside run_job (start-up, scheduling, transfers, records), with `slots` at a time
        outside = statistics.median((x["wall_s"] * slots[name] - x["scan_s_sum"]) / args.scans for x in runs)
        results[name] = {"wall_s_median": statistics.median(x["wall_s"] for x in runs),
                         "outside_scan_s_per_scan": round(outside, 3),
                         "wall_s_runs": [round(x["wall_s"], 3) for x in runs],
                         "scan_s_median": statistics.median(x["scan_s_median"] for x in runs),
                         "per_scan_wall_s": statistics.median(x["wall_s"] for x in runs) / args.scans, **options}
    ray.shutdown()
    overhead = (results["ray_2_cpus"]["wall_s_median"] - results["local_2_workers"]["wall_s_median"]) / args.scans
    outside = results["ray_2_cpus"]["outside_scan_s_per_scan"] - results["local_2_workers"]["outside_scan_s_per_scan"]
    report = {
        "benchmark": "batch_executors", "command": "python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "ray": ray.__version__, "gpu": None},
        "scans": args.scans, "size": args.size, "views": args.views, "repeat": args.repeat,
        "pipeline": "preprocess, fdk (hann), export hdf5", "ray_cluster_start_s": round(ray_start, 2) if ray_start is not None else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "results": results, "ray_overhead_per_scan_s": round(overhead, 3),
        "ray_overhead_outside_scan_per_scan_s": round(outside, 3),
        "volumes_identical": True, "target_overhead_per_scan_s": 0.5,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
