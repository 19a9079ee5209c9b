"""The stand-in's data model: device arrays (NumPy arrays that report themselves as CuPy's on device 0), memory
pointers, the device, events, streams (work runs at once, a legal order) and the per-stand-in device state."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import time
from typing import Any

import numpy as np

__all__ = ["MemoryPointer", "ndarray", "asarray", "ascontiguousarray", "wrapped", "Device", "Event", "Stream",
           "MemoryPool", "DeviceState", "get_elapsed_time"]


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


def wrapped(fn: Any) -> Any:
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
    makes a subclass bound to its own :class:`DeviceState` (the current-stream stack)."""

    _state: DeviceState

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


class MemoryPool:
    def free_bytes(self) -> int:
        return 0

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        return None


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds of host time between two recorded events (the emulated device runs at once)."""
    if not (start_event.recorded and end_event.recorded):
        raise RuntimeError("get_elapsed_time on an event never recorded")
    return 1e3 * (end_event.time_s - start_event.time_s)


@dataclasses.dataclass
class DeviceState:
    """What one stand-in remembers: its launches ``(name, grid, block, args)`` and its current-stream stack."""

    launches: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[Any, ...]]] = dataclasses.field(default_factory=list)
    streams: list[Stream] = dataclasses.field(default_factory=list)
