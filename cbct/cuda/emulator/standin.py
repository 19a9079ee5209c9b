"""A CuPy stand-in on NumPy whose kernels are the real ``csrc`` kernels, compiled for and run on the CPU.

``with emulated_cupy() as cp:`` puts fresh ``cupy``, ``cupy.cuda``, ``cupy.cuda.runtime``, ``cupy.cuda.texture``
and ``cupyx`` modules into ``sys.modules`` (and clears cbct's kernel caches), so :mod:`cbct.cuda` runs unchanged
on one emulated device: arrays are NumPy arrays that call themselves CuPy's, streams and events are synchronous,
``RawModule`` compiles the very NVRTC string with g++ (:mod:`cbct.cuda.emulator.build`), ``get_global`` gives the
``__constant__`` symbols' memory (an upload past a symbol's end is refused), kernels check their launch and their
arguments as CuPy packs them, and textures are read by the harness's fetch rules. NumPy functions pass through
only where real CuPy has the same name (``cupy_numpy_names.txt``, from CuPy 14.2).

Each stand-in's ``cupy._emulator.launches`` lists ``(name, grid, block, args)`` of every launch, for tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import importlib.resources
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from cbct.cuda.emulator import textures as texture_module
from cbct.cuda.emulator.module import HostModule, KernelArgument

__all__ = ["ndarray", "MemoryPointer", "RawModule", "standin_modules", "emulated_cupy", "MODULE_NAMES"]

MODULE_NAMES = ("cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.cuda.texture", "cupy.cuda.nvtx", "cupyx")


# ------------------------------------------------------------------------------------------------ memory, arrays
class MemoryPointer:
    """``ndarray.data`` / ``RawModule.get_global``: ``size`` bytes at host address ``ptr``."""

    def __init__(self, ptr: int, size: int, owner: Any = None) -> None:
        self.ptr, self.size, self._owner = int(ptr), int(size), owner

    def copy_from_device_async(self, src: MemoryPointer, size: int, stream: Any = None) -> None:
        if not isinstance(src, MemoryPointer):
            raise TypeError(f"copy_from_device_async: src must be a MemoryPointer, got {type(src).__name__}")
        if size > self.size:
            raise ValueError(f"copy of {size} bytes overruns the destination of {self.size} bytes")
        if size > src.size:
            raise ValueError(f"copy of {size} bytes overruns the source of {src.size} bytes")
        ctypes.memmove(self.ptr, src.ptr, size)

    def copy_from_device(self, src: MemoryPointer, size: int) -> None:
        self.copy_from_device_async(src, size)


class ndarray(np.ndarray):  # noqa: N801 - mirrors cupy.ndarray
    """A NumPy array that reports itself as a CuPy array on device 0."""

    __module__ = "cupy"

    @property
    def device(self) -> Device:
        return Device(0)

    @property
    def data(self) -> MemoryPointer:  # type: ignore[override]
        if not (self.flags.c_contiguous or self.flags.f_contiguous):
            raise ValueError("data of a non-contiguous stand-in array")
        return MemoryPointer(self.__array_interface__["data"][0], self.nbytes, self)

    def get(self, stream: Any = None, order: str = "C", out: np.ndarray | None = None) -> np.ndarray:
        host = np.array(self.view(np.ndarray), copy=True, order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        if arr.shape != self.shape:
            raise ValueError(f"set: shape {arr.shape} != {self.shape}")
        self.view(np.ndarray)[...] = arr


def _wrap(x: Any) -> Any:
    return x.view(ndarray) if isinstance(x, np.ndarray) and not isinstance(x, ndarray) else x


def _wrapped(fn: Any) -> Any:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        return tuple(_wrap(r) for r in result) if isinstance(result, tuple) else _wrap(result)

    return call


def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    if isinstance(a, ndarray) and (dtype is None or a.dtype == dtype):
        return a
    return np.array(np.asarray(a), dtype=dtype, copy=True, order=order or "K").view(ndarray)


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    return np.ascontiguousarray(np.asarray(a), dtype=dtype).view(ndarray)


# ------------------------------------------------------------------------------------------------ device, streams
class Device:
    def __init__(self, device: int | None = None) -> None:
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise ValueError(f"the emulated CUDA device is device 0, got {self.id}")

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return self.id

    def synchronize(self) -> None:
        return None

    @property
    def attributes(self) -> dict[str, int]:
        return {"MaxTexture2DLayeredWidth": 32768, "MaxTexture2DLayeredHeight": 32768,
                "MaxTexture2DLayeredLayers": 2048, "MaxTexture3DWidth": 16384, "MaxTexture3DHeight": 16384,
                "MaxTexture3DDepth": 16384}


class Event:
    """An event: recorded when work before it has run (at once here), with the host time of the record."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        self.recorded = False
        self.time_s = 0.0

    def record(self, stream: Any = None) -> None:
        self.recorded = True
        self.time_s = time.perf_counter()

    def synchronize(self) -> None:
        if not self.recorded:
            raise RuntimeError("synchronize on an event never recorded")

    @property
    def done(self) -> bool:
        return self.recorded


