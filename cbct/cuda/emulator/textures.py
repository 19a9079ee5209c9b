"""The stand-in's ``cupy.cuda.texture``: CUDA arrays and texture objects that the CPU harness's fetches read.

Same constructors and keywords as CuPy's (``ChannelFormatDescriptor(x, y, z, w, f)``, ``CUDAarray(desc, width,
height=0, depth=0, flags=0)``, ``ResourceDescriptor(restype, cuArr=None, ...)``, ``TextureDescriptor(addressModes=None,
filterMode=0, readMode=0, sRGB=None, borderColors=None, normalizedCoords=None, maxAnisotropy=None)``,
``TextureObject(ResDesc, TexDesc)``). A texture object's ``ptr`` is the address of a ``CbctTextureDesc``
(``cuda_host.h``) that points at the CUDA array's texels; what the harness cannot represent is refused here.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from cbct.cuda.textures import CUDA_ARRAY_LAYERED

__all__ = ["TextureDesc", "ChannelFormatDescriptor", "CUDAarray", "ResourceDescriptor", "TextureDescriptor",
           "TextureObject", "RUNTIME_CONSTANTS"]

TEXTURE_MAGIC = 0x6362637474657831
#: cudaResourceType, cudaChannelFormatKind, cudaTextureAddressMode, cudaTextureFilterMode, cudaTextureReadMode.
RUNTIME_CONSTANTS = {
    "cudaResourceTypeArray": 0, "cudaResourceTypeMipmappedArray": 1, "cudaResourceTypeLinear": 2,
    "cudaResourceTypePitch2D": 3,
    "cudaChannelFormatKindSigned": 0, "cudaChannelFormatKindUnsigned": 1, "cudaChannelFormatKindFloat": 2,
    "cudaChannelFormatKindNone": 3,
    "cudaAddressModeWrap": 0, "cudaAddressModeClamp": 1, "cudaAddressModeMirror": 2, "cudaAddressModeBorder": 3,
    "cudaFilterModePoint": 0, "cudaFilterModeLinear": 1,
    "cudaReadModeElementType": 0, "cudaReadModeNormalizedFloat": 1,
    "cudaArrayDefault": 0, "cudaArraySurfaceLoadStore": 0x02,
}


class TextureDesc(ctypes.Structure):
    """``CbctTextureDesc`` of ``cuda_host.h``: keep both in step."""

    _fields_ = [
        ("magic", ctypes.c_uint64), ("texels", ctypes.c_void_p),
        ("width", ctypes.c_int64), ("height", ctypes.c_int64), ("depth", ctypes.c_int64), ("layers", ctypes.c_int64),
        ("texel_bits", ctypes.c_int32), ("address_mode", ctypes.c_int32 * 3), ("border_color", ctypes.c_float * 4),
        ("filter_mode", ctypes.c_int32), ("normalized", ctypes.c_int32), ("dims", ctypes.c_int32),
    ]


class ChannelFormatDescriptor:
    """One channel of 16- or 32-bit floats is what the harness's textures hold."""

    def __init__(self, x: int, y: int, z: int, w: int, f: int) -> None:
        if (y, z, w) != (0, 0, 0) or f != RUNTIME_CONSTANTS["cudaChannelFormatKindFloat"] or x not in (16, 32):
            raise ValueError(f"the CPU harness's textures hold one float channel of 16 or 32 bits, got "
                             f"({x}, {y}, {z}, {w}) of kind {f}")
        self.x, self.y, self.z, self.w, self.f = x, y, z, w, f

    def get_channel_format(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "z": self.z, "w": self.w, "f": self.f}


