"""Before/after timing of the CPU kernels in one run: the kernels at an earlier commit against the working tree.

    python benchmarks/cpu_kernels_before_after.py --before c40cbd8 --size 256 --views 90

The earlier ``cbct/cpu/joseph.py`` and ``cbct/cpu/voxel_backprojection.py`` are read with ``git show`` and loaded as
separate modules next to the current ones; both run on the same data, interleaved (warm-up, then ``repeats``
rounds of old and new), so machine load hits both alike. Writes medians, spreads, the speed-ups and the largest
difference between old and new results to ``benchmarks/results/cpu_kernels_before_after.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cbct.cpu import joseph, voxel_backprojection  # noqa: E402
from cbct.phantoms import shepp_logan_volume  # noqa: E402
from cpu_vs_rtk import cpu_model, git_commit, benchmark_geometry, versions  # noqa: E402

log = logging.getLogger("benchmarks.cpu_kernels_before_after")
FILES = {"joseph": "cbct/cpu/joseph.py", "voxel_backprojection": "cbct/cpu/voxel_backprojection.py"}


def load_old(commit: str, folder: pathlib.Path) -> dict:
    """The kernel modules of ``commit``, loaded under private names from copies in ``folder``."""
    modules = {}
    for name, path in FILES.items():
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True, text=True,
                              check=True).stdout
        file = folder / f"old_{name}.py"
        file.write_text(text)
        spec = importlib.util.spec_from_file_location(f"old_{name}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


def interleaved(fns: dict, repeats: int) -> dict:
    """Warm each function up, then time ``repeats`` rounds in which every function runs once."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        arr = np.array(ts)
        out[name] = {"median_s": float(np.median(arr)), "min_s": float(arr.min()), "max_s": float(arr.max()),
                     "times_s": [float(t) for t in ts]}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="c40cbd8", help="git commit of the kernels before tuning")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=90)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "cpu_kernels_before_after.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load_before = os.getloadavg()
    geom = benchmark_geometry(args.size, args.views)
    rng = np.random.default_rng(0)
    volume = np.ascontiguousarray(shepp_logan_volume(geom.volume), dtype=np.float32)
    proj = rng.standard_normal(geom.projection_shape, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.before, pathlib.Path(tmp))
        results = {}
        log.info("FDK backprojection, old and new")
        results["fdk_backprojection"] = interleaved({
            "before": lambda: results.__setitem__("bp_old", old["voxel_backprojection"].backproject_fdk(proj, geom)),
            "after": lambda: results.__setitem__("bp_new", voxel_backprojection.backproject_fdk(proj, geom)),
        }, args.repeats)
        log.info("Joseph projection, old and new")
        results["projector"] = interleaved({
            "before": lambda: results.__setitem__("p_old", old["joseph"].project(volume, geom)),
            "after": lambda: results.__setitem__("p_new", joseph.project(volume, geom)),
        }, args.repeats)

    def rel(a, b):
        return float(np.linalg.norm((a - b).astype(np.float64)) / np.linalg.norm(b.astype(np.float64)))

    report = {
        "benchmark": "cpu_kernels_before_after",
        "before_commit": args.before,
        "after_commit": git_commit(),
        "after_includes_uncommitted_changes": bool(subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", *FILES.values()], capture_output=True, text=True).stdout.strip()),
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "load_average_before": list(load_before),
                    "load_average_after": list(os.getloadavg())},
        "sizes": {"volume": list(geom.volume.shape), "views": geom.n_views, "detector": list(geom.detector_shape)},
        "versions": versions(),
        "repeats": args.repeats,
    }
    n_updates = float(np.prod(geom.volume.shape)) * geom.n_views
    for key, diff in (("fdk_backprojection", rel(results["bp_new"], results["bp_old"])),
                      ("projector", rel(results["p_new"], results["p_old"]))):
        entry = results[key]
        entry["speedup"] = entry["before"]["median_s"] / entry["after"]["median_s"]
        entry["relative_difference_after_vs_before"] = diff
        report[key] = entry
    report["fdk_backprojection"]["gups_after"] = n_updates / report["fdk_backprojection"]["after"]["median_s"] / 1e9
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for key in ("fdk_backprojection", "projector"):
        e = report[key]
        print(f"{key:20s} before {e['before']['median_s']:7.3f} s  after {e['after']['median_s']:7.3f} s  "
              f"speed-up {e['speedup']:.2f}x  (relative difference {e['relative_difference_after_vs_before']:.1e})")
    print(f"load {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}; wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
