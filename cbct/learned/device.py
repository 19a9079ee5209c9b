"""One device resolution for training, evaluation and the pipeline stages, and the one way data crosses between
NumPy / CuPy arrays and torch tensors (CuPy through DLPack: no host round trip)."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import torch

from cbct.backend import is_cupy

__all__ = ["resolve_device", "model_device", "describe_device", "autocast_dtype", "as_tensor", "like_input"]


def resolve_device(name: str | torch.device | None = "auto", data: Any = None, *,
                   threads: int | None = None) -> torch.device:
    """The torch device for ``name``: ``"auto"`` is CUDA when available, else the CPU; ``None`` follows ``data``
    (CuPy arrays: their GPU, anything else: the CPU); any other name as torch reads it. On the CPU torch then uses
    ``threads`` threads (``None``: its own choice).

    Raises:
        RuntimeError: a CUDA device asked for where CUDA is not available.
        ValueError: a name torch does not know.
    """
    dev = _named_device(name, data)
    if dev.type == "cpu" and threads:
        torch.set_num_threads(int(threads))
    return dev


def _named_device(name: str | torch.device | None, data: Any) -> torch.device:
    if name is None:
        return torch.device(f"cuda:{data.device.id}") if is_cupy(data) else torch.device("cpu")
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {name!r} is not a torch device (cpu, cuda, cuda:1, auto): {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(name)!r} requested but CUDA is not available")
    return dev


def model_device(model: torch.nn.Module, device: str | torch.device | None = None) -> torch.device:
    """Where to run ``model``: ``device`` when given, else where its parameters are."""
    return torch.device(device) if device is not None else next(model.parameters()).device


def autocast_dtype(dev: torch.device) -> torch.dtype:
    """Mixed-precision dtype on ``dev``: bfloat16 where the GPU supports it, else float16."""
    return torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16


def describe_device(dev: torch.device) -> str:
    """``dev`` in words for provenance: the GPU's name, or the CPU and its torch threads."""
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA)"
    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch thread(s)"


def as_tensor(x: Any, device: torch.device) -> torch.Tensor:
    """``x`` (NumPy, CuPy or torch) as a float32 torch tensor on ``device`` (CuPy through DLPack: no host copy)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.float32)
    if is_cupy(x):
        return torch.from_dlpack(x).to(device=device, dtype=torch.float32)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)


def like_input(result: Any, original: Any) -> Any:
    """``result`` (a torch tensor, or NumPy) on the backend of ``original``: CuPy through DLPack (no host copy) when
    ``original`` is CuPy, else NumPy."""
    if is_cupy(original):
        import cupy

        return cupy.asarray(result) if isinstance(result, np.ndarray) else cupy.from_dlpack(result.contiguous())
    return result if isinstance(result, np.ndarray) else result.detach().cpu().numpy()
