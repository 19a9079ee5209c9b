"""The stand-in's ``RawModule`` and its kernels on the CPU harness, and CuPy's packing of kernel arguments."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

import cbct.cuda.emulator.textures as texture_module
from cbct.cuda.emulator.devices import DeviceState, MemoryPointer, ndarray
from cbct.cuda.emulator.module import HostModule, KernelArgument
from cbct.cuda.nvrtc_check import CUPY_ADDED_OPTIONS

__all__ = ["pack_argument", "RawKernel", "RawModule", "EMULATED_ARCH"]

#: The compute capability the emulated device reports (``__CUDA_ARCH__`` 900 in ``cuda_host.h``).
EMULATED_ARCH = "90"


_C_TYPES = {  # dtype -> (C++ spellings of the element type, ctypes scalar)
    np.dtype(np.float32): (("float",), ctypes.c_float), np.dtype(np.float64): (("double",), ctypes.c_double),
    np.dtype(np.int32): (("int",), ctypes.c_int32), np.dtype(np.uint32): (("unsigned int",), ctypes.c_uint32),
    np.dtype(np.int64): (("long long", "long"), ctypes.c_int64),
    np.dtype(np.uint64): (("unsigned long long", "unsigned long"), ctypes.c_uint64),
    np.dtype(np.int16): (("short",), ctypes.c_int16), np.dtype(np.uint16): (("unsigned short",), ctypes.c_uint16),
    np.dtype(np.int8): (("signed char", "char"), ctypes.c_int8), np.dtype(np.uint8): (("unsigned char",), ctypes.c_uint8),
    np.dtype(np.bool_): (("bool",), ctypes.c_bool),
}


def pack_argument(x: Any) -> KernelArgument:
    """A kernel argument as CuPy packs it: arrays as pointers to their dtype, texture objects as 64-bit handles,
    NumPy scalars as their dtype, Python bool/int/float as bool/int64/float64."""
    if isinstance(x, ndarray):
        names = _C_TYPES.get(x.dtype, ((), None))[0]
        accepts = {f"{n}*" for n in names} | {f"const {n}*" for n in names} | {"void*", "const void*"}
        return KernelArgument(ctypes.c_void_p(x.__array_interface__["data"][0]), frozenset(accepts),
                              f"a {x.dtype} device array")
    if isinstance(x, texture_module.TextureObject):
        return KernelArgument(ctypes.c_uint64(x.ptr), frozenset({"unsigned long long"}), "a texture object")
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a host (NumPy) array cannot be a kernel argument")
    if isinstance(x, np.generic) and x.dtype in _C_TYPES:
        names, ctype = _C_TYPES[x.dtype]
        return KernelArgument(ctype(x.item()), frozenset(names), f"numpy.{x.dtype}")
    for python_type, dtype in ((bool, np.bool_), (int, np.int64), (float, np.float64)):
        if isinstance(x, python_type):
            names, ctype = _C_TYPES[np.dtype(dtype)]
            return KernelArgument(ctype(x), frozenset(names), f"a Python {python_type.__name__}")
    raise TypeError(f"Unsupported type {type(x)} as a kernel argument")


class RawKernel:
    """A kernel of a :class:`RawModule`: ``kernel(grid, block, args)`` runs it on the CPU harness."""

    def __init__(self, module: RawModule, name: str) -> None:
        self.module, self.name = module, name
        self._kernel = module._host.function(name)

    @property
    def attributes(self) -> dict[str, int]:
        return {"max_threads_per_block": self._kernel.max_threads or 1024}

    def __call__(self, grid: Any, block: Any, args: tuple, *, shared_mem: int = 0,
                 enable_cooperative_groups: bool = False) -> None:
        if shared_mem:
            raise ValueError(f"{self.name}: dynamic shared memory is not supported by the CPU harness")
        if not isinstance(args, tuple):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        packed = [pack_argument(a) for a in args]
        self.module._log.launches.append((self.name, tuple(grid), tuple(block), args))
        self._kernel.launch(grid, block, packed)


class RawModule:
    """``cupy.RawModule(code=..., options=..., name_expressions=...)`` on the CPU harness."""

    def __init__(self, code: str | None = None, *, path: str | None = None, options: tuple = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 name_expressions: Any = None, jitify: bool = False, _log: DeviceState | None = None) -> None:
        if code is None or path is not None:
            raise ValueError("the stand-in's RawModule compiles source code (code=...), not a path")
        if backend != "nvrtc" or jitify or enable_cooperative_groups:
            raise ValueError("the stand-in's RawModule emulates NVRTC without jitify or cooperative groups")
        self.code, self.options = code, tuple(options)
        self.name_expressions = tuple(name_expressions or ())
        self._log = _log if _log is not None else DeviceState()
        self._host_module: HostModule | None = None

    @property
    def _host(self) -> HostModule:
        if self._host_module is None:  # with what CuPy appends to every NVRTC compilation (-ftz=true, ...)
            added = tuple(option.format(arch=EMULATED_ARCH) for option in CUPY_ADDED_OPTIONS)
            self._host_module = HostModule(self.code, (*self.options, *added), self.name_expressions,
                                           what="RawModule source")
        return self._host_module

    def compile(self, log_stream: Any = None) -> None:
        self._host  # noqa: B018 - builds (or loads the cached build)

    def get_function(self, name: str) -> RawKernel:
        return RawKernel(self, name)

    def get_global(self, name: str) -> MemoryPointer:
        address, size = self._host.symbol(name)
        return MemoryPointer(address, size, self)
