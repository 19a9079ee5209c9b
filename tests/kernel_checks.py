"""A compact check of every CUDA kernel specialisation against references computed once on the host: used by the
mutation test (tests/test_kernel_mutations.py), which runs it on the emulated device for each one-line change of
csrc and expects a failure. The references (Numba twins, a NumPy reading of the texture filter) are computed
before any mutant runs, so that a mutant's process only compiles and runs kernels.

Bounds are tight: the exact paths agree with the twins to ~3e-6 (float32 rounding), the texture-filter paths are
checked on smooth data (where 8-bit weights cost ~1e-4) or against the NumPy reading of the filter.
"""

from __future__ import annotations

import faulthandler
import os
from typing import Any

import numpy as np

import cbct
from cbct.cpu import kernels as cpu
from cbct.cpu.voxel_backprojection import index_projection_matrices
from cbct.cuda import sources
from cbct.cuda.emulator import emulated_cupy
from cbct.cuda.emulator.build import SANITIZE_ENV
from cbct.phantoms import shepp_logan_volume

EXACT = 2e-5  # float32 paths against the float64 twins
SMOOTH_FILTER = 2e-3  # texture filter on smooth data against the exact twin
FILTER_READING = 3e-4  # texture-filtered FDK against the NumPy reading of the filter (ties of 1/256 differ)


def half(x: np.ndarray) -> np.ndarray:
    """float16-rounded copy (what a half texture holds), as float32."""
    return x.astype(np.float16).astype(np.float32)


def texture_filtered_fdk_reference(proj: np.ndarray, geom: cbct.ConeGeometry) -> np.ndarray:
    """FDK backprojection as the texture unit filters: bilinear weights rounded to 8 fractional bits (float64)."""
    nz, ny, nx = geom.volume.shape
    n_views, nv, nu = proj.shape
    mats = index_projection_matrices(geom).astype(np.float32)
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    points = np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4).astype(np.float32)
    padded = np.zeros((n_views, nv + 3, nu + 3), np.float32)
    padded[:, 1:nv + 1, 1:nu + 1] = proj
    out = np.zeros(points.shape[0])
    for view in range(n_views):
        uw, vw, w = (points @ mats[view].T).T
        inv_w = np.float32(1) / w
        u, v = np.clip(uw * inv_w, -1, nu), np.clip(vw * inv_w, -1, nv)
        fu, fv = np.floor(u), np.floor(v)
        wu, wv = np.round((u - fu) * 256) / 256, np.round((v - fv) * 256) / 256
        iu, iv = fu.astype(int) + 1, fv.astype(int) + 1
        p = padded[view]
        top = p[iv, iu] * (1 - wu) + p[iv, iu + 1] * wu
        bottom = p[iv + 1, iu] * (1 - wu) + p[iv + 1, iu + 1] * wu
        out += (top * (1 - wv) + bottom * wv) * inv_w * inv_w
    return out.reshape(nz, ny, nx)


def rel(a: Any, b: np.ndarray) -> float:
    """Relative L2 error of ``a`` (NumPy, or a device array with ``.get()``) against the reference ``b``."""
    a = a.get() if hasattr(a, "get") else a
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def tilted(geom: cbct.ConeGeometry, about_x: float, about_y: float) -> cbct.ConeGeometry:
    """The same scan with its orbit turned by ``about_x`` degrees about the x axis, then ``about_y`` about y (a large
    share of the rays then advance fastest along z)."""
    a, b = np.radians(about_x), np.radians(about_y)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return geom.with_rigid_motion(np.repeat((ry @ rx)[None], geom.n_views, 0), np.zeros((geom.n_views, 3)))


