"""Part 2 of the device check: every kernel specialisation run on the GPU, on the CPU harness (the exact ``csrc``
source compiled with g++ behind a CuPy stand-in, :func:`cbct.cuda.emulator.emulated_cupy`) and against the Numba
CPU twin (:mod:`cbct.cpu.kernels`), on one small scan; relative L2 errors ``‖a − b‖₂ / ‖b‖₂`` in float64.

Each case runs once per side through :mod:`cbct.cuda.kernels` with whatever ``cupy`` is in ``sys.modules``: the
real one on the GPU side, the stand-in inside the harness block. ``memory_limit`` forces several launches (five
view chunks of the FDK backprojection, three z slabs of the projector; the segments straddle the chunks). The twin
runs in float64 on the float64 data; for float16 textures also on the float16-rounded data (the kernel's
arithmetic without the storage error). Texture-filter cases have no exact twin: their error against it is the
filter's error. The harness is single-threaded: at 64³ × 72 views its 14 cases took about 35 s on one core here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, ContextManager, NamedTuple

import numpy as np

import cbct
from cbct.cpu import kernels as cpu
from cbct.phantoms import shepp_logan_projections, shepp_logan_volume

log = logging.getLogger("benchmarks.device_compare")

HARNESS_UNAVAILABLE = "harness unavailable"
SEGMENTS = 8
FDK_LAUNCHES = 5  # view chunks the FDK memory limit asks for (float32 texels; float16 texels take fewer)
PROJECT_SLABS = 3  # z slabs the projector's memory limit asks for (float32 texels)
AGREEMENT = 1e-4  # relative L2 error an exact path may have against the float64 twin (the test suite's bound)
HARNESS_ABORT = ("FileNotFoundError", "HarnessBuildError", "UnsupportedKernelError")  # no point in the next case


class Case(NamedTuple):
    """One kernel specialisation: ``op`` is ``fdk``, ``segmented``, ``project`` or ``matched``; ``options`` the
    keyword options of the :mod:`cbct.cuda.kernels` call."""

    name: str
    kernel: str
    op: str
    options: dict[str, Any]

    @property
    def exact_path(self) -> bool:
        """Software bilinear weights (the twin's algorithm), as opposed to the texture unit's filter."""
        return self.options.get("interpolation", "exact") == "exact"


def cases() -> tuple[Case, ...]:
    """``fdk_backproject<4|8, false|true>`` and ``joseph_project<false|true>`` with float32 and float16 texels,
    ``joseph_backproject``, and the segmented (K = 8) backprojection."""
    out = []
    for hardware in (False, True):
        interp = "texture" if hardware else "exact"
        for vpt in (4, 8):
            for tdtype in ("float32", "float16"):
                kernel = f"fdk_backproject<{vpt}, {str(hardware).lower()}>"
                out.append(Case(f"{kernel}[{tdtype}]", kernel, "fdk",
                                {"interpolation": interp, "texture_dtype": tdtype, "voxels_per_thread": vpt}))
    out.append(Case(f"fdk_backproject<8, false>[float32, K={SEGMENTS}]", "fdk_backproject<8, false>", "segmented",
                    {"interpolation": "exact", "texture_dtype": "float32", "voxels_per_thread": 8}))
    for hardware in (False, True):
        for tdtype in ("float32", "float16"):
            kernel = f"joseph_project<{str(hardware).lower()}>"
            out.append(Case(f"{kernel}[{tdtype}]", kernel, "project",
                            {"interpolation": "texture" if hardware else "exact", "texture_dtype": tdtype}))
    out.append(Case("joseph_backproject", "joseph_backproject", "matched", {}))
    return tuple(out)


class CompareScan(NamedTuple):
    """Float64 host data of one scan: ``volume`` (nz, ny, nx), ``projections`` (views, nv, nu), ``filtered``
    (FDK-filtered, for ``fgeom``), segment starts, and the memory limits (bytes) that force several launches."""

    geom: cbct.ConeGeometry
    fgeom: cbct.ConeGeometry
    volume: np.ndarray
    projections: np.ndarray
    filtered: np.ndarray
    starts: np.ndarray
    fdk_memory_limit: int
    project_memory_limit: int
    seed: int


def compare_geometry(size: int, views: int) -> cbct.ConeGeometry:
    """A full circular scan of a ``size``³ grid spanning about 64 mm (slightly anisotropic voxels, offset volume)
    on a non-square detector of (1.25 size, 1.5 size) pixels, offset by 1.2 mm: asymmetric on purpose."""
    voxel = 64.0 / size
    return cbct.ConeGeometry.circular(
        dso=500.0, dsd=750.0, detector_shape=(round(1.25 * size), round(1.5 * size)), detector_pixel_size=1.2 * voxel,
        volume_shape=size, voxel_size=(voxel, 0.95 * voxel, 1.05 * voxel), n_views=views,
        volume_offset=(1.5 * voxel, -2.0 * voxel, voxel), detector_offset=(1.2 * voxel, 0.0),
    )


def compare_scan(size: int, views: int, seed: int) -> CompareScan:
    """Shepp-Logan volume and exact projections plus 1 % uniform noise (``seed``): no zeros, sharp edges."""
    geom = compare_geometry(size, views)
    rng = np.random.default_rng(seed)
    volume = shepp_logan_volume(geom.volume, half_size=28.0).astype(np.float64)
    volume += 0.01 * volume.max() * rng.random(volume.shape)
    projections = shepp_logan_projections(geom, half_size=28.0).astype(np.float64)
    projections += 0.01 * projections.max() * rng.random(projections.shape)
    filtered, fgeom = cbct.fdk_filter(projections, geom)
    _, nv, nu = fgeom.projection_shape
    nz, ny, nx = geom.volume.shape
    return CompareScan(
        geom, fgeom, volume, projections, filtered, cbct.operators.segment_starts(views, SEGMENTS),
        math.ceil(views / FDK_LAUNCHES) * nv * nu * 8, math.ceil(nz / PROJECT_SLABS) * ny * nx * 8, seed,
    )


def run_case(case: Case, scan: CompareScan, xp: Any) -> np.ndarray:
    """Run ``case`` through :mod:`cbct.cuda.kernels` on the ``cupy``-like module ``xp`` (float32 in); float64 out."""
    from cbct.cuda import kernels

    def device(x: np.ndarray) -> Any:
        return xp.asarray(np.ascontiguousarray(x, dtype=np.float32))

    if case.op in ("fdk", "segmented"):
        starts = scan.starts if case.op == "segmented" else None
        out = kernels.backproject_fdk(device(scan.filtered), scan.fgeom, starts, memory_limit=scan.fdk_memory_limit,
                                      **case.options)
        out = out if case.op == "segmented" else out[0]
    elif case.op == "project":
        out = kernels.project(device(scan.volume), scan.geom, memory_limit=scan.project_memory_limit, **case.options)
    elif case.op == "matched":
        out = kernels.backproject_matched(device(scan.projections), scan.geom)
    else:
        raise ValueError(f"unknown op {case.op!r}")
    return np.asarray(out.get(), dtype=np.float64)


def run_twin(case: Case, scan: CompareScan, *, rounded: bool = False) -> np.ndarray:
    """The Numba twin of ``case`` in float64 (``rounded``: on float16-rounded inputs)."""
    def prepare(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float16).astype(np.float64) if rounded else x

    if case.op == "fdk":
        return cpu.backproject_fdk(prepare(scan.filtered), scan.fgeom)[0]
    if case.op == "segmented":
        return cpu.backproject_fdk(prepare(scan.filtered), scan.fgeom, scan.starts)
    if case.op == "project":
        return cpu.project(prepare(scan.volume), scan.geom)
    if case.op == "matched":
        return cpu.backproject_matched(prepare(scan.projections), scan.geom)
    raise ValueError(f"unknown op {case.op!r}")


def rel_l2(a: np.ndarray, b: np.ndarray) -> float | None:
    """‖a − b‖₂ / ‖b‖₂ in float64; None when either holds NaN/inf or the shapes differ."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def load_harness() -> tuple[Callable[[], ContextManager[Any]] | None, str]:
    """``(emulated_cupy, where)``, or ``(None, why)`` until :mod:`cbct.cuda.emulator` provides it."""
    try:
        from cbct.cuda.emulator import emulated_cupy
    except Exception as exc:  # ImportError until the harness lands; anything its import raises
        return None, f"{HARNESS_UNAVAILABLE}: {type(exc).__name__}: {exc}"
    return emulated_cupy, "cbct.cuda.emulator.emulated_cupy"


@contextlib.contextmanager
def real_cupy() -> Iterator[Any]:
    """The real CuPy, with cbct's kernel caches cleared before (a stand-in may have filled them)."""
    _clear_kernel_caches()
    import cupy

    yield cupy


def _clear_kernel_caches() -> None:
    from cbct.cuda import compile as compile_module
    from cbct.cuda import textures

    compile_module._module.cache_clear()
    textures.texture_limits.cache_clear()


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray | None, float, str | None]:
    start = time.perf_counter()
    try:
        return fn(), time.perf_counter() - start, None
    except Exception as exc:  # recorded per case; the other cases still run
        log.exception("case failed")
        return None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"


