"""Every kernel file compiles with the real NVRTC, from the exact string and options ``cupy.RawModule`` uses, for
sm_80 and sm_90, and its lowered names are the ones the host looks up. No GPU needed: NVRTC only compiles.

Needs CuPy >= 14 and the ``nvidia-cuda-nvrtc-cu12`` wheel (the ``test`` extra); skipped only where the NVRTC
library cannot be loaded.
"""

from __future__ import annotations

import ast
import pathlib
import re

import numpy as np
import pytest

import cbct
from cbct.cuda import kernels
from cbct.cuda.compile import (
    FDK_VOXELS_PER_THREAD,
    MAX_FDK_VIEWS,
    MAX_MATCHED_VIEWS,
    MAX_PROJECT_VIEWS,
    compile_options,
    fdk_kernel_name,
    project_kernel_name,
)
from cbct.cuda.nvrtc_check import (
    ARCHS,
    CompiledFile,
    NvrtcCompileError,
    NvrtcUnavailable,
    compile_kernel_file,
    compile_source,
    load_nvrtc,
    nvrtc_options,
)
from cbct.cuda.offline import demangle
from cbct.cuda.sources import KERNEL_FILES, kernel_source

try:
    load_nvrtc()
    NVRTC_MISSING = None
except NvrtcUnavailable as exc:
    NVRTC_MISSING = f"{exc} (install the test extra: cupy-cuda12x>=14 and nvidia-cuda-nvrtc-cu12)"

pytestmark = pytest.mark.skipif(NVRTC_MISSING is not None, reason=NVRTC_MISSING or "")

FILES = sorted(KERNEL_FILES)
_GLOBAL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)")


