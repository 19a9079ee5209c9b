"""FDK redundancy weights on full circles with holes, sparse views and short scans, against the analytic phantom.

PSNR (peak: the phantom's maximum) inside the field of view (the cylinder every view sees, the central half of the
slices) of FDK from exact Shepp-Logan line integrals (``cbct.phantoms.shepp_logan_projections``), 360 views over a
full circle thinned to every ``step``-th view, with one hole of ``hole`` degrees cut from 100 degrees on, for:

- ``plain``: 1/2 for every ray, angular weights across the holes (the old ``short_scan=False``);
- ``parker``: Parker weights over the arc after the largest gap (``short_scan=True``; the old automatic choice
  when the largest gap exceeded 20 degrees);
- ``before``: what the old automatic rule chose (``parker`` above a 20 degree gap, else ``plain``);
- ``now``: the automatic choice (``short_scan=None``): per-ray hole weights for a full circle with holes.

    python benchmarks/fdk_redundancy.py [--noise I0] [--filter ram-lak] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from unittest import mock

import numpy as np

import cbct
from cbct.fdk import weights
from cbct.phantoms import shepp_logan_projections, shepp_logan_volume

OLD_SHORT_SCAN_GAP = np.radians(20.0)


def geometry(n_views: int = 360) -> cbct.ConeGeometry:
    return cbct.ConeGeometry.circular(dso=400.0, dsd=600.0, detector_shape=(64, 128), detector_pixel_size=1.2,
                                      volume_shape=64, voxel_size=1.0, n_views=n_views)


def fov_mask(geom: cbct.ConeGeometry) -> np.ndarray:
    """Voxels every view sees (2 voxels inside the fan's circle), in the central half of the slices."""
    nz, ny, nx = geom.volume.shape
    radius = 400.0 * np.sin(np.arctan(64 * 1.2 / 600.0)) - 2.0
    y, x = np.mgrid[:ny, :nx] - (ny - 1) / 2
    mask = np.zeros(geom.volume.shape, bool)
    mask[nz // 4: 3 * nz // 4] = x**2 + y**2 <= radius**2
    return mask


def psnr(rec: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    rmse = float(np.sqrt(np.mean((rec[mask] - truth[mask]) ** 2)))
    return 20 * np.log10(float(truth[mask].max()) / rmse)


def plain_fdk(p: np.ndarray, g: cbct.ConeGeometry, filt: str) -> np.ndarray:
    """FDK with 1/2 for every ray and the holes covered by angular weights (no holes detected)."""
    with mock.patch.object(weights, "HOLE_MIN_GAP", np.inf):
        return cbct.fdk(p, g, filter=filt, short_scan=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, default=0.0, help="photons per pixel (Poisson noise); 0: none")
    ap.add_argument("--filter", default="ram-lak")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    full = geometry()
    mask = fov_mask(full)
    truth = shepp_logan_volume(full.volume, half_size=30, supersample=2)
    proj = shepp_logan_projections(full, half_size=30)
    if args.noise > 0:
        counts = np.random.default_rng(0).poisson(args.noise * np.exp(-proj))
        proj = (-np.log(np.maximum(counts, 1) / args.noise)).astype(np.float32)
    rows = []
    print(f"| views | hole (deg) | kind | plain | parker | before | now | now - before |")
    print("|---|---|---|---|---|---|---|---|")
    for step in (1, 4, 8):
        for hole in (0, 10, 30, 60, 90):
            idx = np.arange(0, 360, step)
            deg = np.degrees(full.angles[idx])
            keep = idx[~((deg >= 100) & (deg < 100 + hole))]
            g, p = full[keep], proj[keep]
            sorted_deg = np.sort(np.degrees(g.angles))
            old_short = np.max(np.diff(np.append(sorted_deg, sorted_deg[0] + 360))) > np.degrees(OLD_SHORT_SCAN_GAP)
            res = {"plain": psnr(plain_fdk(p, g, args.filter), truth, mask),
                   "parker": psnr(cbct.fdk(p, g, filter=args.filter, short_scan=True), truth, mask),
                   "now": psnr(cbct.fdk(p, g, filter=args.filter), truth, mask)}
            res["before"] = res["parker"] if old_short else res["plain"]
            kind = weights.geometry_coverage(g).kind
            rows.append({"views": len(keep), "step": step, "hole_deg": hole, "kind": kind, **res})
            print(f"| {len(keep)} (every {step}) | {hole} | {kind} | {res['plain']:.2f} | {res['parker']:.2f} | "
                  f"{res['before']:.2f} | {res['now']:.2f} | {res['now'] - res['before']:+.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"noise_i0": args.noise, "filter": args.filter, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
