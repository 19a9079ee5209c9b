"""Every CUDA kernel compiles with nvcc for sm_90 and an older architecture, with no spills or local memory in
the hot kernels. Needs nvcc (no GPU); skipped where there is none."""

from __future__ import annotations

import re
import subprocess

import pytest

from cbct.cuda.offline import demangle, find_nvcc, nvcc_resource_usage, parse_ptxas_verbose
from cbct.cuda.sources import KERNEL_FILES, kernel_source, read_source

NVCC = find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")
ARCHS = ("sm_90", "sm_80")
# Kernels that run over every voxel or ray: no register spills, no stack frame (local memory) allowed.
HOT_PREFIXES = ("fdk_backproject", "joseph_project", "joseph_backproject")
MAX_REGISTERS = 96  # at 256 threads per block this keeps >= 2 blocks per SM (65536 registers)


def test_parse_ptxas_verbose_reads_spills_and_registers():
    text = """ptxas info    : Compiling entry function '_Z15fdk_backprojectILi8ELb0EEvyPfiiiiii' for 'sm_90'
ptxas info    : Function properties for _Z15fdk_backprojectILi8ELb0EEvyPfiiiiii
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers
ptxas info    : Compiling entry function 'joseph_backproject' for 'sm_80'
ptxas info    : Function properties for joseph_backproject
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 48 registers, used 0 barriers, 416 bytes cmem[0]
"""
    first, second = parse_ptxas_verbose(text)
    assert (first.name, first.arch, first.registers) == ("fdk_backproject<8, false>", "sm_90", 255)
    assert (first.stack_frame, first.spill_stores, first.spill_loads) == (16, 8, 4) and first.uses_local_memory
    assert (second.name, second.registers, second.uses_local_memory) == ("joseph_backproject", 48, False)


def test_demangle_template_arguments():
    assert demangle("_Z14joseph_projectILb1EEvyPfiiiiiddd") == "joseph_project<true>"
    assert demangle("_Z15fdk_backprojectILi4ELb0EEvyPfiiiiii") == "fdk_backproject<4, false>"
    assert demangle("plain_name") == "plain_name"


def test_sources_inline_local_includes():
    for file in KERNEL_FILES:
        text = kernel_source(file)
        assert not re.search(r'^\s*#\s*include\s+"', text, re.MULTILINE), f"{file}: an include was left for NVRTC"
        assert "struct JosephRay" in text
        assert text.count("struct JosephRay {") == 1
    assert '#include "joseph_ray.cu"' in read_source("backprojection.cu")


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", sorted(KERNEL_FILES))
def test_kernels_compile_without_spills(file: str, arch: str):
    kernels, output = nvcc_resource_usage(file, arch, nvcc=NVCC)
    names = {k.name for k in kernels}
    assert set(KERNEL_FILES[file]) <= names, f"{file} ({arch}): missing kernels {set(KERNEL_FILES[file]) - names}\n{output}"
    for k in kernels:
        assert k.arch == arch
        if k.name.startswith(HOT_PREFIXES):
            assert not k.uses_local_memory, f"{k.name} ({arch}) uses local memory: {k}\n{output}"
            assert k.registers <= MAX_REGISTERS, f"{k.name} ({arch}) uses {k.registers} registers"


@needs_nvcc
@pytest.mark.parametrize("file", sorted(KERNEL_FILES))
def test_inlined_source_compiles_as_nvrtc_sees_it(file: str, tmp_path):
    """The string handed to NVRTC (includes inlined, no include path) compiles on its own."""
    src = tmp_path / file
    src.write_text(kernel_source(file))
    proc = subprocess.run(
        [NVCC, "-cubin", "-arch=sm_90", "-std=c++17", "-DCBCT_INSTANTIATE_ALL", "-o", str(tmp_path / "k.cubin"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