def _geometries() -> dict[str, cbct.ConeGeometry]:
    plain = cbct.ConeGeometry.circular(
        dso=300.0, dsd=450.0, detector_shape=(22, 30), detector_pixel_size=(2.4, 2.2), volume_shape=(19, 20, 21),
        voxel_size=(2.0, 1.9, 2.1), n_views=23, volume_offset=(1.5, -2.0, 1.0), detector_offset=(1.2, 0.0),
    )
    steep = tilted(plain, 60.0, 45.0)
    wide = cbct.ConeGeometry.circular(  # more than one block of threads along every axis of both kernels' grids
        dso=300.0, dsd=450.0, detector_shape=(18, 40), detector_pixel_size=(2.2, 2.0), volume_shape=(9, 12, 45),
        voxel_size=(2.0, 2.2, 1.6), n_views=23, volume_offset=(0.5, 1.0, -1.5),
    )
    return {"plain": plain, "steep": steep, "wide": wide}


def smooth_volume(grid: cbct.VolumeGrid) -> np.ndarray:
    """Two Gaussian blobs (widths of several voxels): interpolation-weight rounding costs little on them."""
    nz, ny, nx = grid.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    blob = lambda c, s: np.exp(-(((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2) / (2 * s * s)))  # noqa: E731
    return blob((nx * 0.45, ny * 0.5, nz * 0.55), 3.5) + 0.6 * blob((nx * 0.65, ny * 0.35, nz * 0.4), 2.5)


def prepare_references(seed: int = 7) -> dict[str, Any]:
    """Inputs and host references of every check (runs the Numba twins)."""
    rng = np.random.default_rng(seed)
    refs: dict[str, Any] = {}
    for name, geom in _geometries().items():
        volume = shepp_logan_volume(geom.volume, half_size=16.0).astype(np.float64)
        smooth = smooth_volume(geom.volume)
        proj = rng.normal(size=geom.projection_shape)
        proj[:, 2:5, 3:9] = 1.0  # exact values a kernel might treat specially (0 is skipped by the scatter)
        proj[:, 6, :] = 0.0
        smooth_proj = cpu.project(smooth, geom)
        # launches of 5, 6, 6, 6 views: segments straddle them and change right after a launch's first view
        starts = np.array([0, 1, 1, 12, 23])
        refs[name] = {
            "geom": geom, "volume": volume, "smooth": smooth, "proj": proj, "smooth_proj": smooth_proj,
            "starts": starts,
            "project": cpu.project(volume, geom), "project_half": cpu.project(half(volume), geom),
            "project_smooth": smooth_proj,
            "segments": [cpu.backproject_fdk(np.ascontiguousarray(proj[a:b]), geom[a:b])[0] if b > a else None
                         for a, b in zip(starts[:-1], starts[1:])],
            "fdk_half": cpu.backproject_fdk(half(proj), geom)[0],
            "fdk_smooth": cpu.backproject_fdk(smooth_proj, geom)[0],
            "fdk_filter_reading": texture_filtered_fdk_reference(proj.astype(np.float32), geom),
            "fdk_one_view": cpu.backproject_fdk(np.ascontiguousarray(proj[7:8]), geom[7:8])[0],
            "matched": cpu.backproject_matched(proj, geom),
            "matched_views": cpu.backproject_matched(proj, geom, np.array([1, 2, 9, 20, 22])),
        }
    return refs


def failed_checks(cp: Any, refs: dict[str, Any]) -> list[str]:
    """Run every kernel specialisation on ``cp`` (the emulated device) with small launches (several constant
    refills, slabs, straddling segments); the names of the checks that miss their reference."""
    from cbct.cuda import kernels

    failures: list[str] = []

    def check(name: str, error: float, bound: float) -> None:
        if not error < bound:  # also catches NaN
            failures.append(f"{name}: {error:.3g} >= {bound:.3g}")

    saved = (kernels.MAX_FDK_VIEWS, kernels.MAX_PROJECT_VIEWS, kernels.MAX_MATCHED_VIEWS)
    kernels.MAX_FDK_VIEWS, kernels.MAX_PROJECT_VIEWS, kernels.MAX_MATCHED_VIEWS = 6, 5, 4
    try:
        for case, r in refs.items():
            geom = r["geom"]
            plane = geom.volume.shape[1] * geom.volume.shape[2] * 8
            f32 = lambda x: cp.asarray(x, dtype=cp.float32)  # noqa: E731
            for vpt in (4, 8):
                out = kernels.backproject_fdk(f32(r["proj"]), geom, r["starts"], voxels_per_thread=vpt).get()
                for k, expected in enumerate(r["segments"]):
                    if expected is None:
                        check(f"{case} fdk<{vpt}> empty segment", float(np.abs(out[k]).max()), 1e-30)
                    else:
                        check(f"{case} fdk<{vpt}> segment {k}", rel(out[k], expected), EXACT)
                half_out = kernels.backproject_fdk(f32(r["proj"]), geom, texture_dtype="float16", voxels_per_thread=vpt)
                check(f"{case} fdk<{vpt}> float16", rel(half_out[0], r["fdk_half"]), EXACT)
                filtered = kernels.backproject_fdk(f32(r["proj"]), geom, interpolation="texture", voxels_per_thread=vpt)
                check(f"{case} fdk<{vpt}, texture>", rel(filtered[0], r["fdk_filter_reading"]), FILTER_READING)
                smooth = kernels.backproject_fdk(f32(r["smooth_proj"]), geom, interpolation="texture",
                                                 texture_dtype="float16", voxels_per_thread=vpt)
                check(f"{case} fdk<{vpt}, texture> float16 smooth", rel(smooth[0], r["fdk_smooth"]), SMOOTH_FILTER)
                one = kernels.backproject_fdk(f32(r["proj"][7:8]), geom[7:8], voxels_per_thread=vpt)
                check(f"{case} fdk<{vpt}> one view", rel(one[0], r["fdk_one_view"]), EXACT)
            check(f"{case} project", rel(kernels.project(f32(r["volume"]), geom, memory_limit=plane * 7),
                                          r["project"]), EXACT)
            check(f"{case} project float16", rel(kernels.project(f32(r["volume"]), geom, texture_dtype="float16"),
                                                  r["project_half"]), EXACT)
            for dtype in ("float32", "float16"):
                out = kernels.project(f32(r["smooth"]), geom, interpolation="texture", texture_dtype=dtype,
                                      memory_limit=plane * 7)
                check(f"{case} project texture {dtype} smooth", rel(out, r["project_smooth"]), SMOOTH_FILTER)
            check(f"{case} matched", rel(kernels.backproject_matched(f32(r["proj"]), geom), r["matched"]), EXACT)
            views = np.array([1, 2, 9, 20, 22])
            check(f"{case} matched views", rel(kernels.backproject_matched(f32(r["proj"]), geom, views),
                                                r["matched_views"]), EXACT)
    finally:
        kernels.MAX_FDK_VIEWS, kernels.MAX_PROJECT_VIEWS, kernels.MAX_MATCHED_VIEWS = saved
    return failures


def outcome_in_child(references: dict[str, Any], mutant: tuple[str, str, str] | None) -> int:
    """Run :func:`failed_checks` on the emulated device in a forked child, with ``mutant`` = ``(file, text,
    replacement)`` applied to csrc and the harness built with UndefinedBehaviorSanitizer. 0: every check passed;
    1: a check failed; 2: an exception (e.g. the source does not build); negative: the signal that killed the child
    (a mutant may index past an array, which UBSan turns into an abort, or corrupt its own process)."""
    pid = os.fork()
    if pid == 0:  # the child never returns into its caller
        code = 2
        try:
            faulthandler.disable()  # a crashing mutant is an expected outcome, not a report for the log
            os.environ[SANITIZE_ENV] = "undefined"  # out-of-bounds indexing of a kernel's arrays aborts the child
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1), os.dup2(devnull, 2)
            if mutant is not None:
                file, old, new = mutant
                original = sources.read_source

                def mutated(name: str) -> str:
                    text = original(name)
                    return text.replace(old, new) if name == file else text

                sources.read_source = mutated
                sources.kernel_source.cache_clear()
            with emulated_cupy() as cp:
                code = 1 if failed_checks(cp, references) else 0
        except BaseException:  # noqa: BLE001 - any failure kills the mutant
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
