"""Rigid motion estimation on SBP-MAC training scans: PSNR of FDK with the nominal, estimated and true motion.

    python benchmarks/motion_estimation.py --config configs/sbp_mac_cpu.yaml [--set prior=0.1 --set smoothness=0]

Scans: five training specs of the config (seeds 1000-1004, one per training waveform), simulated as in
``cbct.sbp_mac.data`` with the config's motion bounds, noise level drawn from its ``i0`` range. Prints one line per
scan and writes JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import time

import numpy as np
import yaml

from cbct.fdk import fdk
from cbct.motion_estimation import MotionEstimationConfig, estimate_rigid_motion
from cbct.operators import project
from cbct.sbp_mac import data
from cbct.sbp_mac.inference import fov_mask, volume_metrics

log = logging.getLogger("motion_estimation")

SCANS = [("dental", 1000, "jerk"), ("ellipsoids", 1001, "drift"), ("tigre_head", 1002, "nodding"),
         ("dental", 1003, "tremor"), ("ellipsoids", 1004, "mixed")]


def run(scan: data.ScanConfig, settings: MotionEstimationConfig, mixed_kinds: tuple[str, ...]) -> list[dict]:
    mask = fov_mask(scan.volume_shape, min(scan.volume_shape[1:]) / 2 - scan.fov_margin_mm / scan.voxel_size)
    rows = []
    for source, seed, waveform in SCANS:
        sim = data.simulate_scan(data.SampleSpec(source, seed, waveform, mixed_kinds), scan)
        geom, measured = sim.geometry, sim.projections
        reference = fdk(project(sim.volume, geom), geom, filter=scan.filter)
        t0 = time.perf_counter()
        estimated = estimate_rigid_motion(measured, geom, settings)
        seconds = time.perf_counter() - t0

        def score(g) -> float:
            return volume_metrics(fdk(measured, g, filter=scan.filter), reference, mask)["psnr"]

        row = {"source": source, "seed": seed, "waveform": waveform, "fdk": score(geom),
               "estimated": score(estimated.apply(geom)), "oracle": score(sim.motion.apply(geom)), "seconds": seconds}
        log.info("%s %s: FDK %.2f dB, estimated motion %.2f dB, true motion %.2f dB (%.1f s)", source, waveform,
                 row["fdk"], row["estimated"], row["oracle"], seconds)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/sbp_mac_cpu.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an estimation setting")
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = yaml.safe_load(pathlib.Path(args.config).read_text())
    scan = data.ScanConfig.from_dict(cfg["data"]["scan"])
    settings = dict(scan.motion_estimation or {})
    for item in args.set:
        key, value = item.split("=", 1)
        settings[key] = yaml.safe_load(value)
    rows = run(scan, MotionEstimationConfig.from_dict(settings), tuple(cfg["data"]["train"]["mixed_kinds"]))
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("fdk", "estimated", "oracle")}
    log.info("mean: FDK %.2f dB, estimated motion %.2f dB, true motion %.2f dB", means["fdk"], means["estimated"], means["oracle"])
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"settings": settings, "rows": rows, "means": means}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