@pytest.fixture(scope="module")
def compiled() -> dict[tuple[str, str], CompiledFile]:
    return {(file, arch): compile_kernel_file(file, arch) for file in FILES for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", FILES)
def test_kernel_file_compiles_and_lowers_every_name(compiled, file: str, arch: str):
    result = compiled[(file, arch)]
    assert result.cubin[:4] == b"\x7fELF", f"{file} (sm_{arch}): NVRTC returned no cubin"
    assert set(result.lowered) == set(KERNEL_FILES[file])
    for expression, lowered in result.lowered.items():
        if "<" in expression:  # a template instance: C++ mangling that names the same instance
            assert lowered.startswith("_Z") and demangle(lowered) == expression, (expression, lowered)
        else:  # extern "C": looked up unmangled
            assert lowered == expression, (expression, lowered)
    # the module holds exactly the named kernels: nothing the host cannot reach, nothing it looks up is missing
    assert sorted(result.entries) == sorted(result.lowered.values()), result.entries


@pytest.mark.parametrize("file", FILES)
def test_name_expressions_are_the_kernels_defined(file: str):
    defined = set(_GLOBAL.findall(kernel_source(file)))
    named = {expression.split("<")[0] for expression in KERNEL_FILES[file]}
    assert defined == named, f"{file}: kernels defined {sorted(defined)}, named for NVRTC {sorted(named)}"


def test_host_looks_up_exactly_the_compiled_name_expressions():
    host = {
        "backprojection.cu": {fdk_kernel_name(n, hw) for n in FDK_VOXELS_PER_THREAD for hw in (False, True)}
        | {"joseph_backproject"},
        "forward_projection.cu": {project_kernel_name(hw) for hw in (False, True)},
    }
    assert host == {file: set(names) for file, names in KERNEL_FILES.items()}


def _uploads() -> set[tuple[str, str]]:
    """(kernel file, __constant__ symbol) of every ``module.upload`` in cbct/cuda/kernels.py, per function."""
    tree = ast.parse(pathlib.Path(kernels.__file__).read_text(encoding="utf-8"))
    pairs = set()
    for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
        files, symbols = set(), set()
        for call in (node for node in ast.walk(function) if isinstance(node, ast.Call)):
            name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
            if name in ("get_module", "upload") and call.args and isinstance(call.args[0], ast.Constant):
                (files if name == "get_module" else symbols).add(call.args[0].value)
        pairs |= {(file, symbol) for file in files for symbol in symbols}
    return pairs


def test_constant_tables_hold_the_largest_upload(compiled):
    geom = cbct.ConeGeometry.circular(dso=300.0, dsd=450.0, detector_shape=(4, 5), detector_pixel_size=(1.0, 1.0),
                                      volume_shape=(3, 4, 5), voxel_size=(1.0, 1.0, 1.0), n_views=3)
    fdk_row = kernels.fdk_constants(geom).nbytes // geom.n_views
    ray = kernels.ray_constants(geom).nbytes // geom.n_views
    index = np.dtype(np.int32).itemsize
    largest = {  # bytes of the largest upload of each table: per-view bytes x views per launch
        ("backprojection.cu", "c_fdk_rows"): fdk_row * MAX_FDK_VIEWS,
        ("backprojection.cu", "c_fdk_segment"): index * MAX_FDK_VIEWS,
        ("backprojection.cu", "c_rays"): ray * MAX_MATCHED_VIEWS,
        ("backprojection.cu", "c_ray_view"): index * MAX_MATCHED_VIEWS,
        ("forward_projection.cu", "c_rays"): ray * MAX_PROJECT_VIEWS,
    }
    assert set(largest) == _uploads(), "cbct/cuda/kernels.py uploads other tables than this test knows"
    for arch in ARCHS:
        for (file, symbol), size in largest.items():
            constants = compiled[(file, arch)].constants
            assert symbol in constants, f"{file} (sm_{arch}) has no __constant__ {symbol}: {constants}"
            assert constants[symbol] >= size, f"{file}: {symbol} holds {constants[symbol]} bytes, uploads reach {size}"


def test_nvrtc_refuses_a_missing_header_readably():
    file = "backprojection.cu"
    source = '#include "cbct_no_such_header.cuh"\n' + kernel_source(file)
    with pytest.raises(NvrtcCompileError) as info:
        compile_source(source, nvrtc_options(file, ARCHS[-1]), KERNEL_FILES[file], file)
    assert 'cannot open source file "cbct_no_such_header.cuh"' in info.value.log
    assert "backprojection.cu(1)" in info.value.log


def test_nvrtc_refuses_a_name_expression_that_is_no_kernel():
    file = "forward_projection.cu"
    with pytest.raises(NvrtcCompileError, match="joseph_project"):
        compile_source(kernel_source(file), nvrtc_options(file, ARCHS[-1]), ("joseph_project<2>",), file)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", FILES)
def test_cupy_compile_path_hands_nvrtc_these_options(compiled, monkeypatch, file: str, arch: str):
    """Run CuPy's own compile path for RawModule (``cupy._core.core.compile_with_cache``, as
    ``cupy._core.raw._get_raw_module`` calls it) with the device-dependent architecture look-up given ``arch``,
    record what reaches NVRTC, and compare with :func:`nvrtc_options` (less CuPy's ``-I`` options)."""
    from cupy._core import core
    from cupy.cuda import compiler
    from cupy_backends.cuda.api.driver import CUDADriverError
    from cupy_backends.cuda.api.runtime import CUDARuntimeError

    arch_lookup = getattr(compiler._get_arch_for_options_for_nvrtc, "__wrapped__", None)
    if arch_lookup is None or not hasattr(compiler, "_NVRTCProgram"):
        pytest.fail("CuPy's compiler module changed (no _NVRTCProgram or memoised _get_arch_for_options_for_nvrtc): "
                    "re-read cupy/cuda/compiler.py and update cbct.cuda.nvrtc_check.CUPY_ADDED_OPTIONS")
    calls: list[tuple[tuple[str, ...], dict[str, str] | None]] = []

    class Recording(compiler._NVRTCProgram):
        def compile(self, options=(), log_stream=None):
            result = super().compile(options, log_stream)
            if self.name_expressions:
                calls.append((tuple(options), result[1]))
            return result

    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "1")  # always compile: no on-disk cache hit
    monkeypatch.setattr(compiler, "_NVRTCProgram", Recording)
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc", arch_lookup)
    try:
        core.compile_with_cache(
            kernel_source(file), compile_options(file), arch=arch,
            prepend_cupy_headers=False, backend="nvrtc", translate_cucomplex=False, enable_cooperative_groups=False,
            name_expressions=KERNEL_FILES[file], log_stream=None, jitify=False,
        )
    except (CUDARuntimeError, CUDADriverError):  # loading the cubin needs a driver (or a device of that arch)
        pass
    assert len(calls) == 1, calls
    options, mapping = calls[0]
    assert tuple(o for o in options if not o.startswith("-I")) == nvrtc_options(file, arch)
    assert mapping == compiled[(file, arch)].lowered
