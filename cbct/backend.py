"""Which backend runs an operator: chosen by where the data lives (NumPy → CPU, CuPy → CUDA).

Backend modules expose the same three kernels:
``project(volume, geom)``, ``backproject_fdk(projections, geom, segment_starts)`` and
``backproject_matched(projections, geom, views=None)`` on validated, C-contiguous float arrays.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

import numpy as np

_BACKENDS = {"numpy": "cbct.cpu.kernels", "cupy": "cbct.cuda.kernels"}


def array_library(x: object) -> str:
    """Name of the library that owns array ``x``: ``"numpy"``, ``"cupy"`` or ``"torch"``."""
    module = type(x).__module__.split(".")[0]
    if module == "numpy":
        return "numpy"
    if module == "cupy" and "cupy" in sys.modules:
        return "cupy"
    if module == "torch" and "torch" in sys.modules:
        return "torch"
    raise TypeError(f"expected a NumPy or CuPy array (or a torch tensor), got {type(x).__module__}.{type(x).__name__}")


def array_module(x: object) -> ModuleType:
    """The NumPy-like module for array ``x`` (``numpy`` or ``cupy``)."""
    return importlib.import_module(array_library(x))


def kernels_for(x: object) -> ModuleType:
    """The kernel module that runs on the device where ``x`` lives."""
    name = array_library(x)
    if name not in _BACKENDS:
        raise TypeError(f"{name} arrays are not accepted here; use cbct.torch for torch tensors")
    return importlib.import_module(_BACKENDS[name])


def is_cupy(x: object) -> bool:
    """Whether ``x`` is a CuPy array (without importing CuPy)."""
    return type(x).__module__.split(".")[0] == "cupy"


def to_host(x: Any) -> Any:
    """A NumPy array from NumPy, CuPy or torch data (``None`` stays ``None``)."""
    if x is None or isinstance(x, np.ndarray):
        return x
    if is_cupy(x):
        return x.get()
    if type(x).__module__.split(".")[0] == "torch":
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_device(x: Any, device: str) -> Any:
    """``x`` as a NumPy array (``device="cpu"``) or a CuPy array on ``cuda[:N]``."""
    if device == "cpu":
        return to_host(x)
    import cupy

    index = int(device.split(":")[1]) if ":" in device else 0
    with cupy.cuda.Device(index):
        return cupy.asarray(x)
