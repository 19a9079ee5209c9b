"""A kernel source compiled for the CPU harness, loaded in-process: kernels to launch, ``__constant__`` symbols.

Each :class:`HostModule` loads its own copy of the shared library, so two modules of one source do not share
constant memory (as two ``cupy.RawModule`` do not on a GPU). A launch checks what a CUDA launch checks: grid and
block limits, ``__launch_bounds__``, and each argument against the kernel's real parameter types.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cbct.cuda.emulator.build import (
    build_library,
    launch_bounds,
    parse_nvrtc_options,
    sanitizers_from_env,
    threads_from_env,
)

__all__ = ["KernelArgument", "HostKernel", "HostModule", "check_launch", "MAX_GRID", "MAX_BLOCK"]

MAX_BLOCK = (1024, 1024, 64)
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)


@dataclasses.dataclass(frozen=True)
class KernelArgument:
    """One packed kernel argument.

    Attributes:
        value: the ctypes object whose bytes the kernel receives.
        accepts: the C++ parameter types these bytes are right for (e.g. ``{"int"}`` for ``numpy.int32``).
        description: what the caller passed, for error messages.
    """

    value: ctypes._SimpleCData
    accepts: frozenset[str]
    description: str


def _dims(value: object, what: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        value = (value,)
    dims = tuple(value) + (1,) * (3 - len(tuple(value)))
    if len(dims) != 3 or not all(isinstance(d, (int,)) or hasattr(d, "__index__") for d in dims):
        raise ValueError(f"{what} must be up to three integers, got {value!r}")
    return tuple(int(d) for d in dims)  # type: ignore[return-value]


def check_launch(name: str, grid: object, block: object, max_threads: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Grid and block as 3-tuples, refused (``ValueError``) where CUDA would refuse the launch."""
    g, b = _dims(grid, "grid"), _dims(block, "block")
    if any(d < 1 for d in g + b):
        raise ValueError(f"{name}: invalid configuration: grid {g} and block {b} must be positive")
    if any(d > m for d, m in zip(b, MAX_BLOCK)) or b[0] * b[1] * b[2] > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"{name}: block {b} exceeds CUDA's limits {MAX_BLOCK}, {MAX_THREADS_PER_BLOCK} threads")
    if any(d > m for d, m in zip(g, MAX_GRID)):
        raise ValueError(f"{name}: grid {g} exceeds CUDA's limits {MAX_GRID}")
    if max_threads is not None and b[0] * b[1] * b[2] > max_threads:
        raise ValueError(f"{name}: block {b} has {b[0] * b[1] * b[2]} threads, more than its "
                         f"__launch_bounds__({max_threads}): too many resources requested for launch")
    return g, b


