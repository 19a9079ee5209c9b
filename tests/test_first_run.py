"""A first run that talks: the CPU kernels' Numba compile is announced, cached, and not repeated by the next process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

import cbct
from cbct.cpu import joseph
from cbct.cpu.compile_notice import announce_compilation


def _cbct(args: list[str], cache_dir, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cbct.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - t0


def test_first_run_announces_the_compile_and_the_second_loads_the_cache(tmp_path) -> None:
    cache = tmp_path / "numba-cache"
    first, first_s = _cbct(["demo", "--size", "16", "--out", str(tmp_path / "a")], cache)
    assert first.returncode == 0, first.stderr
    assert "compiling the CPU kernel for forward projection" in first.stderr, first.stderr
    assert "compiling the CPU kernel for FDK backprojection" in first.stderr, first.stderr
    assert str(cache) in first.stderr  # it says where the builds go
    assert any(cache.rglob("*.nbi")), "no Numba cache index written"
    second, second_s = _cbct(["demo", "--size", "16", "--out", str(tmp_path / "b")], cache)
    assert second.returncode == 0, second.stderr
    assert "compiling" not in second.stderr, second.stderr
    assert second_s < first_s  # loading the cache beats compiling (typically 3-4 s against 15-20 s)


def test_cached_build_seen_in_a_fresh_cache_and_after_a_compile(tmp_path) -> None:
    code = "from cbct.cpu import joseph; from cbct.cpu.compile_notice import has_cached_build; " \
           "print(has_cached_build(joseph._project_kernel))"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # nothing cached there: the kernel would compile
    geom = cbct.ConeGeometry.circular(dso=500, dsd=750, detector_shape=(8, 8), detector_pixel_size=1.0,
                                      volume_shape=4, voxel_size=1.0, n_views=2)
    cbct.project(np.ones(geom.volume.shape, np.float32), geom)  # compiled (or loaded) in this process now
    assert announce_compilation(joseph._project_columns_kernel, "x") is False  # no notice once a build exists
