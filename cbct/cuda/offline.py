"""Offline compilation checks with ``nvcc`` (no GPU needed): registers, stack frame and spills per kernel.

Used by ``tests/test_kernel_compile.py`` (CI fails on spills or local memory in the hot kernels) and recorded by
``benchmarks/gpu_benchmark.py`` next to the timings. The kernel files are compiled with ``-DCBCT_INSTANTIATE_ALL``,
which instantiates every specialisation the run-time loader (:mod:`cbct.cuda.compile`) can ask NVRTC for.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cbct.cuda.compile import compile_options
from cbct.cuda.sources import source_path

__all__ = ["KernelResources", "find_nvcc", "parse_ptxas_verbose", "demangle", "nvcc_resource_usage"]


@dataclasses.dataclass(frozen=True)
class KernelResources:
    """What ``ptxas -v`` reports for one kernel on one architecture.

    Attributes:
        name: readable kernel name, e.g. ``"fdk_backproject<8, false>"``.
        arch: target, e.g. ``"sm_90"``.
        registers: registers per thread.
        stack_frame: bytes of stack frame per thread (local memory; 0 in a kernel that keeps everything in registers).
        spill_stores: bytes of register spill stores.
        spill_loads: bytes of register spill loads.
    """

    name: str
    arch: str
    registers: int
    stack_frame: int
    spill_stores: int
    spill_loads: int

    @property
    def uses_local_memory(self) -> bool:
        return self.stack_frame > 0 or self.spill_stores > 0 or self.spill_loads > 0


def find_nvcc() -> str | None:
    """Path of ``nvcc`` (``$CUDA_HOME/bin``, ``$CUDA_PATH/bin``, the ``PATH``, ``/usr/local/cuda/bin``), or None."""
    for env in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(env)
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.is_file() else None


_TYPES = {"i": "int", "b": "bool", "j": "unsigned int", "l": "long", "m": "unsigned long", "f": "float", "d": "double"}


def demangle(name: str) -> str:
    """Readable name of an Itanium-mangled kernel with integer/bool template arguments (others stay mangled)."""
    m = re.match(r"_Z(\d+)", name)
    if not m:
        return name
    start = m.end()
    base = name[start : start + int(m.group(1))]
    rest = name[start + int(m.group(1)) :]
    if not rest.startswith("I"):
        return base
    args = []
    for kind, value in re.findall(r"L([a-z])(n?\d+)E", rest[: rest.find("EE") + 2] if "EE" in rest else rest):
        value = value.replace("n", "-")
        args.append(("true" if value == "1" else "false") if kind == "b" else value)
    return f"{base}<{', '.join(args)}>" if args else name


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas_verbose(text: str) -> list[KernelResources]:
    """Kernels and their resources from the output of ``nvcc -Xptxas -v``."""
    found: list[KernelResources] = []
    current: dict | None = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = {"name": demangle(m.group(1)), "arch": m.group(2)}
        elif current is not None and (m := _FRAME.search(line)):
            current.update(stack_frame=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := _REGS.search(line)):
            current["registers"] = int(m.group(1))
            found.append(KernelResources(**{"stack_frame": 0, "spill_stores": 0, "spill_loads": 0, **current}))
            current = None
    return found


def nvcc_resource_usage(
    file: str, arch: str, *, nvcc: str | None = None, extra_options: Sequence[str] = (), timeout: float = 300.0
) -> tuple[list[KernelResources], str]:
    """Compile ``csrc/<file>`` to a cubin for ``arch`` (e.g. ``"sm_90"``) with every specialisation instantiated.

    Returns the kernels' resources and the compiler's output. Raises ``FileNotFoundError`` without ``nvcc`` and
    ``RuntimeError`` when the compilation fails.
    """
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on the PATH)")
    if not re.fullmatch(r"sm_\d+a?", arch):
        raise ValueError(f"arch must look like 'sm_90', got {arch!r}")
    src = Path(str(source_path(file)))
    defines = [o for o in compile_options(file) if o.startswith("-D")]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            nvcc, "-cubin", f"-arch={arch}", "-std=c++17", "-Xptxas", "-v", "-DCBCT_INSTANTIATE_ALL", *defines,
            f"-I{src.parent}", *extra_options, "-o", str(Path(tmp) / "out.cubin"), str(src),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed for {file} ({arch}), exit {proc.returncode}:\n{output}")
    return parse_ptxas_verbose(output), output
