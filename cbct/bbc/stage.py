"""Pipeline stages of BBC-Recon: projection completion (before FDK) and restoration (after it).

Registered by the pipeline engine as ``cbct.bbc.stage.completion_stage`` and ``cbct.bbc.stage.restoration_stage``;
each takes a :class:`~cbct.pipeline.state.PipelineState` and returns a new one.
"""

from __future__ import annotations

import logging
import time

from cbct.angles import plan_completion
from cbct.backend import is_cupy
from cbct.pipeline.state import PipelineState

log = logging.getLogger(__name__)

__all__ = ["completion_stage", "restoration_stage"]


def completion_stage(
    state: PipelineState,
    *,
    weights: str | None = None,
    factor: int | None = None,
    device: str | None = None,
    full_circle: bool | None = None,
    pairs_per_batch: int = 8,
) -> PipelineState:
    """Replace the sparse projections and geometry of ``state`` by the completed dense ones.

    Args:
        state: with ``projections`` (n_views, nv, nu) and their ``geometry``.
        weights: completion weights file (default: the shipped ``cbct/models/bbc_flow.pt``).
        factor: how many times denser the completed scan is (e.g. 4 or 8). When ``None``, the views to complete
            to are, in this order: the dense geometry in ``state.extras["full_geometry"]`` (a sparse simulation),
            the angles in ``state.extras["target_angles"]`` (``Scan.target_angles``), then
            ``state.metadata["sparse_step"]`` as the factor.
        device: torch device (default: ``cuda:N`` for CuPy projections, else ``cpu``).
        full_circle: whether the acquired views span a full circle (``None``: detected from the angles).
        pairs_per_batch: neighbour pairs per network pass.

    Returns:
        A new state with the dense ``projections`` (on the input's device) and ``geometry``: exactly the target's
        views, any acquired pattern (even, uneven, holes); ``extras`` gains ``"sparse_geometry"`` and
        ``"bbc_completion"`` (view counts and seconds).

    A scan that states no views to complete to (none of the above) goes on unchanged, with a warning and
    ``extras["bbc_completion"]["skipped"]``: never worse than doing nothing.

    Raises:
        ValueError: a target that does not hold every acquired view angle.
    """
    from cbct.bbc.inference import complete_views
    from cbct.bbc.weights import load_completion
    from cbct.learned.device import like_input, resolve_device

    if state.projections is None:
        raise ValueError("completion_stage needs state.projections (the sparse scan); got None")
    target = angles = None
    if factor is None:
        target = state.extras.get("full_geometry")
        angles = state.extras.get("target_angles") if target is None else None
        if target is None and angles is None:
            factor = state.metadata.get("sparse_step")
        if target is None and angles is None and factor is None:  # nothing stated missing: leave the scan alone
            log.warning("bbc_completion: scan '%s' states no views to complete to (no target_angles, sparse_step or "
                        "factor); its %d views go on unchanged", state.metadata.get("id", "scan"), state.geometry.n_views)
            skipped = {"skipped": "no views to complete to", "acquired_views": state.geometry.n_views}
            return state.replace(extras={**state.extras, "bbc_completion": skipped})
    if factor is not None and (isinstance(factor, bool) or int(factor) != factor or int(factor) < 1):
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    dev = resolve_device(device, state.projections)
    t0 = time.perf_counter()
    try:
        plan = plan_completion(state.geometry, factor=None if factor is None else int(factor), angles=angles,
                               target=target, full_circle=full_circle)
    except ValueError as exc:
        source = "full_geometry" if target is not None else "target_angles" if angles is not None else "factor"
        raise ValueError(f"completion_stage cannot complete scan '{state.metadata.get('id', 'scan')}' to its "
                         f"{source}: {exc}") from None
    model = load_completion(weights, device=dev)
    dense = complete_views(model, state.projections, plan, device=dev, pairs_per_batch=int(pairs_per_batch),
                           as_numpy=not is_cupy(state.projections))
    seconds = time.perf_counter() - t0
    info = {"acquired": state.geometry.n_views, "dense": plan.geometry.n_views, "synthesised": int(plan.missing.size),
            "seconds": seconds, "weights": str(weights or "shipped")}
    log.info("completion: %d -> %d views in %.2f s", info["acquired"], info["dense"], seconds)
    extras = {**state.extras, "sparse_geometry": state.geometry, "bbc_completion": info}
    return state.replace(projections=like_input(dense, state.projections), geometry=plan.geometry, extras=extras)


def restoration_stage(
    state: PipelineState,
    *,
    weights: str | None = None,
    device: str | None = None,
    batch: int = 8,
) -> PipelineState:
    """Refine ``state.volume`` (the reconstruction of completed projections) with the restoration network.

    Args:
        state: with ``volume`` (z, y, x) mm⁻¹.
        weights: restoration weights file (default: the shipped ``cbct/models/bbc_restore.pt``).
        device: torch device (default: ``cuda:N`` for a CuPy volume, else ``cpu``).
        batch: axial slices per network pass.

    Returns:
        A new state with the restored ``volume`` (on the input's device); ``extras["bbc_restoration"]`` holds the
        seconds taken.
    """
    from cbct.bbc.restoration import restore_volume
    from cbct.bbc.weights import load_restoration
    from cbct.learned.device import like_input, resolve_device

    if state.volume is None:
        raise ValueError("restoration_stage needs state.volume (run a reconstruction stage first); got None")
    dev = resolve_device(device, state.volume)
    t0 = time.perf_counter()
    net = load_restoration(weights, device=dev)
    out = restore_volume(net, state.volume, batch=int(batch), device=dev, as_numpy=not is_cupy(state.volume))
    seconds = time.perf_counter() - t0
    log.info("restoration: %s volume in %.2f s", out.shape, seconds)
    extras = {**state.extras, "bbc_restoration": {"seconds": seconds, "weights": str(weights or "shipped")}}
    return state.replace(volume=like_input(out, state.volume), extras=extras)
