"""``cbct demo``: simulate a dental scan, reconstruct it and write the results (``cbct.demo.run_demo``).

The memory the demo needs (phantom, projections, FDK) is checked before anything is allocated or created, and a
failed demo leaves no empty output folder behind.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

__all__ = ["add_parser", "run", "check_demo_memory"]

DEMO_VIEWS = 360  # cbct.demo.run_demo's default


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="simulate a dental scan, reconstruct it with FDK, write the volume and a preview",
                       description="A first look: simulates a noisy scan of the procedural dental phantom, reconstructs "
                                   "it with FDK and writes the volume (HDF5) and a PNG preview of three slices to --out. "
                                   "Prints a JSON summary (sizes, timings, PSNR against the phantom).")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("cbct-demo"), help="output folder (default cbct-demo)")
    p.add_argument("--size", type=int, default=64, help="voxels per side (default 64; 128 or more for a nicer image)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom and the noise (default 0)")
    p.set_defaults(func=run)
    return p


def check_demo_memory(size: int, n_views: int = DEMO_VIEWS) -> None:
    """Refuse a demo ``size`` that is not a whole number >= 16 or whose simulation and FDK do not fit in memory."""
    from cbct.simulation.scans import scan_geometry
    from cbct.memory import check_memory, fdk_bytes, simulation_bytes
    from cbct.phantoms.dental import dental_phantom_grid

    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"--size must be a whole number of at least 16 voxels, got {size!r}")
    grid = dental_phantom_grid(size)
    geom = scan_geometry(grid, n_views=n_views)
    need = simulation_bytes(grid.shape, n_views, geom.detector_shape) + fdk_bytes(grid.shape, n_views, geom.detector_shape)
    check_memory(need, f"the demo at --size {size} ({size}^3 voxels, {n_views} views of {geom.detector_shape[0]} x "
                       f"{geom.detector_shape[1]} pixels, simulated and reconstructed)")


def run(args: argparse.Namespace) -> int:
    try:
        from cbct.demo import run_demo
    except ImportError as exc:
        raise RuntimeError(f"the demo (cbct.demo.run_demo) is not available in this build: {exc}") from None
    check_demo_memory(args.size)
    out = pathlib.Path(args.out)
    existed = out.exists()
    try:
        summary = run_demo(out, size=args.size, seed=args.seed)
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
        raise
    print(json.dumps(summary, indent=2, default=str))
    return 0
