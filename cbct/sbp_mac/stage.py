"""The SBP-MAC pipeline stage: FDK filtering, K-segment backprojection and the network over the whole volume.

Registered by the pipeline engine as ``cbct.sbp_mac.stage.sbp_mac_stage`` (see ``pipelines/motion.yaml``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from cbct.backend import array_library, array_module
from cbct.fdk import fdk_filter
from cbct.operators import segmented_backproject
from cbct.pipeline.state import PipelineState

log = logging.getLogger(__name__)

__all__ = ["sbp_mac_stage"]


def sbp_mac_stage(
    state: PipelineState,
    *,
    weights: str | None = None,
    n_segments: int = 8,
    batch_size: int = 8,
    device: str | None = None,
    keep_fdk: bool = False,
    estimate_motion: bool | None = None,
    pose: str | int = "first",
    motion_settings: dict[str, Any] | None = None,
    filter: str | None = None,
    cutoff: float | None = None,
    short_scan: bool | None = None,
    offset_detector: bool | None = None,
    truncation: str | bool | None = None,
) -> PipelineState:
    """Motion-artifact-corrected reconstruction of ``state.projections``.

    Args:
        state: ``projections`` (n_views, nv, nu) line integrals (NumPy or CuPy) and their ``geometry``.
        weights: an SBP-MAC weights file; ``None``: the shipped ``cbct/models/sbp_mac.pt``.
        n_segments: K angular segments; must equal the K the weights were trained with.
        batch_size: axial slices per network pass.
        device: torch device; default: CUDA when the projections are CuPy arrays, else the CPU.
        keep_fdk: also keep the FDK volume the network was given (motion-compensated when motion is estimated) in
            ``extras["fdk"]``.
        estimate_motion: estimate the rigid motion from the projections (:mod:`cbct.motion_estimation`) and
            reconstruct FDK image and segments with the compensated geometry; ``None``: when the weights were
            trained that way (their ``data.scan.motion_estimation``), with the same settings. The estimate lands in
            ``extras["sbp_mac"]["motion"]``. It runs where the projections live (CuPy: on the GPU). The estimate
            is gated (:func:`cbct.motion_correction.correct_motion`): a scan found still keeps its nominal geometry;
            the report goes to ``metadata["motion_correction"]``.
        pose: the declared output pose of a moving scan: ``"first"`` (view 0), ``"mean"`` or a view index (of the
            views in acquisition order).
        motion_settings: overrides of the estimation and gate settings
            (:class:`cbct.motion_estimation.MotionEstimationConfig` keys, e.g. ``gate_mm``, ``gate_gain``).
        filter, cutoff, short_scan, offset_detector, truncation: FDK options as :func:`cbct.fdk` (``None``: its
            default; ``filter`` defaults to the one the weights were trained with).

    Returns:
        A new state whose ``volume`` is the corrected (nz, ny, nx) float32 volume in mm⁻¹ on the projections'
        backend; ``extras["sbp_mac"]`` records K, the weights and timings.
    """
    from cbct.learned.device import like_input, resolve_device
    from cbct.sbp_mac.inference import correct_volume, load_network

    if state.projections is None:
        raise ValueError("state.projections is None: the SBP-MAC stage needs the scan's projections")
    if not isinstance(n_segments, (int, np.integer)) or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments!r}")
    projections, geom = state.projections, state.geometry
    array_library(projections)  # refuses anything but NumPy or CuPy arrays (and torch tensors) before the work
    device = resolve_device(device, projections)
    model = load_network(weights, device=device)
    meta = model.meta
    if model.config.n_segments != n_segments:
        raise ValueError(f"n_segments={n_segments} but the weights were trained with K = {model.config.n_segments} segments")
    given = {"filter": filter, "cutoff": cutoff, "short_scan": short_scan, "offset_detector": offset_detector,
             "truncation": truncation}
    filter_kw = {k: v for k, v in given.items() if v is not None}
    trained_scan = meta.get("config", {}).get("data", {}).get("scan", {})
    filter_kw.setdefault("filter", trained_scan.get("filter", "hann"))
    estimation = trained_scan.get("motion_estimation")
    if estimate_motion is None:
        estimate_motion = estimation is not None

    # segments are contiguous in view order: put the views in angular order first
    order = np.argsort(np.unwrap(geom.angles) * np.sign(geom.angles[-1] - geom.angles[0] or 1.0), kind="stable")
    if not np.array_equal(order, np.arange(geom.n_views)):
        xp = array_module(projections)
        projections, geom = projections[xp.asarray(order)], geom[order]
    t0 = time.perf_counter()
    motion = None
    metadata = state.metadata
    if estimate_motion:
        from cbct.motion_correction import correct_motion
        from cbct.motion_estimation import MotionEstimationConfig

        settings = MotionEstimationConfig.from_dict({**(estimation or {}), **(motion_settings or {})})
        if "truncation" in filter_kw:
            settings = dataclasses.replace(settings, truncation=filter_kw["truncation"])
        pose_index = pose  # "mean", or the position of the acquisition view among the views sorted by angle
        if pose == "first" or (isinstance(pose, (int, np.integer)) and not isinstance(pose, bool)):
            view = 0 if pose == "first" else int(pose) % len(order)
            pose_index = int(np.flatnonzero(order == view)[0])
        result = correct_motion(projections, geom, config=settings, pose=pose_index)
        motion, geom = result.motion, result.geometry
        metadata = {**state.metadata, "motion_correction": result.report, "pose": result.pose}
    t_motion = time.perf_counter() - t0
    filtered, fgeom = fdk_filter(projections, geom, **filter_kw)
    segments = segmented_backproject(filtered, fgeom, int(n_segments))
    del filtered
    fdk_volume = segments.sum(axis=0)
    t1 = time.perf_counter()
    corrected = correct_volume(model, fdk_volume, segments, batch_size=batch_size, device=device)
    volume = like_input(corrected, state.projections)
    t2 = time.perf_counter()
    log.info(
        "SBP-MAC: motion estimation %.2f s, FDK + %d-segment backprojection %.2f s, network %.2f s on %s",
        t_motion, n_segments, t1 - t0 - t_motion, t2 - t1, device,
    )
    extras = dict(state.extras)
    extras["sbp_mac"] = {
        "n_segments": int(n_segments),
        "weights": str(weights) if weights is not None else "cbct/models/sbp_mac.pt",
        "filter": filter_kw["filter"],
        "motion": motion,
        "seconds_motion_estimation": t_motion,
        "seconds_reconstruction": t1 - t0 - t_motion,
        "seconds_network": t2 - t1,
    }
    if keep_fdk:
        extras["fdk"] = fdk_volume
    return state.replace(volume=volume, extras=extras, metadata=metadata)
