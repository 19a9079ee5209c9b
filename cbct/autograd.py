"""Differentiable cone-beam operators for PyTorch: the Joseph projector and its exact adjoint.

``project(volume, geom)`` and ``backproject(projections, geom)`` take torch tensors with any leading batch
dimensions, ``(..., nz, ny, nx)`` and ``(..., n_views, nv, nu)``, and are ``torch.autograd.Function``s whose
backward is the adjoint (so the backward of ``project`` is ``backproject`` and the other way round, to any order).

- CUDA tensors go to CuPy through DLPack, without copies, and run the CUDA kernels on the tensor's device and on
  torch's current stream (float32 arithmetic; float64 tensors are computed in float32).
- CPU tensors go to NumPy with ``Tensor.numpy()`` (no copy for contiguous tensors) and run the CPU kernels, in
  float32 or float64: ``torch.autograd.gradcheck`` runs on the CPU in float64.

torch is imported when these functions are first called, never when ``cbct`` is imported.
"""

from __future__ import annotations

import functools
from typing import Any

from cbct._checks import check_geometry
from cbct.geometry import ConeGeometry

__all__ = ["project", "backproject"]


def _torch():
    import torch

    return torch


def _check_tensor(x: Any, name: str, trailing: tuple[int, ...], what: str) -> None:
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__module__}.{type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 (or float64), got {x.dtype}")
    n = len(trailing)
    if x.ndim < n or tuple(x.shape[-n:]) != tuple(trailing):
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, trailing))}) ({what}), got {tuple(x.shape)}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be on the CPU or a CUDA device, got {x.device}")


def to_cupy(x: Any) -> Any:
    """A CuPy view of the CUDA tensor ``x`` (made contiguous first), through DLPack: no copy."""
    import cupy

    return cupy.from_dlpack(x.detach().contiguous())


def _run(x: Any, geom: ConeGeometry, operation: str) -> Any:
    """Apply ``operation`` ("project" or "backproject") to the tensor ``x`` on its device; returns a new tensor."""
    import cbct.operators as ops

    torch = _torch()

    def apply(array: Any) -> Any:
        if operation == "project":
            return ops.project(array, geom)
        return ops.backproject(array, geom, weighting="matched")

    if x.device.type == "cuda":
        import cupy

        device = x.device.index if x.device.index is not None else torch.cuda.current_device()
        with cupy.cuda.Device(device), cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream):
            return torch.from_dlpack(apply(to_cupy(x)))
    return torch.from_numpy(apply(x.detach().contiguous().numpy()))


_ADJOINT = {"project": "backproject", "backproject": "project"}
_DOC = {"project": "Joseph forward projection; backward: the matched backprojection.",
        "backproject": "Matched backprojection (adjoint of the Joseph projector); backward: the forward projection."}


@functools.lru_cache(maxsize=None)
def _function(operation: str) -> Any:
    """The ``torch.autograd.Function`` of ``operation`` ("project" or "backproject"): forward applies it, backward
    its adjoint (built on first use, so that torch loads lazily)."""
    torch = _torch()

    class Operator(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, geom: ConeGeometry) -> Any:
            ctx.geom = geom
            return _run(x, geom, operation)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
            return (_function(_ADJOINT[operation]).apply(grad, ctx.geom) if ctx.needs_input_grad[0] else None), None

    Operator.__name__ = Operator.__qualname__ = operation.capitalize()
    Operator.__doc__ = _DOC[operation]
    return Operator


def project(volume: Any, geom: ConeGeometry) -> Any:
    """Differentiable cone-beam forward projection.

    Args:
        volume: (..., nz, ny, nx) float32/float64 tensor of attenuation in mm⁻¹ on ``geom.volume``, CPU or CUDA.
        geom: the acquisition geometry.

    Returns:
        (..., n_views, nv, nu) line integrals, same dtype and device.
    """
    geom = check_geometry(geom)
    _check_tensor(volume, "volume", geom.volume.shape, "the volume shape of the geometry")
    return _function("project").apply(volume, geom)


def backproject(projections: Any, geom: ConeGeometry) -> Any:
    """Differentiable matched backprojection: the exact adjoint of :func:`project`.

    Args:
        projections: (..., n_views, nv, nu) float32/float64 tensor, CPU or CUDA.
        geom: the acquisition geometry.

    Returns:
        (..., nz, ny, nx), same dtype and device.
    """
    geom = check_geometry(geom)
    _check_tensor(projections, "projections", geom.projection_shape, "the projection shape of the geometry")
    return _function("backproject").apply(projections, geom)