class Stream:
    """A stream: work runs at once (a legal order of a single stream), so synchronising is a no-op. Each stand-in
    makes a subclass bound to its own :class:`_DeviceState` (the current-stream stack)."""

    _state: _DeviceState

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: int | None = None) -> None:
        self.ptr = 0 if null else id(self)

    def __enter__(self) -> Stream:
        self._state.streams.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._state.streams.pop()

    def synchronize(self) -> None:
        return None

    def wait_event(self, event: Event) -> None:
        if not event.recorded:
            raise RuntimeError("wait_event on an event never recorded")

    def record(self, event: Event | None = None) -> Event:
        event = event or Event()
        event.record(self)
        return event

    @property
    def done(self) -> bool:
        return True


class _MemoryPool:
    def free_bytes(self) -> int:
        return 0

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        return None


# ------------------------------------------------------------------------------------------------ kernels
_C_TYPES = {  # dtype -> (C++ spellings of the element type, ctypes scalar)
    np.dtype(np.float32): (("float",), ctypes.c_float), np.dtype(np.float64): (("double",), ctypes.c_double),
    np.dtype(np.int32): (("int",), ctypes.c_int32), np.dtype(np.uint32): (("unsigned int",), ctypes.c_uint32),
    np.dtype(np.int64): (("long long", "long"), ctypes.c_int64),
    np.dtype(np.uint64): (("unsigned long long", "unsigned long"), ctypes.c_uint64),
    np.dtype(np.int16): (("short",), ctypes.c_int16), np.dtype(np.uint16): (("unsigned short",), ctypes.c_uint16),
    np.dtype(np.int8): (("signed char", "char"), ctypes.c_int8), np.dtype(np.uint8): (("unsigned char",), ctypes.c_uint8),
    np.dtype(np.bool_): (("bool",), ctypes.c_bool),
}


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds of host time between two recorded events (the emulated device runs at once)."""
    if not (start_event.recorded and end_event.recorded):
        raise RuntimeError("get_elapsed_time on an event never recorded")
    return 1e3 * (end_event.time_s - start_event.time_s)


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


@dataclasses.dataclass
class _DeviceState:
    """What one stand-in remembers: its launches ``(name, grid, block, args)`` and its current-stream stack."""

    launches: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[Any, ...]]] = dataclasses.field(default_factory=list)
    streams: list[Stream] = dataclasses.field(default_factory=list)


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
                 name_expressions: Any = None, jitify: bool = False, _log: _DeviceState | None = None) -> None:
        if code is None or path is not None:
            raise ValueError("the stand-in's RawModule compiles source code (code=...), not a path")
        if backend != "nvrtc" or jitify or enable_cooperative_groups:
            raise ValueError("the stand-in's RawModule emulates NVRTC without jitify or cooperative groups")
        self.code, self.options = code, tuple(options)
        self.name_expressions = tuple(name_expressions or ())
        self._log = _log if _log is not None else _DeviceState()
        self._host_module: HostModule | None = None

    @property
    def _host(self) -> HostModule:
        if self._host_module is None:  # CuPy (14) appends -ftz=true to the options of every NVRTC compilation
            self._host_module = HostModule(self.code, (*self.options, "-ftz=true"), self.name_expressions,
                                           what="RawModule source")
        return self._host_module

    def compile(self, log_stream: Any = None) -> None:
        self._host  # noqa: B018 - builds (or loads the cached build)

    def get_function(self, name: str) -> RawKernel:
        return RawKernel(self, name)

    def get_global(self, name: str) -> MemoryPointer:
        address, size = self._host.symbol(name)
        return MemoryPointer(address, size, self)


# ------------------------------------------------------------------------------------------------ modules
@functools.lru_cache(maxsize=1)
def _cupy_numpy_names() -> frozenset[str]:
    text = (importlib.resources.files("cbct.cuda.emulator") / "cupy_numpy_names.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def standin_modules() -> dict[str, types.ModuleType]:
    """Fresh stand-in modules, keyed by the names they take in ``sys.modules`` (:data:`MODULE_NAMES`)."""
    cupy, cuda, runtime, texture, nvtx, cupyx = (types.ModuleType(n) for n in MODULE_NAMES)
    log = _DeviceState()
    names = _cupy_numpy_names()
    bound_stream = type("Stream", (Stream,), {"_state": log, "__module__": "cupy.cuda.stream"})
    null_stream = bound_stream(null=True)

    def external_stream(ptr: int, device_id: int = -1) -> Stream:
        stream = bound_stream()
        stream.ptr = int(ptr)
        return stream

    def get_current_stream(device_id: int = -1) -> Stream:
        return log.streams[-1] if log.streams else null_stream

    numpy_fft = np.fft
    fft = types.SimpleNamespace(**{n: _wrapped(getattr(numpy_fft, n)) for n in
                                   ("fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "rfft2", "irfft2", "rfftfreq", "fftfreq")})
    for name, value in {
        "ndarray": ndarray, "asarray": asarray, "array": asarray, "ascontiguousarray": ascontiguousarray,
        "cuda": cuda, "fft": fft, "get_default_memory_pool": functools.lru_cache(maxsize=1)(_MemoryPool),
        "get_default_pinned_memory_pool": functools.lru_cache(maxsize=1)(_MemoryPool),
        "RawModule": functools.partial(RawModule, _log=log), "__version__": "14.2.0+cbct-emulator",
        "asnumpy": lambda a, stream=None: a.get() if isinstance(a, ndarray) else np.asarray(a),
        "_emulator": log,
    }.items():
        setattr(cupy, name, value)

    def passthrough(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module 'cupy' has no attribute {name!r} (the stand-in passes through only "
                                 "NumPy names that real CuPy has)")
        value = getattr(np, name)
        return _wrapped(value) if callable(value) and not isinstance(value, type) else value

    cupy.__getattr__ = passthrough  # type: ignore[attr-defined]
    for name, value in {
        "Device": Device, "Stream": bound_stream, "Event": Event, "get_current_stream": get_current_stream,
        "ExternalStream": external_stream, "MemoryPointer": MemoryPointer,
        "runtime": runtime, "texture": texture, "nvtx": nvtx, "get_elapsed_time": get_elapsed_time,
    }.items():
        setattr(cuda, name, value)
    for name, value in {
        "memGetInfo": lambda: (8 << 30, 16 << 30), "getDeviceCount": lambda: 1, "getDevice": lambda: 0,
        **texture_module.RUNTIME_CONSTANTS,
    }.items():
        setattr(runtime, name, value)
    for cls in (texture_module.ChannelFormatDescriptor, texture_module.CUDAarray, texture_module.ResourceDescriptor,
                texture_module.TextureDescriptor, texture_module.TextureObject):
        setattr(texture, cls.__name__, cls)
    nvtx.RangePush = lambda message, id_color=-1, argb_color=None: None
    nvtx.RangePop = lambda: None
    nvtx.Mark = lambda message, id_color=-1, argb_color=None: None
    cupyx.empty_pinned = lambda shape, dtype=np.float64, order="C": np.empty(shape, dtype=dtype, order=order)
    return dict(zip(MODULE_NAMES, (cupy, cuda, runtime, texture, nvtx, cupyx)))


def _clear_kernel_caches() -> None:
    from cbct.cuda import compile as compile_module
    from cbct.cuda import textures

    compile_module._module.cache_clear()
    textures.texture_limits.cache_clear()


@contextlib.contextmanager
def emulated_cupy() -> Iterator[types.ModuleType]:
    """Install the stand-in in ``sys.modules`` for the duration; yields its ``cupy`` module. Restores the modules
    that were there before (the real CuPy, or none) and clears cbct's kernel caches on the way in and out."""
    saved = {name: sys.modules.get(name) for name in MODULE_NAMES}
    _clear_kernel_caches()
    modules = standin_modules()
    sys.modules.update(modules)
    try:
        yield modules["cupy"]
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        _clear_kernel_caches()
