"""The harness built with AddressSanitizer and UndefinedBehaviorSanitizer catches a kernel that writes past its
array or overflows a signed integer, and lets a correct kernel through. Each case runs in its own process, which
preloads the ASan runtime (as the CI step that runs the CUDA tests under the sanitizers does)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cbct.cuda.emulator import compiler_available
from cbct.cuda.emulator.build import find_compiler


def asan_runtime() -> str | None:
    """Path of the compiler's ASan runtime library, or None."""
    compiler = find_compiler()
    if compiler is None:
        return None
    proc = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = proc.stdout.strip()
    return path if proc.returncode == 0 and os.path.isabs(path) and Path(path).exists() else None


pytestmark = [
    pytest.mark.skipif(not compiler_available(), reason="no C++ compiler (g++ or $CXX) for the CPU harness"),
    pytest.mark.skipif(compiler_available() and asan_runtime() is None, reason="the C++ compiler has no ASan runtime"),
]

SCRIPT = """
import numpy as np
from cbct.cuda.emulator import emulated_cupy
source = r'''
extern "C" __global__ void fill(float* x, int n, int bound) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < bound) x[i] = 1.0f;
}
extern "C" __global__ void scale(int* x, int n, int factor) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * factor;
}
'''
with emulated_cupy() as cp:
    module = cp.RawModule(code=source, name_expressions=("fill", "scale"))
    x = cp.zeros(8, dtype=cp.float32)
    module.get_function("fill")((1,), (16,), (x, np.int32(8), np.int32(BOUND)))
    y = cp.full(4, 3, dtype=cp.int32)
    module.get_function("scale")((1,), (4,), (y, np.int32(4), np.int32(FACTOR)))
    print("finished", float(x.get().sum()), int(y.get().sum()))
"""


def run(bound: int, factor: int, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LD_PRELOAD": asan_runtime(), "ASAN_OPTIONS": "detect_leaks=0",
           "CBCT_EMULATOR_SANITIZE": "address,undefined", "CBCT_EMULATOR_CACHE": str(tmp_path)}
    code = textwrap.dedent(SCRIPT).replace("BOUND", str(bound)).replace("FACTOR", str(factor))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_correct_kernels_pass_under_the_sanitizers(tmp_path):
    proc = run(bound=8, factor=2, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finished 8.0 24" in proc.stdout


def test_out_of_bounds_write_fails(tmp_path):
    proc = run(bound=9, factor=2, tmp_path=tmp_path)  # thread 8 writes one float past the array
    assert proc.returncode != 0 and "finished" not in proc.stdout
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr


def test_signed_overflow_fails(tmp_path):
    proc = run(bound=8, factor=2**30, tmp_path=tmp_path)  # 3 * 2**30 overflows int
    assert proc.returncode != 0 and "finished" not in proc.stdout
    assert "signed integer overflow" in proc.stderr
