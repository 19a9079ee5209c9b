"""A CuPy stand-in on NumPy whose kernels are the real ``csrc`` kernels, compiled for and run on the CPU.

``with emulated_cupy() as cp:`` puts fresh ``cupy``, ``cupy.cuda``, ``cupy.cuda.runtime``, ``cupy.cuda.texture``,
``cupy.cuda.nvtx`` and ``cupyx`` modules into ``sys.modules`` (and clears cbct's kernel caches), so
:mod:`cbct.cuda` runs unchanged on one emulated device: arrays are NumPy arrays that call themselves CuPy's, streams
and events are synchronous (:mod:`cbct.cuda.emulator.devices`), ``RawModule`` compiles the very NVRTC string with
g++ and its kernels check their launch and their arguments as CuPy packs them (:mod:`cbct.cuda.emulator.raw`),
``get_global`` gives the ``__constant__`` symbols' memory (an upload past a symbol's end is refused), and textures
are read by the harness's fetch rules (:mod:`cbct.cuda.emulator.textures`). NumPy functions pass through only where
real CuPy has the same name (``cupy_numpy_names.txt``, from CuPy 14.2).

Each stand-in's ``cupy._emulator.launches`` lists ``(name, grid, block, args)`` of every launch, for tests.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

import cbct.cuda.emulator.textures as texture_module
from cbct.cuda.emulator.devices import (
    Device,
    DeviceState,
    Event,
    MemoryPointer,
    MemoryPool,
    Stream,
    asarray,
    ascontiguousarray,
    get_elapsed_time,
    ndarray,
    wrapped,
)
from cbct.cuda.emulator.raw import RawModule

__all__ = ["standin_modules", "emulated_cupy", "MODULE_NAMES"]

MODULE_NAMES = ("cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.cuda.texture", "cupy.cuda.nvtx", "cupyx")


@functools.lru_cache(maxsize=1)
def _cupy_numpy_names() -> frozenset[str]:
    text = (importlib.resources.files("cbct.cuda.emulator") / "cupy_numpy_names.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def standin_modules() -> dict[str, types.ModuleType]:
    """Fresh stand-in modules, keyed by the names they take in ``sys.modules`` (:data:`MODULE_NAMES`)."""
    cupy, cuda, runtime, texture, nvtx, cupyx = (types.ModuleType(n) for n in MODULE_NAMES)
    log = DeviceState()
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
    fft = types.SimpleNamespace(**{n: wrapped(getattr(numpy_fft, n)) for n in
                                   ("fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "rfft2", "irfft2", "rfftfreq", "fftfreq")})
    for name, value in {
        "ndarray": ndarray, "asarray": asarray, "array": asarray, "ascontiguousarray": ascontiguousarray,
        "cuda": cuda, "fft": fft, "get_default_memory_pool": functools.lru_cache(maxsize=1)(MemoryPool),
        "get_default_pinned_memory_pool": functools.lru_cache(maxsize=1)(MemoryPool),
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
        return wrapped(value) if callable(value) and not isinstance(value, type) else value

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