class CUDAarray:
    """Texels ``(depth or layers, height, width)``; ``copy_from`` a device (or host) array of the texel type."""

    def __init__(self, desc: ChannelFormatDescriptor, width: int, height: int = 0, depth: int = 0,
                 flags: int = 0) -> None:
        if width < 1 or height < 0 or depth < 0:
            raise ValueError(f"invalid CUDA array extent ({width}, {height}, {depth})")
        self.desc, self.width, self.height, self.depth, self.flags = desc, int(width), int(height), int(depth), int(flags)
        self.ndim = 3 if depth else (2 if height else 1)
        if flags & CUDA_ARRAY_LAYERED and depth == 0:
            raise ValueError("a layered CUDA array needs depth (the number of layers)")
        dtype = np.float16 if desc.x == 16 else np.float32
        self.texels = np.zeros((max(depth, 1), max(height, 1), width), dtype=dtype)

    def _check(self, arr: Any) -> np.ndarray:
        data = np.asarray(arr)
        expected = tuple(d for d in (self.depth, self.height, self.width) if d)
        if data.shape != expected:
            raise ValueError(f"shape mismatch: {data.shape} for a CUDA array of {expected}")
        if data.dtype != self.texels.dtype:
            raise ValueError(f"dtype mismatch: {data.dtype} into {self.desc.x}-bit float texels")
        if not data.flags.c_contiguous:
            raise ValueError("CUDAarray.copy_from needs a C-contiguous array")
        return data

    def copy_from(self, in_arr: Any, stream: Any = None) -> None:
        self.texels[...] = self._check(in_arr).reshape(self.texels.shape)

    def copy_to(self, out_arr: Any, stream: Any = None) -> None:
        self._check(out_arr)[...] = self.texels.reshape(np.asarray(out_arr).shape)


class ResourceDescriptor:
    """A resource over a CUDA array (the only kind the kernels use)."""

    def __init__(self, restype: int, cuArr: CUDAarray | None = None, arr: Any = None,  # noqa: N803
                 chDesc: ChannelFormatDescriptor | None = None, sizeInBytes: int = 0, width: int = 0,  # noqa: N803
                 height: int = 0, pitchInBytes: int = 0) -> None:  # noqa: N803
        if restype != RUNTIME_CONSTANTS["cudaResourceTypeArray"] or cuArr is None:
            raise ValueError("the CPU harness's textures are over CUDA arrays (cudaResourceTypeArray, cuArr=...)")
        self.restype, self.cuArr = restype, cuArr


class TextureDescriptor:
    """Address modes per axis, filter, read mode, border colour, normalised coordinates."""

    def __init__(self, addressModes: Any = None, filterMode: int = 0, readMode: int = 0, sRGB: Any = None,  # noqa: N803
                 borderColors: Any = None, normalizedCoords: Any = None, maxAnisotropy: Any = None) -> None:  # noqa: N803
        modes = tuple(addressModes) if addressModes is not None else (0, 0, 0)
        if len(modes) > 3 or any(m not in (0, 1, 2, 3) for m in modes):
            raise ValueError(f"addressModes must be up to three cudaTextureAddressMode values, got {addressModes!r}")
        if filterMode not in (0, 1):
            raise ValueError(f"filterMode must be cudaFilterModePoint or cudaFilterModeLinear, got {filterMode!r}")
        if readMode != RUNTIME_CONSTANTS["cudaReadModeElementType"]:
            raise ValueError("the CPU harness reads float texels as they are (cudaReadModeElementType)")
        colors = tuple(borderColors) if borderColors is not None else (0.0,) * 4
        if len(colors) > 4:
            raise ValueError(f"borderColors must be up to four values, got {borderColors!r}")
        self.address_modes = modes + (0,) * (3 - len(modes))
        self.filter_mode, self.read_mode = int(filterMode), int(readMode)
        self.border_colors = colors + (0.0,) * (4 - len(colors))
        self.normalized = bool(normalizedCoords)


class TextureObject:
    """A texture object; its ``ptr`` is what a kernel receives as ``cudaTextureObject_t``."""

    def __init__(self, ResDesc: ResourceDescriptor, TexDesc: TextureDescriptor) -> None:  # noqa: N803
        array = ResDesc.cuArr
        layered = bool(array.flags & CUDA_ARRAY_LAYERED)
        self.ResDesc, self.TexDesc = ResDesc, TexDesc
        self._desc = TextureDesc(
            magic=TEXTURE_MAGIC, texels=array.texels.ctypes.data, width=array.width, height=max(array.height, 1),
            depth=1 if layered else max(array.depth, 1), layers=array.depth if layered else 0,
            texel_bits=array.desc.x, address_mode=(ctypes.c_int32 * 3)(*TexDesc.address_modes),
            border_color=(ctypes.c_float * 4)(*TexDesc.border_colors), filter_mode=TexDesc.filter_mode,
            normalized=int(TexDesc.normalized), dims=2 if layered else array.ndim,
        )
        self._array = array  # keep the texels alive as long as the handle

    @property
    def ptr(self) -> int:
        return ctypes.addressof(self._desc)
