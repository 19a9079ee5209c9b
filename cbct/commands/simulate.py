"""``cbct simulate``: make a scan file from a phantom or a volume file, optionally sparse, with motion and noise.

The library function is :func:`cbct.simulation.scans.simulate_scan` (also behind ``simulate:`` entries of data
manifests); this module only parses the command line and writes the file.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from cbct.io import write_scan
from cbct.simulation.scans import DEFAULT_DSD, DEFAULT_DSO, PHANTOMS, simulate_scan

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "simulate", help="make a scan file from a phantom or a volume (sparse views, motion, noise)",
        description="Simulate a circular cone-beam scan and write it as a cbct scan file (HDF5, docs/scan_format.md) "
                    "that `cbct run` and cbct.read_scan() read. The ground-truth volume is stored with it.",
        epilog="examples:\n"
               "  cbct simulate --out sl.h5                                  # Shepp-Logan, 64^3, 180 views\n"
               "  cbct simulate --phantom dental --metal --noise 2e5 --out dental.h5\n"
               "  cbct simulate --phantom dental --sparse 4 --out sparse.h5  # every 4th view\n"
               "  cbct simulate --phantom dental --motion nodding --out moving.h5\n"
               "  cbct simulate --volume head.mha --scale 1.9e-5 --views 120 --out head.h5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--phantom", choices=PHANTOMS, default="shepp-logan", help="phantom to scan (default: shepp-logan)")
    src.add_argument("--volume", type=pathlib.Path, help="a volume file or DICOM folder to scan instead (mm^-1 after --scale)")
    p.add_argument("--scale", type=float, help="multiply the input volume's values (to get mm^-1)")
    p.add_argument("--flip", nargs="+", choices=("z", "y", "x"), default=(), help="reverse these axes of the input volume")
    p.add_argument("--downsample", type=int, default=1, help="average NxNxN blocks of the input volume first")
    p.add_argument("--out", type=pathlib.Path, required=True, help="scan file to write (.h5)")
    p.add_argument("--id", help="scan id (default: the file stem)")
    p.add_argument("--size", type=int, default=64, help="phantom voxels per side (default 64)")
    p.add_argument("--fov", type=float, default=80.0, help="phantom field of view in mm (default 80)")
    p.add_argument("--views", type=int, default=180, help="number of views (default 180)")
    p.add_argument("--arc", type=float, default=360.0, help="scan arc in degrees (default 360; e.g. 200 for a short scan)")
    p.add_argument("--dso", type=float, default=DEFAULT_DSO, help=f"source to axis distance, mm (default {DEFAULT_DSO:g})")
    p.add_argument("--dsd", type=float, default=DEFAULT_DSD, help=f"source to detector distance, mm (default {DEFAULT_DSD:g})")
    p.add_argument("--sparse", type=int, metavar="STEP", help="keep every STEP-th view")
    p.add_argument("--motion", metavar="WAVEFORM", help="patient motion: jerk, drift, nodding, tilting, tremor or mixed")
    p.add_argument("--max-rotation-deg", type=float, default=2.0, help="motion: largest rotation (default 2)")
    p.add_argument("--max-translation-mm", type=float, default=2.0, help="motion: largest translation (default 2)")
    p.add_argument("--noise", type=float, metavar="I0", help="photons per detector pixel (Poisson noise); none by default")
    p.add_argument("--electronic-sigma", type=float, default=0.0, help="electronic noise in counts (default 0)")
    p.add_argument("--raw", action="store_true", help="store raw counts with flat/dark frames (needs --noise)")
    p.add_argument("--metal", action="store_true", help="dental phantom: add metal restorations")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to overwrite it")
    scan = simulate_scan(
        phantom=None if args.volume else args.phantom, volume=args.volume, scale=args.scale, flip=args.flip, downsample=args.downsample,
        size=args.size, fov=args.fov, views=args.views, arc_deg=args.arc, dso=args.dso, dsd=args.dsd,
        sparse=args.sparse, motion=args.motion, max_rotation_deg=args.max_rotation_deg,
        max_translation_mm=args.max_translation_mm, noise=args.noise, electronic_sigma=args.electronic_sigma,
        raw=args.raw, metal=args.metal, seed=args.seed, id=args.id or args.out.stem.split(".")[0],
    )
    write_scan(scan, args.out)
    g = scan.geometry
    summary = {"scan": str(args.out), "id": scan.id, "kind": "raw counts" if scan.is_raw else "line integrals",
               "views": g.n_views, "detector": list(g.detector_shape), "volume": list(g.volume.shape),
               "voxel_size_mm": list(g.volume.voxel_size)}
    print(json.dumps(summary, indent=2))
    return 0
