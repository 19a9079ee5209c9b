"""A stand-in for the parts of CuPy that cbct.cuda uses, on NumPy, with the CUDA kernels emulated on the CPU.

It lets the host side of the CUDA backend run without a GPU: arrays, streams and events (synchronous here),
textures (CUDA arrays with their shape, texel type and filter mode), modules with their ``__constant__`` tables
(sized from the compile options, so an upload past a table's end fails) and the three kernels, emulated from
exactly what the host passed: the launch grid, the arguments and the bytes in constant memory. The emulation
follows the .cu sources (bilinear on point-sampled texels, 8-bit weights for the texture filter, float16 texels),
so a wrong constant layout, chunk, slab offset, segment or accumulate flag gives wrong numbers.

What it cannot check: CuPy's real API and the real kernels (those need a GPU: tests marked ``gpu``).
Install with :func:`install` (a pytest ``monkeypatch``), never globally.
"""

from __future__ import annotations

import contextlib
import re
import types
from typing import Any

import numpy as np

from cbct.cpu.joseph import PAD, _adjoint_kernel, _project_kernel

# ------------------------------------------------------------------------------------------------ arrays


class ndarray(np.ndarray):  # noqa: N801 - mirrors cupy.ndarray
    """A NumPy array that reports itself as a CuPy array on device 0."""

    __module__ = "cupy"

    @property
    def device(self) -> Device:
        return Device(0)

    @property
    def data(self) -> Pointer:
        return Pointer(self)

    def get(self, stream: Any = None, out: np.ndarray | None = None) -> np.ndarray:
        host = np.array(self.view(np.ndarray), copy=True)
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


def _wrapped(fn):
    def call(*args, **kwargs):
        return _wrap(fn(*args, **kwargs))

    return call


def asarray(x: Any, dtype: Any = None) -> ndarray:
    if isinstance(x, ndarray) and (dtype is None or x.dtype == dtype):
        return x
    return np.array(np.asarray(x), dtype=dtype, copy=True).view(ndarray)


def ascontiguousarray(x: Any, dtype: Any = None) -> ndarray:
    return np.ascontiguousarray(np.asarray(x), dtype=dtype).view(ndarray)


