"""Compile the kernel files with the real NVRTC, as ``cupy.RawModule`` does, without a GPU (a CI check).

NVRTC is reached through CuPy's own binding (``cupy_backends.cuda.libs.nvrtc``); CuPy 14 loads ``libnvrtc``
from the ``nvidia-cuda-nvrtc-cu12`` wheel (through ``cuda-pathfinder``), so no CUDA toolkit is needed.

What CuPy 14 hands NVRTC for ``RawModule(code=..., options=opts, name_expressions=...)`` on a device of compute
capability ``XY`` (``cupy/_core/core.pyx: assemble_cupy_compiler_options`` and ``cupy/cuda/compiler.py:
_compile_with_cache_cuda``, ``_compile_using_nvrtc_no_warning``, ``_get_arch_for_options_for_nvrtc``):

- ``-I`` options for CuPy's bundled CCCL before ``opts``, then ``-I`` for CuPy's headers and the CUDA headers found;
  ``--std=c++14`` only when ``opts`` names no standard;
- ``-ftz=true``;
- ``-arch=sm_XY`` (a cubin; ``-arch=compute_XY`` and PTX when ``CUPY_COMPILE_WITH_PTX=1`` or the device is newer
  than NVRTC knows);
- ``--device-as-default-execution-space`` (without jitify).

:func:`nvrtc_options` gives all but the ``-I`` options: the string :func:`cbct.cuda.sources.kernel_source`
returns includes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from types import ModuleType

from cbct.cuda.compile import compile_options
from cbct.cuda.sources import KERNEL_FILES, kernel_source

log = logging.getLogger(__name__)

__all__ = [
    "ARCHS",
    "CUPY_ADDED_OPTIONS",
    "NvrtcCompileError",
    "NvrtcUnavailable",
    "CompiledFile",
    "load_nvrtc",
    "nvrtc_options",
    "compile_source",
    "compile_kernel_file",
]

#: Compute capabilities checked in CI (A100, H100/H200).
ARCHS = ("80", "90")
#: What CuPy appends, in this order, after the caller's options and its own ``-I`` options.
CUPY_ADDED_OPTIONS = ("-ftz=true", "-arch=sm_{arch}", "--device-as-default-execution-space")

_ENTRY = re.compile(r"^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+([\w$]+)\s*\(", re.MULTILINE)
_CONST = re.compile(  # ".const .align 16 .b8 c_fdk_rows[24576];": kind, bits, symbol, count
    r"^\s*(?:\.visible\s+|\.weak\s+)?\.const\s+(?:\.align\s+\d+\s+)?\.([a-z]+)(\d+)\s+([\w$]+)(?:\[(\d+)\])?",
    re.MULTILINE,
)


class NvrtcUnavailable(RuntimeError):
    """The NVRTC library (or CuPy's binding to it) cannot be loaded."""


class NvrtcCompileError(RuntimeError):
    """NVRTC refused a program; :attr:`log` holds its compilation log."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(f"{message}\n{log}")
        self.log = log


@dataclasses.dataclass(frozen=True)
class CompiledFile:
    """What NVRTC made of one kernel file for one architecture.

    Attributes:
        file, arch, options: the input (``arch`` as ``"90"``).
        lowered: name expression → lowered (mangled) name, as ``RawModule.get_function`` looks it up.
        entries: kernels (``.entry``) in the PTX.
        constants: ``__constant__`` symbol → size in bytes, as ``RawModule.get_global`` finds them.
        cubin: the ELF image for ``sm_<arch>``.
        log: NVRTC's log (warnings).
    """

    file: str
    arch: str
    options: tuple[str, ...]
    lowered: dict[str, str]
    entries: tuple[str, ...]
    constants: dict[str, int]
    cubin: bytes
    log: str


def load_nvrtc() -> ModuleType:
    """CuPy's NVRTC binding, with the library loaded; raises :class:`NvrtcUnavailable` saying why it is not."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        version = nvrtc.getVersion()
    except Exception as exc:  # ImportError without CuPy, RuntimeError/OSError without libnvrtc
        raise NvrtcUnavailable(f"cannot load NVRTC through CuPy: {type(exc).__name__}: {exc}") from exc
    log.debug("NVRTC %d.%d", *version)
    return nvrtc


def nvrtc_options(file: str, arch: str) -> tuple[str, ...]:
    """The options CuPy's RawModule hands NVRTC for ``csrc/<file>`` on a device of compute capability ``arch``
    (``"90"``), less CuPy's ``-I`` options."""
    return (*compile_options(file), *(option.format(arch=arch) for option in CUPY_ADDED_OPTIONS))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def compile_source(
    source: str, options: tuple[str, ...], name_expressions: tuple[str, ...] = (), name: str = "kernel.cu"
) -> tuple[dict[str, str], str, bytes, str]:
    """Compile ``source`` with NVRTC; returns (lowered names, PTX, cubin, log).

    The cubin is empty when ``options`` target a virtual architecture (``-arch=compute_XY``). Raises
    :class:`NvrtcCompileError` with NVRTC's log when compilation fails.
    """
    nvrtc = load_nvrtc()
    program = nvrtc.createProgram(source, name, (), ())
    try:
        for expression in name_expressions:
            nvrtc.addNameExpression(program, expression)
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError as exc:
            program_log = _text(nvrtc.getProgramLog(program))
            raise NvrtcCompileError(f"NVRTC could not compile {name} ({exc})", program_log) from exc
        lowered = {expression: nvrtc.getLoweredName(program, expression) for expression in name_expressions}
        virtual = any(option.startswith(("-arch=compute_", "--gpu-architecture=compute_")) for option in options)
        cubin = b"" if virtual else bytes(nvrtc.getCUBIN(program))
        return lowered, _text(nvrtc.getPTX(program)), cubin, _text(nvrtc.getProgramLog(program))
    finally:
        nvrtc.destroyProgram(program)


def compile_kernel_file(file: str, arch: str) -> CompiledFile:
    """Compile :func:`~cbct.cuda.sources.kernel_source` of ``file`` with its name expressions, as RawModule would."""
    options = nvrtc_options(file, arch)
    lowered, ptx, cubin, program_log = compile_source(kernel_source(file), options, KERNEL_FILES[file], file)
    constants = {
        symbol: int(count or 1) * int(bits) // 8 for _kind, bits, symbol, count in _CONST.findall(ptx)
    }
    return CompiledFile(file, arch, options, lowered, tuple(_ENTRY.findall(ptx)), constants, cubin, program_log)
