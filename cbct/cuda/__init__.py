"""The CUDA backend: kernels in ``csrc/*.cu`` compiled at run time through CuPy (NVRTC).

Importing this package imports neither CuPy nor torch; CuPy is imported when a kernel first runs.

- :mod:`cbct.cuda.kernels`: ``project``, ``backproject_fdk`` and ``backproject_matched`` on CuPy arrays (what
  :mod:`cbct.operators` dispatches to for CuPy input), device-resident in and out.
- :mod:`cbct.cuda.memory`: FDK from host (NumPy) projections streamed through the GPU in chunks, with the volume
  split along z when it does not fit in GPU memory (:func:`fdk_host`).
- :mod:`cbct.cuda.planning`: the exact cuts (view chunks, z slabs, detector-row bands) and the streaming plan;
  :mod:`cbct.cuda.textures`: layered / 3D textures with a zero border, float32 or float16 texels.
- :mod:`cbct.cuda.compile`, :mod:`cbct.cuda.sources`: loading and compiling the kernels;
  :mod:`cbct.cuda.offline`: ``nvcc`` resource checks (no GPU needed).
- :mod:`cbct.autograd` (outside this package): torch ``autograd.Function``s over these kernels.
"""

from __future__ import annotations

__all__ = ["is_available", "fdk_host"]


def is_available() -> bool:
    """Whether CuPy is installed and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver or no device
        return False


def __getattr__(name: str):
    if name == "fdk_host":
        from cbct.cuda.memory import fdk_host

        return fdk_host
    raise AttributeError(f"module 'cbct.cuda' has no attribute {name!r}")
