"""BBC-Recon as functions: complete a sparse scan, reconstruct it, restore the volume."""

from __future__ import annotations

import logging
from typing import Any

import torch

from cbct._checks import check_array, check_geometry
from cbct.backend import to_host
from cbct.angles import plan_completion
from cbct.bbc.inference import complete_views
from cbct.bbc.model import FlowCompletionNet
from cbct.bbc.restoration import RestorationNet, restore_volume
from cbct.fdk import fdk
from cbct.geometry import ConeGeometry
from cbct.learned.device import model_device
from cbct.signatures import borrow_keywords

log = logging.getLogger(__name__)

__all__ = ["complete_scan", "bbc_recon"]


@borrow_keywords(plan_completion)
def complete_scan(
    model: FlowCompletionNet,
    projections,
    geom: ConeGeometry,
    *,
    device: str | torch.device | None = None,
    pairs_per_batch: int = 8,
    as_numpy: bool = True,
    **plan_options: Any,
) -> tuple[Any, ConeGeometry]:
    """Synthesise the missing views of a sparse scan with the completion network.

    Args:
        model: the completion network (e.g. :func:`cbct.bbc.weights.load_completion`).
        projections: (n_views, nv, nu) float32 sparse line integrals (NumPy, CuPy or torch).
        geom: their geometry.
        factor, angles, target: the dense views wanted (exactly one; see :func:`cbct.angles.plan_completion`):
            target ``angles`` (radians) or a ``target`` geometry must hold every acquired angle.
        full_circle: wrap-around between the last and the first view; ``None`` detects it.
        device: torch device for the network (default: the model's).

    Returns:
        ``(dense_projections, dense_geometry)``: (n_dense, nv, nu) float32 NumPy array (``as_numpy=False``: a torch
        tensor on the network's device) and its geometry.
    """
    geom = check_geometry(geom)
    if not isinstance(projections, torch.Tensor):
        projections = check_array(projections, "projections", geom.projection_shape, "the projection shape of the geometry")
    elif tuple(projections.shape) != geom.projection_shape:
        raise ValueError(f"projections must have shape {geom.projection_shape}, got {tuple(projections.shape)}")
    plan = plan_completion(geom, **plan_options)
    dense = complete_views(model, projections, plan, device=device, pairs_per_batch=pairs_per_batch, as_numpy=as_numpy)
    log.info("completed %d -> %d views (%d synthesised)", geom.n_views, plan.geometry.n_views, plan.missing.size)
    return dense, plan.geometry


@borrow_keywords(plan_completion)
def bbc_recon(
    projections,
    geom: ConeGeometry,
    *,
    completion: FlowCompletionNet,
    restoration: RestorationNet | None = None,
    device: str | torch.device | None = None,
    fdk_kwargs: dict[str, Any] | None = None,
    **plan_options: Any,
) -> dict[str, Any]:
    """Full BBC-Recon: completion (to ``factor``, ``angles`` or ``target``, exactly one; ``full_circle``; see
    :func:`complete_scan`), FDK of the completed scan, restoration.

    Returns a dict with ``"projections"`` (dense), ``"geometry"`` (dense), ``"fdk"`` (FDK of the completed scan,
    (z, y, x) mm⁻¹) and ``"volume"`` (restored, or the FDK when ``restoration`` is ``None``), as NumPy arrays. On a
    CUDA device the completed views go to the GPU FDK and its volume to the restoration without leaving the device
    (DLPack); only the returned arrays are copied to the host.
    """
    dev = model_device(completion, device)
    on_gpu = dev.type == "cuda"
    dense, dense_geom = complete_scan(completion, projections, geom, device=dev, as_numpy=not on_gpu, **plan_options)
    if on_gpu:
        import cupy

        dense = cupy.from_dlpack(dense)
    vol = fdk(dense, dense_geom, **(fdk_kwargs or {}))
    restored = restore_volume(restoration, vol, device=dev, as_numpy=False) if restoration is not None else vol
    return {"projections": to_host(dense), "geometry": dense_geom, "fdk": to_host(vol), "volume": to_host(restored)}
