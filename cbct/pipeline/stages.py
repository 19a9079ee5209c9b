"""The built-in stages: ``preprocess``, ``fdk`` and ``export``.

Every stage is ``fn(state, **params) -> PipelineState``. Keys of ``state.extras`` the engine provides:
``device`` (``"cpu"`` or ``"cuda[:N]"``), ``out_dir`` (a :class:`pathlib.Path` or ``None``); keys stages set:
``outputs`` (format → written path), ``voxel_updates`` (work of the stage, for GUPS; the engine removes it).
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from cbct.backend import to_device, to_host
from cbct.constants import MU_WATER
from cbct.fdk import fdk
from cbct.fdk.filters import FILTERS
from cbct.fdk.weights import scan_coverage
from cbct.geometry import VolumeGrid
from cbct.io import output_name, write_volume
from cbct.memory import check_memory, fdk_bytes
from cbct.motion_correction import correct_motion
from cbct.motion_estimation import MotionEstimationConfig
from cbct.pipeline.state import PipelineState
from cbct.preprocess import (
    check_line_integrals,
    complete_parallel_half_scan,
    counts_to_line_integrals,
    is_near_parallel,
)
from cbct.signatures import borrow_keywords
from cbct.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["preprocess_stage", "fdk_stage", "export_stage"]


# ---------------------------------------------------------------------------------------------------- preprocess
def preprocess_stage(state: PipelineState, *, min_transmission: float = 1e-6, clip_negative: bool = False,
                     clip_counts: bool = False) -> PipelineState:
    """Raw counts → line integrals (dark/flat correction, ``-log``); line integrals pass through after a check that
    they are finite and not clearly below zero (:func:`cbct.preprocess.check_line_integrals`). The raw data is
    dropped from the state once converted. The projections are left on the run's device (``state.extras["device"]``),
    so later stages find them where they will run.

    Args:
        min_transmission: floor of the transmission before the log.
        clip_negative: set negative line integrals to 0 (instead of refusing clearly negative ones).
        clip_counts: clip raw counts at or below the dark level (instead of refusing them).
    """
    device = state.extras.get("device", "cpu")
    counts = state.raw.get("counts") if state.raw else None
    if counts is not None:
        proj = counts_to_line_integrals(counts, dark=state.raw.get("dark"), flat=state.raw.get("flat"),
                                        min_transmission=min_transmission, clip_negative=clip_negative,
                                        clip_counts=clip_counts)
        if not clip_negative:
            check_line_integrals(proj, name="line integrals from the raw counts")
        return state.replace(projections=to_device(proj, device), raw={},
                             metadata={**state.metadata, "preprocessed": "dark/flat, -log"})
    if state.projections is None:
        raise ValueError("preprocess: the state holds neither raw counts nor projections")
    xp_name = type(state.projections).__module__.split(".")[0]
    finite = bool(np.isfinite(state.projections).all()) if xp_name == "numpy" else bool(
        __import__(xp_name).isfinite(state.projections).all())
    if not finite:
        raise ValueError("preprocess: projections contain NaN or infinite values")
    proj = to_device(state.projections, device)
    if clip_negative:
        proj = proj.clip(0.0, None)
    else:
        check_line_integrals(proj)
    return state.replace(projections=proj)


preprocess_stage.params_schema = {
    "type": "object", "additionalProperties": False,
    "properties": {"min_transmission": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5},
                   "clip_negative": {"type": "boolean"}, "clip_counts": {"type": "boolean"}},
}


# ---------------------------------------------------------------------------------------------------- fdk
@borrow_keywords(fdk)
def fdk_stage(
    state: PipelineState,
    *,
    volume_shape: int | Sequence[int] | None = None,
    voxel_size: float | Sequence[float] | None = None,
    volume_offset: Sequence[float] | None = None,
    complete_half_scan: bool | None = None,
    **fdk_options: Any,
) -> PipelineState:
    """FDK reconstruction of ``state.projections`` on ``state.extras["device"]``.

    Args:
        filter, cutoff, short_scan, offset_detector, truncation: as :func:`cbct.fdk` (``truncation="auto"``: when
            the rows do not fall to air at the detector's edges; ``"on"``/``True``, ``"off"``/``False``).
        volume_shape, voxel_size, volume_offset: override the geometry's volume grid (``(z, y, x)`` or one number;
            mm).
        complete_half_scan: repeat a parallel-beam half scan as a full circle first
            (:func:`cbct.preprocess.complete_parallel_half_scan`); ``None``: when the geometry is (near-)parallel
            and covers less than a full circle.
    """
    if state.projections is None:
        if state.raw:
            raise ValueError("fdk needs line integrals but the scan holds raw counts: add a 'preprocess' stage before 'fdk'")
        raise ValueError("fdk: the state holds no projections")
    grid = state.geometry.volume
    if volume_shape is not None or voxel_size is not None or volume_offset is not None:
        grid = VolumeGrid(grid.shape if volume_shape is None else volume_shape,
                          grid.voxel_size if voxel_size is None else voxel_size,
                          grid.offset if volume_offset is None else volume_offset)
    geom = state.geometry.with_volume(grid)
    device = state.extras.get("device", "cpu")
    proj = to_device(state.projections, device)
    recon_geom = geom
    if complete_half_scan is None:
        complete_half_scan = is_near_parallel(geom) and scan_coverage(geom.angles).short_scan
    if complete_half_scan:
        log.info("parallel-beam half scan: completing it to a full circle (views at theta + pi)")
        proj, recon_geom = complete_parallel_half_scan(proj, geom)
    check_memory(fdk_bytes(grid.shape, recon_geom.n_views, recon_geom.detector_shape),
                 f"FDK of a {'x'.join(map(str, grid.shape))} volume from {recon_geom.n_views} views of "
                 f"{recon_geom.detector_shape[0]} x {recon_geom.detector_shape[1]} pixels", device=device)
    volume = fdk(proj, recon_geom, **fdk_options)
    extras = {**state.extras, "voxel_updates": int(np.prod(grid.shape)) * recon_geom.n_views}
    return state.replace(volume=volume, geometry=geom, extras=extras)


fdk_stage.params_schema = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "filter": {"type": "string", "enum": list(FILTERS)},
        "cutoff": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "short_scan": {"type": ["boolean", "null"]},
        "offset_detector": {"type": ["boolean", "null"]},
        "volume_shape": {"type": ["integer", "array", "null"], "items": {"type": "integer", "minimum": 1}},
        "voxel_size": {"type": ["number", "array", "null"], "items": {"type": "number", "exclusiveMinimum": 0}},
        "volume_offset": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
        "complete_half_scan": {"type": ["boolean", "null"]},
        "truncation": {"type": ["string", "boolean"], "enum": ["auto", "on", "off", True, False]},
    },
}


def motion_compensation_stage(state: PipelineState, *, pose: str | int = "first", **settings: Any) -> PipelineState:
    """Estimate the patient's rigid motion from ``state.projections``, gate it, and compensate it in the geometry.

    The next ``fdk`` stage then reconstructs with the compensated geometry, in the declared ``pose`` (``"first"``:
    the patient's pose at view 0, ``"mean"``, or a view index). When the gate finds no motion the geometry is left
    as it was (:func:`cbct.motion_correction.correct_motion`). ``settings`` are those of
    :class:`cbct.motion_estimation.MotionEstimationConfig` (gate thresholds ``gate_mm``, ``gate_gain`` and
    ``truncation`` included). The applied motion goes to ``extras["motion"]``, the report (decision, gate
    statistics, per-view rotation in degrees and translation in mm, pose) to ``metadata["motion_correction"]``.
    Views must be in acquisition order. Runs on ``extras["device"]``.
    """
    if state.projections is None:
        if state.raw:
            raise ValueError("motion_compensation needs line integrals but the scan holds raw counts: add a 'preprocess' stage first")
        raise ValueError("motion_compensation: the state holds no projections")
    device = state.extras.get("device", "cpu")
    projections = to_device(state.projections, device)
    result = correct_motion(projections, state.geometry, config=MotionEstimationConfig.from_dict(settings), pose=pose)
    metadata = {**state.metadata, "motion_correction": result.report, "pose": result.pose}
    return state.replace(geometry=result.geometry, extras={**state.extras, "motion": result.motion}, metadata=metadata)


motion_compensation_stage.params_schema = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "pose": {"type": ["string", "integer"]},
        "groups": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
        "iterations": {"type": "integer", "minimum": 1},
        "binning": {"type": "integer", "minimum": 1},
        "filter": {"type": "string", "enum": list(FILTERS)},
        "step_mm": {"type": "number", "exclusiveMinimum": 0},
        "damping": {"type": "number", "exclusiveMinimum": 0},
        "max_step_mm": {"type": "number", "exclusiveMinimum": 0},
        "prior": {"type": "number", "minimum": 0},
        "smoothness": {"type": "number", "minimum": 0},
        "jump_mm": {"type": "number", "minimum": 0},
        "truncation": {"type": ["string", "boolean"], "enum": ["auto", "on", "off", True, False]},
        "gate_mm": {"type": "number", "minimum": 0},
        "gate_gain": {"type": "number", "minimum": 0},
    },
}


# ---------------------------------------------------------------------------------------------------- export
EXPORT_FORMATS = ("hdf5", "nifti", "dicom", "png")


def export_stage(
    state: PipelineState,
    *,
    formats: Sequence[str] = ("hdf5",),
    stem: str = "volume",
    dir: str | None = None,
    mu_water: float = MU_WATER,
    window: Sequence[float] | None = None,
) -> PipelineState:
    """Write the volume in ``formats`` (``hdf5``, ``nifti``, ``dicom``, ``png``) to ``dir`` (default: the run's
    output directory, ``state.extras["out_dir"]``), each file atomically. Without either (``run_pipeline`` called
    without ``out_dir`` from Python) nothing is written: the stage logs it and the volume is only returned.

    Args:
        formats: what to write; files are named ``<stem>.h5``, ``<stem>.nii.gz``, ``<stem>_dicom/``, ``<stem>.png``.
        stem: file name stem.
        dir: output folder (relative paths are taken from the run's output directory when there is one).
        mu_water: attenuation of water in mm⁻¹ for the HU of the DICOM series.
        window: grey window ``[low, high]`` in mm⁻¹ for the PNG preview (default: percentiles).
    """
    if state.volume is None:
        raise ValueError("export: no volume to write (put 'export' after a reconstruction stage)")
    run_dir = state.extras.get("out_dir")
    if dir is not None:
        out = pathlib.Path(dir)
        if not out.is_absolute() and run_dir is not None:
            out = pathlib.Path(run_dir) / out
    elif run_dir is not None:
        out = pathlib.Path(run_dir)
    else:
        log.info("export: no output folder (run_pipeline without out_dir): nothing written, the volume is returned")
        return state
    data = np.asarray(to_host(state.volume), dtype=np.float32)
    meta = {"units": "mm^-1", "scan_id": state.metadata.get("id"), "pipeline": state.extras.get("pipeline")}
    if "motion_correction" in state.metadata:  # the declared pose of a motion-corrected volume
        meta["pose"] = state.metadata["motion_correction"]["pose"]
        meta["motion_corrected"] = state.metadata["motion_correction"]["moved"]
    volume = Volume(data, state.geometry.volume, meta)
    outputs = dict(state.extras.get("outputs", {}))
    for fmt in formats:
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"export: unknown format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
        path = out / output_name(fmt, stem)
        options: dict[str, Any] = {}
        if fmt == "dicom":
            options = {"mu_water": mu_water, "overwrite": True,
                       "series_description": f"cbct {state.extras.get('pipeline') or ''} {state.metadata.get('id', '')}".strip()}
        elif fmt == "png" and window is not None:
            options = {"window": tuple(window)}
        write_volume(volume, path, format=fmt, **options)
        outputs[fmt] = path
        log.info("wrote %s", path)
    return state.replace(extras={**state.extras, "outputs": outputs})


export_stage.writes_outputs = True  # a batch pipeline needs at least one stage that saves its result

export_stage.params_schema = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "formats": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(EXPORT_FORMATS)}},
        "stem": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
        "dir": {"type": ["string", "null"]},
        "mu_water": {"type": "number", "exclusiveMinimum": 0},
        "window": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    },
}
