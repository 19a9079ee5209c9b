"""``cbct simulate``: make a scan from a phantom or a volume file, optionally sparse, with motion and noise.

:func:`simulate_scan` is the library function (also used by ``simulate:`` entries of data manifests).
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
from typing import Any

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid

log = logging.getLogger(__name__)

__all__ = ["simulate_scan", "scan_geometry", "add_parser", "run", "PHANTOMS"]

PHANTOMS = ("shepp-logan", "dental")
DEFAULT_DSO = 500.0  # mm, dental CBCT source to axis
DEFAULT_DSD = 700.0  # mm, source to detector


def _missing(module: str, what: str, exc: ImportError) -> RuntimeError:
    return RuntimeError(f"{what} needs {module}, which cannot be imported here ({exc}); is this cbct build complete?")


def scan_geometry(grid: VolumeGrid, *, n_views: int, dso: float = DEFAULT_DSO, dsd: float = DEFAULT_DSD,
                  arc_deg: float = 360.0, pixel_size: float | None = None,
                  detector_shape: tuple[int, int] | None = None) -> ConeGeometry:
    """A circular scan whose detector covers ``grid`` (5 % margin); pixels default to magnified voxels."""
    radius = float(np.hypot(grid.size[1], grid.size[2]) / 2 + np.hypot(grid.offset[1], grid.offset[2]))
    half_height = grid.size[0] / 2 + abs(grid.offset[0])
    if radius >= dso:
        raise ValueError(f"the volume (radius {radius:.1f} mm in the axial plane) does not fit inside the {dso} mm orbit")
    pixel = float(pixel_size if pixel_size is not None else dsd / dso * min(grid.voxel_size))
    if detector_shape is None:
        width = 1.05 * 2 * dsd * radius / np.sqrt(dso**2 - radius**2)
        height = 1.05 * 2 * half_height * dsd / (dso - radius)
        detector_shape = (int(np.ceil(height / pixel)), int(np.ceil(width / pixel)))
    return ConeGeometry.circular(dso=dso, dsd=dsd, detector_shape=detector_shape, detector_pixel_size=pixel,
                                 volume_shape=grid.shape, voxel_size=grid.voxel_size, volume_offset=grid.offset,
                                 n_views=n_views, arc=np.radians(arc_deg))


def _check_arguments(*, size: int, fov: float, views: int, arc_deg: float, dso: float, dsd: float, downsample: int,
                     sparse: int | None, noise: float | None) -> None:
    """Refuse impossible requests before anything is allocated (each message names the argument)."""
    def whole(name: str, value: Any, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")

    whole("size", size, 2)
    whole("views", views, 1)
    whole("downsample", downsample, 1)
    if sparse is not None:
        whole("sparse", sparse, 1)
    for name, value in (("fov", fov), ("dso", dso), ("dsd", dsd), ("arc_deg", arc_deg)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if arc_deg > 360:
        raise ValueError(f"arc_deg must be at most 360, got {arc_deg}")
    if dsd <= dso:
        raise ValueError(f"dsd ({dsd} mm) must exceed dso ({dso} mm): the detector lies beyond the rotation axis")
    if noise is not None and (not isinstance(noise, (int, float)) or isinstance(noise, bool) or not noise > 0):
        raise ValueError(f"noise (photons per pixel, I0) must be a positive number, got {noise!r}")


def _downsample(data: np.ndarray, grid: VolumeGrid, factor: int) -> tuple[np.ndarray, VolumeGrid]:
    if factor == 1:
        return data, grid
    shape = tuple(s // factor for s in data.shape)
    if min(shape) < 1:
        raise ValueError(f"downsample factor {factor} is larger than the volume {data.shape}")
    cut = data[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor]
    pooled = cut.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))
    return pooled.astype(np.float32), VolumeGrid(shape, tuple(d * factor for d in grid.voxel_size), grid.offset)


def simulate_scan(
    *,
    phantom: str | None = "shepp-logan",
    volume: Any = None,
    volume_format: str | None = None,
    volume_options: dict[str, Any] | None = None,
    scale: float | None = None,
    flip: list[str] | tuple[str, ...] = (),
    downsample: int = 1,
    size: int = 64,
    fov: float = 80.0,
    views: int = 180,
    arc_deg: float = 360.0,
    dso: float = DEFAULT_DSO,
    dsd: float = DEFAULT_DSD,
    sparse: int | None = None,
    motion: str | None = None,
    max_rotation_deg: float = 2.0,
    max_translation_mm: float = 2.0,
    noise: float | None = None,
    electronic_sigma: float = 0.0,
    raw: bool = False,
    metal: bool = False,
    seed: int = 0,
    id: str = "simulated",
):
    """Simulate a circular cone-beam scan and return it as a :class:`cbct.Scan` (ground truth in ``reference``).

    Args:
        phantom: ``"shepp-logan"`` (exact analytic projections) or ``"dental"`` (procedural phantom, projected
            with the Joseph projector); ignored when ``volume`` is given.
        volume: a :class:`cbct.io.Volume`, or a path read with :func:`cbct.io.read_volume` (DICOM series, NIfTI,
            HDF5, MetaImage, .mat) with ``volume_format``/``volume_options``; values must be mm⁻¹ after ``scale``.
        scale: multiply the input volume (e.g. 1.9e-5 for ``head.mha`` units).
        flip: axes of the input volume to reverse (``"z"``, ``"y"``, ``"x"``), to bring it into cbct's frame
            (``+z`` towards the top of the head, face towards ``-y``); e.g. ``["z", "y"]`` for ``head.mha``.
        downsample: average ``downsample``³ blocks of the input volume first.
        size, fov: phantom grid: ``size``³ voxels over ``fov`` mm.
        views, arc_deg, dso, dsd: the circular orbit (mm, degrees); the detector is sized to cover the volume.
        sparse: keep every ``sparse``-th view (:func:`cbct.simulation.sparse.sparse_views`).
        motion: rigid patient motion waveform (``jerk``, ``drift``, ``nodding``, ``tilting``, ``tremor``,
            ``mixed``; :func:`cbct.simulation.motion.random_motion`): projections of the moving patient, nominal
            geometry saved.
        max_rotation_deg, max_translation_mm: motion amplitude.
        noise: incident photons per pixel ``I0`` (Poisson + electronic noise, :func:`cbct.simulation.noise.add_noise`).
        electronic_sigma: electronic noise in counts.
        raw: store raw counts with flat/dark frames instead of line integrals (needs ``noise``).
        metal: metal restorations in the dental phantom.
        seed: seeds every random draw (phantom, motion, noise).
        id: scan id.
    """
    from cbct.io.volume import Volume
    from cbct.memory import check_memory, simulation_bytes
    from cbct.operators import project
    from cbct.scan import Scan

    _check_arguments(size=size, fov=fov, views=views, arc_deg=arc_deg, dso=dso, dsd=dsd, downsample=downsample,
                     sparse=sparse, noise=noise)
    rng = np.random.default_rng(seed)
    meta: dict[str, Any] = {"id": id, "simulated": True, "seed": seed}
    if volume is not None:
        from cbct.io import read_volume

        vol = volume if isinstance(volume, Volume) else read_volume(volume, format=volume_format, **(volume_options or {}))
        data = np.asarray(vol.data, dtype=np.float32)
        if scale is not None:
            data = data * np.float32(scale)
        axes = {"z": 0, "y": 1, "x": 2}
        bad = [a for a in flip if a not in axes]
        if bad:
            raise ValueError(f"flip takes axes 'z', 'y', 'x', got {bad}")
        if flip:
            data = np.ascontiguousarray(np.flip(data, axis=tuple(axes[a] for a in flip)))
        data, grid = _downsample(data, vol.grid, int(downsample))
        grid = VolumeGrid(grid.shape, grid.voxel_size)  # centre it on the rotation axis
        if float(data.max()) > 1.0:
            log.warning("input volume reaches %.3g: attenuation in mm^-1 rarely exceeds 1 (pass scale=)", float(data.max()))
        meta["source_volume"] = str(volume) if not isinstance(volume, Volume) else vol.metadata.get("source", "array")
        kind = "volume"
    else:
        if phantom not in PHANTOMS:
            raise ValueError(f"phantom must be one of {', '.join(PHANTOMS)}, got {phantom!r}")
        grid = VolumeGrid(size, fov / size)
        plan = scan_geometry(grid, n_views=views, dso=dso, dsd=dsd, arc_deg=arc_deg)
        check_memory(simulation_bytes(grid.shape, views, plan.detector_shape),
                     f"simulating a {size}^3 {phantom} phantom scanned with {views} views of "
                     f"{plan.detector_shape[0]} x {plan.detector_shape[1]} pixels")
        kind = phantom
        if phantom == "dental":
            try:
                from cbct.phantoms.dental import dental_phantom
            except ImportError as exc:
                raise _missing("cbct.phantoms.dental", "the dental phantom", exc) from None
            data = np.asarray(dental_phantom(grid, rng=seed, metal=metal), dtype=np.float32)
        else:
            from cbct.phantoms import shepp_logan_volume

            data = shepp_logan_volume(grid)
    meta["phantom"] = kind
    geom = scan_geometry(grid, n_views=views, dso=dso, dsd=dsd, arc_deg=arc_deg)
    if kind == "volume":  # the volume is read; its projections are not made yet
        check_memory(simulation_bytes((1, 1, 1), views, geom.detector_shape),
                     f"projecting {meta['source_volume']} with {views} views of {geom.detector_shape[0]} x "
                     f"{geom.detector_shape[1]} pixels")
    acquired = geom
    if motion:
        try:
            from cbct.simulation.motion import random_motion
        except ImportError as exc:
            raise _missing("cbct.simulation.motion", "--motion", exc) from None
        moving = random_motion(geom.n_views, waveform=motion, max_rotation_deg=max_rotation_deg,
                               max_translation_mm=max_translation_mm, rng=seed)
        acquired = moving.apply(geom)
        meta["motion"] = {"waveform": motion, "max_rotation_deg": max_rotation_deg,
                          "max_translation_mm": max_translation_mm, "seed": seed,
                          "rotation_vectors": np.asarray(moving.rotation_vectors()).tolist(),
                          "translations_mm": np.asarray(moving.translations).tolist()}
    if kind == "shepp-logan":
        from cbct.phantoms import shepp_logan_projections

        projections = shepp_logan_projections(acquired)  # exact line integrals (half size from the same grid)
    else:
        projections = project(data, acquired)
    if sparse:
        try:
            from cbct.simulation.sparse import sparse_views
        except ImportError as exc:
            raise _missing("cbct.simulation.sparse", "--sparse", exc) from None
        projections, geom, kept = sparse_views(projections, geom, step=int(sparse))
        meta["sparse_step"] = int(sparse)
        meta["sparse"] = {"step": int(sparse), "kept_indices": np.asarray(kept).tolist(), "n_views_full": views}
    reference = Volume(data, grid, {"units": "mm^-1", "phantom": kind})
    if raw:
        if noise is None:
            raise ValueError("raw counts need a photon count: give noise (I0)")
        dark_level = 100.0
        expected = noise * np.exp(-np.asarray(projections, np.float64))
        counts = rng.poisson(expected) + dark_level
        flat = rng.poisson(noise, size=(4, *geom.detector_shape)) + dark_level
        dark = np.full((4, *geom.detector_shape), dark_level)
        if electronic_sigma > 0:
            counts = counts + rng.normal(0.0, electronic_sigma, counts.shape)
            flat = flat + rng.normal(0.0, electronic_sigma, flat.shape)
            dark = dark + rng.normal(0.0, electronic_sigma, dark.shape)
        meta["noise"] = {"i0": noise, "electronic_sigma": electronic_sigma, "dark_level": dark_level}
        return Scan.from_arrays(geom, counts=counts.astype(np.float32), flat=flat.astype(np.float32),
                                dark=dark.astype(np.float32), metadata=meta, reference=reference)
    if noise is not None:
        from cbct.simulation.noise import add_noise

        projections = add_noise(projections, i0=noise, electronic_sigma=electronic_sigma, rng=rng)
        meta["noise"] = {"i0": noise, "electronic_sigma": electronic_sigma}
    return Scan.from_arrays(geom, projections=np.asarray(projections, np.float32), metadata=meta, reference=reference)


# ---------------------------------------------------------------------------------------------------- CLI
def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "simulate", help="make a scan file from a phantom or a volume (sparse views, motion, noise)",
        description="Simulate a circular cone-beam scan and write it as a cbct scan file (HDF5, docs/scan_format.md) "
                    "that `cbct run` and cbct.Scan.read() read. The ground-truth volume is stored with it.",
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
    scan.write(args.out)
    g = scan.geometry
    summary = {"scan": str(args.out), "id": scan.id, "kind": "raw counts" if scan.is_raw else "line integrals",
               "views": g.n_views, "detector": list(g.detector_shape), "volume": list(g.volume.shape),
               "voxel_size_mm": list(g.volume.voxel_size)}
    print(json.dumps(summary, indent=2))
    return 0
