"""Memory a request needs, and what the machine has: refuse a request that cannot fit before it allocates anything.

The estimates are upper bounds of the peak working set of cbct's own code paths (float32 volumes and projections,
the FFT buffers of the ramp filter, float64 temporaries of phantoms and noise), not exact figures: they exist to turn
a four-minute wait for a ``MemoryError`` into an immediate, explained refusal.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
from collections.abc import Sequence

log = logging.getLogger(__name__)

__all__ = ["InsufficientMemoryError", "available_host_bytes", "available_gpu_bytes", "check_memory", "format_bytes",
           "volume_bytes", "projection_bytes", "fdk_bytes", "simulation_bytes"]

FLOAT32 = 4


class InsufficientMemoryError(MemoryError):
    """A request needs more memory than is available; the message gives both figures."""


def format_bytes(n: float) -> str:
    """``n`` bytes in a readable unit (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _cgroup_free() -> int | None:
    """Bytes left under the cgroup (v2 or v1) memory limit of this process, if one is set."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = pathlib.Path(limit_file).read_text().strip()
            usage = int(pathlib.Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None
        return max(int(limit) - usage, 0)
    return None


def available_host_bytes() -> int:
    """Host memory a new allocation can use: ``MemAvailable`` of ``/proc/meminfo``, within a cgroup limit."""
    free = None
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:  # not Linux: physical pages as an upper bound
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = 1 << 62
    cgroup = _cgroup_free()
    return min(free, cgroup) if cgroup is not None else free


def available_gpu_bytes(device: str) -> int | None:
    """Free memory of a CUDA device (``cuda`` / ``cuda:N``), or ``None`` when it cannot be asked."""
    try:
        import cupy

        from cbct.cuda.kernels import free_device_memory

        index = int(device.split(":")[1]) if ":" in device else 0
        with cupy.cuda.Device(index):
            return free_device_memory()  # free driver memory and CuPy's pooled free blocks
    except Exception:  # no CuPy, no driver: the allocation itself will tell
        return None


def check_memory(need: int, what: str, *, device: str = "cpu") -> None:
    """Raise :class:`InsufficientMemoryError` when ``need`` bytes exceed what ``device`` has free.

    Args:
        need: estimated peak bytes of the request.
        what: the request in words (``"FDK of a 512^3 volume from 360 views of 512 x 640"``).
        device: ``"cpu"`` (host memory) or ``"cuda[:N]"``.
    """
    if device == "cpu":
        have, where = available_host_bytes(), "host memory available"
    else:
        have, where = available_gpu_bytes(device), f"free on {device}"
        if have is None:
            return
    if need > have:
        raise InsufficientMemoryError(f"{what} needs about {format_bytes(need)} of memory but only {format_bytes(have)} "
                                      f"is {where}; use a smaller size, fewer views or a machine with more memory")
    log.debug("%s: about %s needed, %s %s", what, format_bytes(need), format_bytes(have), where)


def volume_bytes(shape: int | Sequence[int]) -> int:
    """Bytes of a float32 volume of ``shape`` (one number: a cube)."""
    dims = [int(shape)] * 3 if isinstance(shape, (int, float)) else [int(s) for s in shape]
    return FLOAT32 * math.prod(dims)


def projection_bytes(n_views: int, detector_shape: Sequence[int]) -> int:
    """Bytes of float32 projections ``(n_views, nv, nu)``."""
    return FLOAT32 * int(n_views) * int(detector_shape[0]) * int(detector_shape[1])


def fdk_bytes(volume_shape: int | Sequence[int], n_views: int, detector_shape: Sequence[int]) -> int:
    """Peak of FDK: the volume, the projections, their zero-padded complex spectrum and the filtered rows.

    Rows are padded to about twice their length; the spectrum (complex128 from NumPy's ``rfft``) and the float64
    inverse are about four times the float32 projections each.
    """
    return volume_bytes(volume_shape) + 10 * projection_bytes(n_views, detector_shape)


def simulation_bytes(volume_shape: int | Sequence[int], n_views: int, detector_shape: Sequence[int]) -> int:
    """Peak of a simulated scan: the phantom with its float64 coordinate temporaries (about 8 float32 volumes) and
    the projections with the float64 noise model (about 5 float32 projection sets)."""
    return 8 * volume_bytes(volume_shape) + 5 * projection_bytes(n_views, detector_shape)