@dataclasses.dataclass(eq=False)
class HostKernel:
    """One kernel (name expression) of a :class:`HostModule`.

    Attributes:
        name: the name expression, e.g. ``"fdk_backproject<8, false>"``.
        parameters: the kernel's parameter types as C++ spells them (``"float*"``, ``"int"``, ...).
        max_threads: ``__launch_bounds__`` maximum threads per block, or None.
    """

    name: str
    parameters: tuple[str, ...]
    max_threads: int | None
    flush_denormals: bool
    _entry: object = dataclasses.field(repr=False)
    _module: HostModule = dataclasses.field(repr=False)

    def check_arguments(self, arguments: Sequence[KernelArgument]) -> None:
        """``TypeError`` naming the parameter when an argument's bytes are not of the parameter's type."""
        if len(arguments) != len(self.parameters):
            raise TypeError(f"{self.name} takes {len(self.parameters)} arguments ({', '.join(self.parameters)}), "
                            f"got {len(arguments)}")
        for index, (argument, parameter) in enumerate(zip(arguments, self.parameters)):
            if parameter not in argument.accepts:
                raise TypeError(f"{self.name}: argument {index} is {argument.description}, packed as "
                                f"{' or '.join(sorted(argument.accepts))}, but the parameter is {parameter}")

    def launch(self, grid: object, block: object, arguments: Sequence[KernelArgument]) -> None:
        """Run the kernel over ``grid`` x ``block`` threads (blocks on ``$CBCT_EMULATOR_THREADS`` host threads, the
        threads of a block one after another); raises on a recorded fault."""
        g, b = check_launch(self.name, grid, block, self.max_threads)
        self.check_arguments(arguments)
        pointers = (ctypes.c_void_p * max(len(arguments), 1))(*[ctypes.addressof(a.value) for a in arguments])
        fault = self._entry((ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(*b), pointers, int(self.flush_denormals),
                            0, g[0] * g[1] * g[2], threads_from_env())
        if fault:
            raise RuntimeError(f"{self.name}: {fault.decode()}")


def _asan_loaded() -> bool:
    try:
        return "libasan" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


class HostModule:
    """A kernel source compiled for the CPU and loaded (a private copy of the library).

    Args:
        source: the exact string handed to NVRTC.
        options: the NVRTC options (``-D`` defines, ``--std``, ``-ftz``, ...).
        name_expressions: the kernels to expose, as NVRTC name expressions.
        what: how to name the source in errors.
        sanitize: sanitizers to build with (default: ``$CBCT_EMULATOR_SANITIZE``).
    """

    def __init__(self, source: str, options: Sequence[str], name_expressions: Sequence[str], *,
                 what: str = "kernel source", sanitize: Sequence[str] | None = None) -> None:
        sanitize = sanitizers_from_env() if sanitize is None else tuple(sanitize)
        if "address" in sanitize and not _asan_loaded():
            raise RuntimeError("a harness built with AddressSanitizer must run in a process that preloads it: "
                               "LD_PRELOAD=$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 python ...")
        self.source, self.what = source, what
        self.names = tuple(name_expressions)
        library, self.symbols = build_library(source, options, self.names, sanitize=sanitize, what=what)
        self._flush = parse_nvrtc_options(options).flush_denormals
        self._lib = _load_private_copy(library)
        self._kernels: dict[str, HostKernel] = {}

    def function(self, name: str) -> HostKernel:
        """The kernel of a name expression given at construction."""
        if name not in self.names:
            raise KeyError(f"{self.what}: {name!r} is not one of the name expressions {self.names}")
        if name not in self._kernels:
            index = self.names.index(name)
            entry = getattr(self._lib, f"cbct_emu_launch_{index}")
            entry.restype = ctypes.c_char_p
            entry.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_void_p),
                              ctypes.c_int, ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.c_int]
            signature = getattr(self._lib, f"cbct_emu_signature_{index}")
            signature.restype = ctypes.c_char_p
            text = signature().decode()
            parameters = tuple(text.split(",")) if text else ()
            base = re.sub(r"<.*$", "", name).strip()
            self._kernels[name] = HostKernel(name, parameters, launch_bounds(self.source, base), self._flush, entry, self)
        return self._kernels[name]

    def symbol(self, name: str) -> tuple[int, int]:
        """Address and size in bytes of the ``__constant__`` variable ``name``."""
        if name not in self.symbols:
            raise KeyError(f"{self.what} has no __constant__ {name!r}; it has {self.symbols}")
        entry = getattr(self._lib, f"cbct_emu_symbol_{name}")
        entry.restype = ctypes.c_void_p
        size = ctypes.c_ulonglong(0)
        address = entry(ctypes.byref(size))
        return int(address), int(size.value)


def _load_private_copy(library: Path) -> ctypes.CDLL:
    """dlopen a fresh copy of ``library`` (a distinct path gives distinct globals), then unlink the copy."""
    fd, path = tempfile.mkstemp(suffix=".so", dir=library.parent)
    os.close(fd)
    try:
        shutil.copyfile(library, path)
        return ctypes.CDLL(path, mode=os.RTLD_LOCAL | os.RTLD_NOW)
    finally:
        os.unlink(path)