def scan_record(scan: CompareScan) -> dict[str, Any]:
    return {"volume": list(scan.geom.volume.shape), "voxel_size_mm": list(scan.geom.volume.voxel_size),
            "views": scan.geom.n_views, "detector": list(scan.geom.detector_shape),
            "filtered_detector": list(scan.fgeom.detector_shape), "segments": scan.starts.tolist(),
            "fdk_memory_limit_bytes": scan.fdk_memory_limit, "project_memory_limit_bytes": scan.project_memory_limit,
            "inputs": f"Shepp-Logan + 1 % uniform noise, seed {scan.seed}"}


def compare(
    scan: CompareScan,
    *,
    gpu: Callable[[], ContextManager[Any]] | None = None,
    harness: Callable[[], ContextManager[Any]] | None | str = "load",
    deadline: float = math.inf,
    record: dict[str, Any] | None = None,
    progress: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Run every case on ``gpu`` (None: :func:`real_cupy`), the twin and ``harness`` (``"load"``: :func:`load_harness`; None: unavailable),
    filling ``record`` as it goes (``progress()`` after each step). Harness cases are skipped when the
    ``time.monotonic()`` ``deadline`` is nearer than 1.5 times the previous harness case took."""
    record = {} if record is None else record
    gpu = real_cupy if gpu is None else gpu
    record.update(scan=scan_record(scan), cases={})
    results = record["cases"]
    all_cases = cases()
    gpu_out: dict[str, np.ndarray] = {}
    with gpu() as xp:
        for case in all_cases:
            out, seconds, error = _timed(lambda: run_case(case, scan, xp))
            results[case.name] = {"kernel": case.kernel, "op": case.op, "options": case.options,
                                  "exact_path": case.exact_path, "gpu_seconds": seconds}
            if error:
                results[case.name]["gpu_error"] = error
            else:
                gpu_out[case.name] = out
                results[case.name]["gpu_finite"] = bool(np.isfinite(out).all())
    progress()
    twins: dict[tuple[str, bool], np.ndarray] = {}
    for case in all_cases:
        entry = results[case.name]
        for rounded in (False, True) if case.options.get("texture_dtype") == "float16" else (False,):
            key = (case.op, rounded)
            if key not in twins:
                twins[key], seconds, error = _timed(lambda: run_twin(case, scan, rounded=rounded))
                label = f"{case.op}{'[float16-rounded]' if rounded else ''}"
                record.setdefault("twin_seconds", {})[label] = seconds
                if error:
                    record.setdefault("twin_errors", {})[label] = error
            if case.name in gpu_out and twins[key] is not None:
                entry["error_gpu_vs_twin_rounded_input" if rounded else "error_gpu_vs_twin"] = rel_l2(gpu_out[case.name], twins[key])
    progress()
    if harness == "load":
        harness, where = load_harness()
    else:
        where = "given" if harness is not None else f"{HARNESS_UNAVAILABLE}: none given"
    record["harness"] = {"available": harness is not None, "source" if harness is not None else "reason": where}
    if harness is None:
        return record
    last = 0.0
    try:
        with harness() as hp:
            for case in all_cases:
                if deadline - time.monotonic() < 1.5 * last:
                    results[case.name]["harness_skipped"] = "time budget: the part's deadline is too near"
                    continue
                out, last, error = _timed(lambda: run_case(case, scan, hp))
                entry = results[case.name]
                entry["harness_seconds"] = last
                if error:
                    entry["harness_error"] = error
                    if error.split(":")[0] in HARNESS_ABORT:
                        record["harness"].update(available=False, reason=f"{HARNESS_UNAVAILABLE}: {error}")
                        break
                else:
                    entry["harness_finite"] = bool(np.isfinite(out).all())
                    if case.name in gpu_out:
                        entry["error_gpu_vs_harness"] = rel_l2(gpu_out[case.name], out)
                    twin = twins.get((case.op, False))
                    if twin is not None:
                        entry["error_harness_vs_twin"] = rel_l2(out, twin)
                progress()
    except Exception as exc:  # the stand-in itself failed (no compiler, its import, its set-up)
        log.exception("CPU harness failed")
        record["harness"].update(available=False, reason=f"{HARNESS_UNAVAILABLE}: {type(exc).__name__}: {exc}")
    finally:
        _clear_kernel_caches()  # the stand-in's compiled modules must not serve a later real-CuPy call
    return record


def problems(record: dict[str, Any]) -> list[str]:
    """What in a :func:`compare` record fails the check: errors, NaN/inf, an exact path off its twin by
    :data:`AGREEMENT` or more (float16 textures: on the rounded data). GPU-against-harness errors are recorded,
    not judged: how far NVRTC's contractions and the texture unit may move the result is what this measures."""
    out = [f"{label}: {error}" for label, error in record.get("twin_errors", {}).items()]
    for name, entry in record.get("cases", {}).items():
        out += [f"{name}: {entry[key]}" for key in ("gpu_error", "harness_error") if key in entry]
        out += [f"{name}: {side} output not finite" for side in ("gpu", "harness") if entry.get(f"{side}_finite") is False]
        twin = entry.get("error_gpu_vs_twin_rounded_input", entry.get("error_gpu_vs_twin"))
        if entry.get("exact_path") and twin is not None and twin >= AGREEMENT:
            out.append(f"{name}: GPU vs twin {twin:.2e} >= {AGREEMENT:g}")
    return out
