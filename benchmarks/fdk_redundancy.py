"""FDK redundancy weights on full circles with holes, sparse and random views, against the phantom.

``--phantom shepp-logan`` (default): PSNR (peak: the phantom's maximum) inside the field of view (the cylinder every
view sees, the central half of the slices) of FDK from exact Shepp-Logan line integrals
(``cbct.phantoms.shepp_logan_projections``), 360 views over a full circle thinned to every ``step``-th view, with one
hole of ``hole`` degrees cut from 100 degrees on. ``--phantom head``: the vendored head CT (``tests/data/head.mha``,
real anatomy, 93 x 64 x 64 voxels of 1.5 x 3.2 x 3.2 mm) projected by cbct's projector (360 views of 96 x 128
pixels of 2.6 mm, DSO 500 mm, DSD 800 mm, half fan 11.7 deg), PSNR inside the head in the central half of the
slices, with the same holes and 45 views at random angles. Methods:

- ``plain``: 1/2 for every ray, angular weights across the holes (the old ``short_scan=False``);
- ``parker``: Parker weights over the arc after the largest gap (``short_scan=True``; the old automatic choice
  when the largest gap exceeded 20 degrees);
- ``before``: what the old automatic rule chose (``parker`` above a 20 degree gap, else ``plain``);
- ``now``: the automatic choice (``short_scan=None``): per-ray hole weights for a full circle with holes.

    python benchmarks/fdk_redundancy.py [--phantom head] [--noise I0] [--filter ram-lak] [--json out.json]
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
    with mock.patch.object(weights, "HOLE_MIN_GAP", np.inf), mock.patch.object(weights, "HOLE_ALWAYS", np.inf):
        return cbct.fdk(p, g, filter=filt, short_scan=False)


def head_case() -> tuple[cbct.ConeGeometry, np.ndarray, np.ndarray, np.ndarray]:
    """Geometry, projections, truth and mask of the head CT (see the module docs)."""
    import pathlib

    from cbct.operators import project
    from cbct.phantoms.real import load_head_mha

    vol, grid = load_head_mha(pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "head.mha")
    geom = cbct.ConeGeometry.circular(dso=500.0, dsd=800.0, detector_shape=(96, 128), detector_pixel_size=2.6,
                                      volume_shape=grid.shape, voxel_size=grid.voxel_size, n_views=360)
    mask = np.zeros(grid.shape, bool)
    mask[grid.shape[0] // 4: 3 * grid.shape[0] // 4] = True
    return geom, np.asarray(project(vol, geom)), vol, mask & (vol > 0.002)


def patterns(full: cbct.ConeGeometry, random_views: bool) -> dict[tuple[str, int], np.ndarray]:
    """Kept view indices: every ``step``-th with a hole from 100 deg on; 45 random views."""
    out = {}
    deg = np.degrees(full.angles)
    for step in (1, 4, 8):
        for hole in (0, 10, 30, 60, 90):
            out[(f"every {step}", hole)] = np.flatnonzero((np.arange(360) % step == 0) & ~((deg >= 100) & (deg < 100 + hole)))
    if random_views:
        for seed in (0, 1, 2):
            out[(f"45 random, seed {seed}", 0)] = np.sort(np.random.default_rng(seed).choice(360, 45, replace=False))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", choices=("shepp-logan", "head"), default="shepp-logan")
    ap.add_argument("--noise", type=float, default=0.0, help="photons per pixel (Poisson noise); 0: none")
    ap.add_argument("--filter", default="ram-lak")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.phantom == "head":
        full, proj, truth, mask = head_case()
    else:
        full = geometry()
        mask = fov_mask(full)
        truth = shepp_logan_volume(full.volume, half_size=30, supersample=2)
        proj = shepp_logan_projections(full, half_size=30)
    if args.noise > 0:
        counts = np.random.default_rng(0).poisson(args.noise * np.exp(-proj))
        proj = (-np.log(np.maximum(counts, 1) / args.noise)).astype(np.float32)
    rows = []
    print("| views | hole (deg) | kind | plain | parker | before | now | now - before |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, hole), keep in patterns(full, args.phantom == "head").items():
        g, p = full[keep], proj[keep]
        sorted_deg = np.sort(np.degrees(g.angles))
        old_short = np.max(np.diff(np.append(sorted_deg, sorted_deg[0] + 360))) > np.degrees(OLD_SHORT_SCAN_GAP)
        res = {"plain": psnr(plain_fdk(p, g, args.filter), truth, mask),
               "parker": psnr(cbct.fdk(p, g, filter=args.filter, short_scan=True), truth, mask),
               "now": psnr(cbct.fdk(p, g, filter=args.filter), truth, mask)}
        res["before"] = res["parker"] if old_short else res["plain"]
        kind = weights.geometry_coverage(g).kind
        rows.append({"pattern": name, "views": len(keep), "hole_deg": hole, "kind": kind, **res})
        print(f"| {len(keep)} ({name}) | {hole} | {kind} | {res['plain']:.2f} | {res['parker']:.2f} | "
              f"{res['before']:.2f} | {res['now']:.2f} | {res['now'] - res['before']:+.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"phantom": args.phantom, "noise_i0": args.noise, "filter": args.filter, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