class Pointer:
    """``ndarray.data``: where the bytes are (used for constant uploads)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.ptr = array.__array_interface__["data"][0]


# ------------------------------------------------------------------------------------------------ devices, streams


class Device:
    def __init__(self, device: int | None = None) -> None:
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise ValueError("the fake has one device")

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return self.id

    @property
    def attributes(self) -> dict[str, int]:
        return {"MaxTexture2DLayeredLayers": 2048, "MaxTexture3DDepth": 16384}


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        self.recorded = False

    def record(self, stream: Any = None) -> None:
        self.recorded = True

    def synchronize(self) -> None:
        if not self.recorded:
            raise RuntimeError("synchronize on an event never recorded")


class Stream:
    _current: list[Stream] = []

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int = 0) -> None:
        self.ptr = ptr or id(self)
        self.waited: list[Event] = []
        self.synchronized = 0

    def __enter__(self) -> Stream:
        Stream._current.append(self)
        return self

    def __exit__(self, *exc) -> None:
        Stream._current.pop()

    def synchronize(self) -> None:
        self.synchronized += 1

    def wait_event(self, event: Event) -> None:
        if not event.recorded:
            raise RuntimeError("wait_event on an event never recorded")
        self.waited.append(event)

    def record(self, event: Event | None = None) -> Event:
        event = event or Event()
        event.record(self)
        return event


_NULL = Stream(null=True, ptr=1)


def get_current_stream() -> Stream:
    return Stream._current[-1] if Stream._current else _NULL


class _Pool:
    def free_bytes(self) -> int:
        return 0


# ------------------------------------------------------------------------------------------------ textures

_LAYERED = 0x01
_FILTER_POINT, _FILTER_LINEAR = 0, 1


class ChannelFormatDescriptor:
    def __init__(self, x: int, y: int, z: int, w: int, f: int) -> None:
        if (y, z, w) != (0, 0, 0) or x not in (16, 32):
            raise ValueError("the kernels use one float channel of 16 or 32 bits")
        self.bits = x


class CUDAarray:
    def __init__(self, desc: ChannelFormatDescriptor, width: int, height: int = 0, depth: int = 0, flags: int = 0):
        self.desc, self.shape, self.flags = desc, (depth, height, width), flags
        self.texels: np.ndarray | None = None

    def copy_from(self, arr: ndarray, stream: Any = None) -> None:
        if not isinstance(arr, ndarray):
            raise TypeError("copy_from: expected a device array")
        if arr.shape != self.shape:
            raise ValueError(f"shape mismatch: {arr.shape} into a CUDA array of {self.shape}")
        want = np.float16 if self.desc.bits == 16 else np.float32
        if arr.dtype != want:
            raise ValueError(f"dtype mismatch: {arr.dtype} into {self.desc.bits}-bit texels")
        self.texels = np.asarray(arr, dtype=np.float32).copy()  # fetches return float32


class ResourceDescriptor:
    def __init__(self, restype: int, cuArr: CUDAarray | None = None, **kwargs: Any) -> None:  # noqa: N803
        self.array = cuArr


class TextureDescriptor:
    def __init__(self, addressModes=None, filterMode=0, readMode=0, sRGB=None, borderColors=None,  # noqa: N803
                 normalizedCoords=None, maxAnisotropy=None) -> None:
        if normalizedCoords not in (0, None, False):
            raise ValueError("the kernels use unnormalised coordinates")
        if borderColors is not None and any(c != 0 for c in borderColors):
            raise ValueError("the kernels need a zero border")
        self.filter = filterMode


class TextureObject:
    def __init__(self, res: ResourceDescriptor, tex: TextureDescriptor) -> None:
        if res.array is None or res.array.texels is None:
            raise RuntimeError("texture over an empty CUDA array")
        self.texels, self.filter, self.layered = res.array.texels, tex.filter, bool(res.array.flags & _LAYERED)


# ------------------------------------------------------------------------------------------------ modules, kernels

_CAPACITY = {  # bytes per view of each constant table, and the define that sizes it
    "c_fdk_rows": (48, "CBCT_MAX_FDK_VIEWS"),
    "c_fdk_segment": (4, "CBCT_MAX_FDK_VIEWS"),
    "c_rays": (96, "CBCT_MAX_RAY_VIEWS"),
    "c_ray_view": (4, "CBCT_MAX_RAY_VIEWS"),
}


class RawModule:
    launches: list[tuple[str, tuple, int]] = []  # (kernel, grid, views) of every launch, for the tests

    def __init__(self, *, code: str, options: tuple = (), name_expressions: tuple = (), **kwargs: Any) -> None:
        self.code, self.names = code, tuple(name_expressions)
        self.defines = {k: int(v) for k, v in (re.match(r"-D(\w+)=(\d+)", o).groups() for o in options if o.startswith("-D"))}
        self.constants: dict[str, bytes] = {}

    def compile(self) -> None:
        for name in self.names:
            base = name.split("<")[0]
            if not re.search(rf"\b{base}\s*\(", self.code):
                raise RuntimeError(f"no kernel {base} in the source")

    def get_function(self, name: str) -> Kernel:
        if name not in self.names:
            raise KeyError(name)
        return Kernel(self, name)

    def get_global(self, symbol: str) -> Symbol:
        if not re.search(rf"__constant__\s+\w+\s+{symbol}\[", self.code):
            raise RuntimeError(f"no __constant__ {symbol} in the source")
        return Symbol(self, symbol)

    def table(self, symbol: str, dtype: Any, count: int) -> np.ndarray:
        data = np.frombuffer(self.constants[symbol], dtype=dtype)
        if data.size < count:
            raise RuntimeError(f"the kernel reads {count} values of {symbol}, the host uploaded {data.size}")
        return data[:count]


class Symbol:
    def __init__(self, module: RawModule, name: str) -> None:
        self.module, self.name = module, name

    def copy_from_device_async(self, src: Pointer, size: int, stream: Any = None) -> None:
        per_view, define = _CAPACITY[self.name]
        capacity = per_view * self.module.defines[define]
        if size > capacity:
            raise RuntimeError(f"upload of {size} bytes overruns __constant__ {self.name} ({capacity} bytes)")
        if not src.array.flags.c_contiguous or src.array.nbytes < size:
            raise RuntimeError(f"upload source for {self.name} is not a contiguous array of {size} bytes")
        self.module.constants[self.name] = np.ascontiguousarray(src.array).view(np.uint8).tobytes()[:size]


def _bilinear(tex: np.ndarray, u: np.ndarray, v: np.ndarray, hardware: bool) -> np.ndarray:
    """Zero-border bilinear of one layer (nv, nu) at float32 (u, v), as sample_detector<HW>."""
    fu, fv = np.floor(u), np.floor(v)
    wu, wv = (u - fu).astype(np.float32), (v - fv).astype(np.float32)
    if hardware:
        wu, wv = np.round(wu * 256) / 256, np.round(wv * 256) / 256
    padded = np.pad(tex, ((2, 2), (2, 2)))
    iu, iv = fu.astype(np.int64) + 2, fv.astype(np.int64) + 2
    top = padded[iv, iu] + wu * (padded[iv, iu + 1] - padded[iv, iu])
    bottom = padded[iv + 1, iu] + wu * (padded[iv + 1, iu + 1] - padded[iv + 1, iu])
    return (top + wv * (bottom - top)).astype(np.float32)


class Kernel:
    def __init__(self, module: RawModule, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, grid: tuple, block: tuple, args: tuple, **kwargs: Any) -> None:
        views = int(args[-1]) if self.name.startswith("fdk_backproject") else int(grid[2])
        RawModule.launches.append((self.name, tuple(grid), views))
        if self.name.startswith("fdk_backproject"):
            self._fdk(grid, block, args)
        elif self.name.startswith("joseph_project"):
            self._project(grid, block, args)
        elif self.name == "joseph_backproject":
            self._matched(grid, block, args)
        else:
            raise KeyError(self.name)

    @staticmethod
    def _check_grid(grid: tuple, block: tuple, extent: tuple[int, int, int]) -> None:
        covered = tuple(g * b for g, b in zip(grid, block))
        if any(c < e for c, e in zip(covered, extent)) or any(c >= e + b for c, e, b in zip(covered[:2], extent[:2], block[:2])):
            raise RuntimeError(f"grid {grid} x block {block} does not tile the extent {extent}")

    def _fdk(self, grid, block, args) -> None:
        nz_per_thread, hardware = re.match(r"fdk_backproject<(\d+), (true|false)>", self.name).groups()
        tex, out, nx, ny, nz, nu, nv, n_views = args
        nx, ny, nz, nu, nv, n_views = map(int, (nx, ny, nz, nu, nv, n_views))
        self._check_grid(grid, block, (nx, ny, -(-nz // int(nz_per_thread))))
        if not (isinstance(out, ndarray) and out.dtype == np.float32 and out.shape[1:] == (nz, ny, nx)):
            raise RuntimeError(f"fdk_backproject: out {getattr(out, 'shape', None)} is not (K, {nz}, {ny}, {nx}) float32")
        if not tex.layered or tex.texels.shape[1:] != (nv, nu) or tex.texels.shape[0] < n_views:
            raise RuntimeError(f"fdk_backproject: texture {tex.texels.shape} for {n_views} views of ({nv}, {nu})")
        if (tex.filter == _FILTER_LINEAR) != (hardware == "true"):
            raise RuntimeError("texture filter mode does not match the kernel specialisation")
        rows = self.module.table("c_fdk_rows", np.float32, 12 * n_views).reshape(n_views, 3, 4)
        segments = self.module.table("c_fdk_segment", np.int32, n_views)
        k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        points = np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4).astype(np.float32)
        target = out.view(np.ndarray)
        for view in range(n_views):
            uw, vw, w = (points @ rows[view].T).T
            inv_w = (np.float32(1) / w).astype(np.float32)
            u = np.clip(uw * inv_w, -1, nu).astype(np.float32)
            v = np.clip(vw * inv_w, -1, nv).astype(np.float32)
            value = _bilinear(tex.texels[view], u, v, hardware == "true") * inv_w * inv_w
            target[segments[view]] += value.reshape(nz, ny, nx)

    def _project(self, grid, block, args) -> None:
        tex, out, nx, ny, nz, nu, nv, dx, dy, dz, accumulate = args
        nx, ny, nz, nu, nv = map(int, (nx, ny, nz, nu, nv))
        n_views = int(grid[2])
        self._check_grid(grid, block, (nu, nv, n_views))
        if tex.layered or tex.texels.shape != (nz, ny, nx):
            raise RuntimeError(f"joseph_project: texture {tex.texels.shape} is not the volume ({nz}, {ny}, {nx})")
        if not (isinstance(out, ndarray) and out.dtype == np.float32 and out.shape == (n_views, nv, nu)):
            raise RuntimeError(f"joseph_project: out {getattr(out, 'shape', None)} is not ({n_views}, {nv}, {nu}) float32")
        rays = self.module.table("c_rays", np.float64, 12 * n_views).reshape(n_views, 4, 3)
        padded = np.pad(tex.texels.astype(np.float32), PAD)
        result = np.empty((n_views, nv, nu), np.float32)
        _project_kernel(padded, np.ascontiguousarray(rays), np.array([nx, ny, nz]), np.array([dx, dy, dz], float), result)
        target = out.view(np.ndarray)
        if int(accumulate):
            target += result
        else:
            target[...] = result

    def _matched(self, grid, block, args) -> None:
        proj, vol, nx, ny, nz, nu, nv, dx, dy, dz = args
        nx, ny, nz, nu, nv = map(int, (nx, ny, nz, nu, nv))
        n_slots = int(grid[2])
        self._check_grid(grid, block, (nu, nv, n_slots))
        if proj.dtype != np.float32 or proj.shape[1:] != (nv, nu) or vol.shape != (nz, ny, nx) or vol.dtype != np.float32:
            raise RuntimeError("joseph_backproject: argument shapes or dtypes do not match")
        rays = self.module.table("c_rays", np.float64, 12 * n_slots).reshape(n_slots, 4, 3)
        views = self.module.table("c_ray_view", np.int32, n_slots)
        if views.min() < 0 or views.max() >= proj.shape[0]:
            raise RuntimeError("c_ray_view points outside the projections")
        acc = np.zeros((1, nz + 2 * PAD, ny + 2 * PAD, nx + 2 * PAD), np.float32)
        sub = np.ascontiguousarray(np.asarray(proj)[views])
        _adjoint_kernel(sub, np.ascontiguousarray(rays), np.arange(n_slots, dtype=np.int64), np.array([nx, ny, nz]),
                        np.array([dx, dy, dz], float), acc)
        vol.view(np.ndarray)[...] += acc[0, PAD:-PAD, PAD:-PAD, PAD:-PAD]


# ------------------------------------------------------------------------------------------------ the modules


def build() -> dict[str, types.ModuleType]:
    """Fresh ``cupy``, ``cupy.cuda``, ``cupy.cuda.runtime``, ``cupy.cuda.texture`` and ``cupyx`` modules."""
    cupy = types.ModuleType("cupy")
    cuda = types.ModuleType("cupy.cuda")
    runtime = types.ModuleType("cupy.cuda.runtime")
    texture = types.ModuleType("cupy.cuda.texture")
    cupyx = types.ModuleType("cupyx")

    for name, value in {
        "ndarray": ndarray, "asarray": asarray, "ascontiguousarray": ascontiguousarray, "cuda": cuda,
        "float16": np.float16, "float32": np.float32, "float64": np.float64, "int32": np.int32,
        "get_default_memory_pool": lambda: _Pool(), "RawModule": RawModule, "__version__": "fake",
        "fft": types.SimpleNamespace(rfft=_wrapped(np.fft.rfft), irfft=_wrapped(np.fft.irfft)),
    }.items():
        setattr(cupy, name, value)

    def passthrough(name: str) -> Any:
        value = getattr(np, name)
        return _wrapped(value) if callable(value) else value

    cupy.__getattr__ = passthrough
    for name, value in {
        "Device": Device, "Stream": Stream, "ExternalStream": lambda ptr, device_id=-1: Stream(ptr=ptr),
        "Event": Event, "get_current_stream": get_current_stream, "runtime": runtime, "texture": texture,
    }.items():
        setattr(cuda, name, value)
    for name, value in {
        "memGetInfo": lambda: (8 << 30, 16 << 30), "getDeviceCount": lambda: 1, "cudaArrayLayered": _LAYERED,
        "cudaChannelFormatKindFloat": 2, "cudaResourceTypeArray": 0, "cudaAddressModeBorder": 3,
        "cudaFilterModePoint": _FILTER_POINT, "cudaFilterModeLinear": _FILTER_LINEAR, "cudaReadModeElementType": 0,
    }.items():
        setattr(runtime, name, value)
    for cls in (ChannelFormatDescriptor, CUDAarray, ResourceDescriptor, TextureDescriptor, TextureObject):
        setattr(texture, cls.__name__, cls)
    cupyx.empty_pinned = lambda shape, dtype=np.float64: np.empty(shape, dtype=dtype)
    return {"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.runtime": runtime, "cupy.cuda.texture": texture, "cupyx": cupyx}


@contextlib.contextmanager
def installed(monkeypatch: Any):
    """Put the fake modules in ``sys.modules`` for the duration (and clear cbct's module cache around it)."""
    import sys

    from cbct.cuda import compile as compile_module
    from cbct.cuda import textures

    compile_module._module.cache_clear()
    textures.texture_limits.cache_clear()
    RawModule.launches.clear()
    for name, module in build().items():
        monkeypatch.setitem(sys.modules, name, module)
    try:
        yield sys.modules["cupy"]
    finally:
        compile_module._module.cache_clear()
        textures.texture_limits.cache_clear()
