"""Run-time compilation of the CUDA kernels through CuPy (NVRTC): lazy, memoised per device and file.

One :class:`KernelModule` per ``(device, kernel file)``: its first use compiles every specialisation of the file
(CuPy also keeps the binary in its on-disk kernel cache, so a later process only loads it). Kernel parameters
that vary per view live in the module's ``__constant__`` arrays; since those are one per module, a module
serialises its users: :meth:`KernelModule.exclusive` makes the caller's stream wait for the module's previous
launch (an event) before the caller uploads constants and launches, which keeps concurrent streams correct.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Iterator
from typing import Any

from cbct.cuda.sources import KERNEL_FILES, kernel_source

log = logging.getLogger(__name__)

__all__ = [
    "MAX_FDK_VIEWS",
    "MAX_MATCHED_VIEWS",
    "MAX_PROJECT_VIEWS",
    "FDK_VOXELS_PER_THREAD",
    "KernelModule",
    "get_module",
    "fdk_kernel_name",
    "project_kernel_name",
]

#: Views per launch: the size of the constant-memory tables of csrc/backprojection.cu and forward_projection.cu.
MAX_FDK_VIEWS = 512
MAX_MATCHED_VIEWS = 256
MAX_PROJECT_VIEWS = 512
#: Voxels along z per thread of the FDK backprojection (the specialisations compiled: 4 and 8).
FDK_VOXELS_PER_THREAD = (4, 8)

_DEFINES = {
    "backprojection.cu": {"CBCT_MAX_FDK_VIEWS": MAX_FDK_VIEWS, "CBCT_MAX_RAY_VIEWS": MAX_MATCHED_VIEWS},
    "forward_projection.cu": {"CBCT_MAX_RAY_VIEWS": MAX_PROJECT_VIEWS},
}


def fdk_kernel_name(voxels_per_thread: int, hardware_filter: bool) -> str:
    """Name expression of an FDK backprojection specialisation."""
    if voxels_per_thread not in FDK_VOXELS_PER_THREAD:
        raise ValueError(f"voxels_per_thread must be one of {FDK_VOXELS_PER_THREAD}, got {voxels_per_thread!r}")
    return f"fdk_backproject<{int(voxels_per_thread)}, {'true' if hardware_filter else 'false'}>"


def project_kernel_name(hardware_filter: bool) -> str:
    """Name expression of a forward-projection specialisation."""
    return f"joseph_project<{'true' if hardware_filter else 'false'}>"


def compile_options(file: str) -> tuple[str, ...]:
    """NVRTC options for a kernel file (CuPy adds the architecture of the device)."""
    if file not in KERNEL_FILES:
        raise ValueError(f"unknown kernel file {file!r}; expected one of {sorted(KERNEL_FILES)}")
    return ("--std=c++17", *(f"-D{k}={v}" for k, v in sorted(_DEFINES[file].items())))


@dataclasses.dataclass(eq=False)
class KernelModule:
    """The compiled kernels of one ``csrc`` file on one device, and their constant memory.

    Attributes:
        file: the kernel file, e.g. ``"backprojection.cu"``.
        device_id: the CUDA device the module is loaded on.
        module: the ``cupy.RawModule``.
    """

    file: str
    device_id: int
    module: Any
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    _last_launch: Any = dataclasses.field(default=None, repr=False)

    def function(self, name: str) -> Any:
        """The ``cupy.RawKernel`` of a name expression listed in :data:`cbct.cuda.sources.KERNEL_FILES`."""
        if name not in KERNEL_FILES[self.file]:
            raise ValueError(f"{self.file} has no kernel {name!r}; it has {KERNEL_FILES[self.file]}")
        return self.module.get_function(name)

    def upload(self, symbol: str, values: Any, stream: Any) -> None:
        """Copy the device array ``values`` (C-contiguous) into the ``__constant__`` array ``symbol`` on ``stream``.

        Call inside :meth:`exclusive`.
        """
        pointer = self.module.get_global(symbol)
        pointer.copy_from_device_async(values.data, values.nbytes, stream)

    @contextlib.contextmanager
    def exclusive(self, stream: Any) -> Iterator[None]:
        """Order this module's constant uploads and launches on ``stream`` after its previous launch anywhere.

        Work enqueued inside the block (constant uploads, then the launch that reads them) cannot overlap another
        stream's use of the same constants; an event recorded at the end marks the module's last use.
        """
        import cupy

        with self._lock:
            if self._last_launch is not None:
                stream.wait_event(self._last_launch)
            yield
            event = cupy.cuda.Event(block=False, disable_timing=True, interprocess=False)
            event.record(stream)
            self._last_launch = event


@functools.lru_cache(maxsize=None)
def _module(file: str, device_id: int) -> KernelModule:
    import cupy

    options = compile_options(file)
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=kernel_source(file), options=options, name_expressions=KERNEL_FILES[file])
        module.compile()
    log.debug("compiled %s for device %d with %s", file, device_id, " ".join(options))
    return KernelModule(file, device_id, module)


def get_module(file: str, device_id: int | None = None) -> KernelModule:
    """The compiled module of ``csrc/<file>`` on ``device_id`` (default: the current CuPy device), compiled once."""
    if file not in KERNEL_FILES:
        raise ValueError(f"unknown kernel file {file!r}; expected one of {sorted(KERNEL_FILES)}")
    if device_id is None:
        import cupy

        device_id = cupy.cuda.Device().id
    return _module(file, int(device_id))
