"""CUDA textures for the kernels: a layered 2D texture of projections and a 3D texture of a volume.

Both use unnormalised coordinates (texel ``i`` has its centre at ``i + 0.5``) and ``cudaAddressModeBorder`` with
border colour 0, so reads outside the array return 0: the kernels' "zero outside the detector / grid" needs no
padding. ``filter="point"`` (the default, for exact software interpolation) or ``"linear"`` (the texture unit's
bilinear/trilinear filter, 8-bit fractional weights). ``texture_dtype="float16"`` stores half-precision texels
(half the memory and texture-cache footprint); fetches return float32.

The returned :class:`Texture` owns the CUDA array, the texture object and the device array it was copied from:
keep it alive until every kernel reading it has completed (synchronise the stream before dropping it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

__all__ = ["Texture", "TEXTURE_DTYPES", "layered_texture", "volume_texture", "texture_limits"]

TEXTURE_DTYPES = ("float32", "float16")
#: cudaArrayLayered of CUDA's driver_types.h (CuPy's runtime module does not export it).
CUDA_ARRAY_LAYERED = 0x01
Filter = Literal["point", "linear"]

_DEFAULT_LIMITS = {  # CUDA limits of compute capability 8.x/9.x, used when the device does not report them
    "MaxTexture2DLayeredWidth": 32768,
    "MaxTexture2DLayeredHeight": 32768,
    "MaxTexture2DLayeredLayers": 2048,
    "MaxTexture3DWidth": 16384,
    "MaxTexture3DHeight": 16384,
    "MaxTexture3DDepth": 16384,
}


@dataclasses.dataclass(eq=False)
class Texture:
    """A texture object with the CUDA array behind it.

    Attributes:
        handle: the ``cupy.cuda.texture.TextureObject`` (pass it as a kernel argument).
        array: the ``cupy.cuda.texture.CUDAarray`` holding the texels.
        source: the device array the texels were copied from (kept until the copy has run).
        nbytes: bytes of the CUDA array.
    """

    handle: Any
    array: Any
    source: Any
    nbytes: int


@functools.lru_cache(maxsize=None)
def texture_limits(device_id: int) -> dict[str, int]:
    """Texture size limits of a device (layered 2D width/height/layers, 3D width/height/depth); read once."""
    import cupy

    attrs = cupy.cuda.Device(device_id).attributes
    return {key: int(attrs.get(key, default)) for key, default in _DEFAULT_LIMITS.items()}


def _check_dtype(texture_dtype: str) -> int:
    if texture_dtype not in TEXTURE_DTYPES:
        raise ValueError(f"texture_dtype must be one of {TEXTURE_DTYPES}, got {texture_dtype!r}")
    return 16 if texture_dtype == "float16" else 32


def _make(src: Any, flags: int, texture_dtype: str, filter: Filter, stream: Any) -> Texture:
    import cupy
    from cupy.cuda import runtime, texture

    bits = _check_dtype(texture_dtype)
    if filter not in ("point", "linear"):
        raise ValueError(f"filter must be 'point' or 'linear', got {filter!r}")
    with stream:
        data = cupy.ascontiguousarray(src, dtype=cupy.float16 if bits == 16 else cupy.float32)
    depth, height, width = data.shape
    channel = texture.ChannelFormatDescriptor(bits, 0, 0, 0, runtime.cudaChannelFormatKindFloat)
    array = texture.CUDAarray(channel, width, height, depth, flags)
    array.copy_from(data, stream)
    resource = texture.ResourceDescriptor(runtime.cudaResourceTypeArray, cuArr=array)
    description = texture.TextureDescriptor(
        addressModes=(runtime.cudaAddressModeBorder,) * 3,
        filterMode=runtime.cudaFilterModeLinear if filter == "linear" else runtime.cudaFilterModePoint,
        readMode=runtime.cudaReadModeElementType,
        normalizedCoords=0,
        borderColors=(0.0, 0.0, 0.0, 0.0),
    )
    handle = texture.TextureObject(resource, description)
    return Texture(handle, array, data, depth * height * width * bits // 8)


def layered_texture(stack: Any, *, texture_dtype: str = "float32", filter: Filter = "point", stream: Any = None) -> Texture:
    """Layered 2D texture of a CuPy ``(layers, height, width)`` array (one layer per view), copied on ``stream``."""
    return _checked(stack, "stack", "layered", texture_dtype, filter, stream)


def volume_texture(volume: Any, *, texture_dtype: str = "float32", filter: Filter = "point", stream: Any = None) -> Texture:
    """3D texture of a CuPy ``(nz, ny, nx)`` volume (texture x = i, y = j, z = k), copied on ``stream``."""
    return _checked(volume, "volume", "3D", texture_dtype, filter, stream)


#: Per kind of texture: the CUDA array flags, the axes of the array and the device limits along them.
_KINDS = {
    "layered": (CUDA_ARRAY_LAYERED, "(layers, height, width)",
                ("MaxTexture2DLayeredLayers", "MaxTexture2DLayeredHeight", "MaxTexture2DLayeredWidth")),
    "3D": (0, "(nz, ny, nx)", ("MaxTexture3DDepth", "MaxTexture3DHeight", "MaxTexture3DWidth")),
}


def _checked(src: Any, name: str, kind: str, texture_dtype: str, filter: Filter, stream: Any) -> Texture:
    """:func:`_make` after checking that ``src`` has three axes within the device's limits for ``kind``."""
    import cupy

    flags, axes, limit_keys = _KINDS[kind]
    stream = cupy.cuda.get_current_stream() if stream is None else stream
    if src.ndim != 3:
        raise ValueError(f"{name} must be {axes}, got shape {tuple(src.shape)}")
    limits = texture_limits(src.device.id)
    largest = tuple(limits[key] for key in limit_keys)
    if any(n > m for n, m in zip(src.shape, largest)):
        raise ValueError(f"{name} of shape {tuple(src.shape)} {axes} exceeds the device's {kind} texture limit {largest}")
    return _make(src, flags, texture_dtype, filter, stream)
