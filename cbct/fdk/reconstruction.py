"""FDK reconstruction (Feldkamp, Davis & Kress) for circular cone-beam scans, any backend.

``f(x) = sum_i dbeta_i * (DSO_i / depth_i(x))**2 * q_i(u(x), v(x))`` with the filtered projections
``q_i = W_i * (DSD_i / DSO_i) * du * ramp * (cos_i * p_i)``: cosine pre-weights ``cos_i`` about the central ray,
redundancy weights ``W_i`` (0.5 for a full scan; Parker for a short scan; 1/2 to 1 per ray for a full circle with
holes; Wang for a displaced detector), the
angular weight ``dbeta_i`` of each view and a ramp filter along detector rows. A displaced detector is zero padded
on its truncated side before filtering and the padded detector is backprojected, as RTK does. Rows that do not fall
to air at the detector's edges (an object wider than the field of view) are extended smoothly before filtering
(:mod:`cbct.fdk.truncation`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from cbct._checks import check_array, check_geometry
from cbct.backend import array_module
from cbct.fdk.filters import padded_length, ramp_filter_rows, ramp_response
from cbct.fdk.truncation import check_truncation_mode, detect_truncation, extend_rows, extension_width
from cbct.fdk.weights import cosine_weights, geometry_coverage, redundancy_weights, uses_offset_weights
from cbct.geometry import ConeGeometry
from cbct.operators import backproject_fdk_trusted
from cbct.signatures import borrow_keywords

log = logging.getLogger(__name__)

VIEWS_PER_CHUNK = 32


@dataclasses.dataclass(frozen=True)
class FDKFilterPlan:
    """What FDK does to the projections before backprojection.

    Attributes:
        geometry: geometry of the filtered projections (the detector widened when it was padded).
        view_weights: (n_views, nu) float64 angular × redundancy × scale weights on the original detector.
        pad: ``(before, after)`` zero columns added to each detector row.
        response: rfft response of the windowed ramp for the padded rows.
        filter, cutoff, pixel_pitch: the ramp's window, its cutoff and the detector column pitch in mm.
    """

    geometry: ConeGeometry
    view_weights: np.ndarray
    pad: tuple[int, int]
    response: np.ndarray
    filter: str
    cutoff: float
    pixel_pitch: float

    def ramp(self, n: int) -> np.ndarray:
        """The rfft response of the windowed ramp for rows of ``n`` samples (zero padded to the FFT length)."""
        return ramp_response(padded_length(n), self.pixel_pitch, self.filter, self.cutoff)


def plan_fdk_filter(
    geom: ConeGeometry,
    *,
    filter: str = "ram-lak",
    cutoff: float = 1.0,
    short_scan: bool | None = None,
    offset_detector: bool | None = None,
) -> FDKFilterPlan:
    """Weights, padding and ramp response for FDK on ``geom`` (see :func:`fdk` for the arguments)."""
    coverage = geometry_coverage(geom, short_scan=short_scan)
    redundancy = redundancy_weights(geom, short_scan=short_scan, offset_detector=offset_detector)
    dsd, dso = geom.source_detector_distances(), geom.source_origin_distances()
    du = geom.pixel_sizes()[:, 1]
    view_weights = redundancy * (coverage.gaps * dsd / dso * du)[:, None]
    nv, nu = geom.detector_shape
    pad = (0, 0)
    if uses_offset_weights(geom, offset_detector):
        pp_u = float(np.median(geom.principal_points()[:, 1] / du))  # principal point, pixels from the centre
        extra = int(round(2 * abs(pp_u)))
        pad = (extra, 0) if pp_u < 0 else (0, extra)
    filtered_geom = geom.with_detector_shape((nv, nu + sum(pad)), shift=(0.0, (pad[1] - pad[0]) / 2))
    pitch = float(np.median(du))
    response = ramp_response(padded_length(nu + sum(pad)), pitch, filter, cutoff)
    return FDKFilterPlan(filtered_geom, view_weights, pad, response, filter, cutoff, pitch)


@borrow_keywords(plan_fdk_filter)
def fdk_filter(projections, geom: ConeGeometry, *, truncation: str | bool = "auto", **options: Any):
    """FDK-weighted, ramp-filtered projections and the geometry to backproject them with (arguments: :func:`fdk`;
    ``filter``, ``cutoff``, ``short_scan`` and ``offset_detector`` are those of :func:`plan_fdk_filter`).

    Returns:
        ``(filtered, geometry)``: ``filtered`` is (n_views, nv, nu') on the device of ``projections``
        (``nu' > nu`` when a displaced detector was padded); ``backproject(filtered, geometry, "fdk")`` is the
        FDK reconstruction and ``segmented_backproject(filtered, geometry, K)`` its K angular parts.
    """
    geom = check_geometry(geom)
    projections = check_array(projections, "projections", geom.projection_shape, "the projection shape of the geometry")
    if projections.ndim != 3:
        raise ValueError(f"projections must be one scan (n_views, nv, nu), got shape {tuple(projections.shape)}")
    xp = array_module(projections)
    plan = plan_fdk_filter(geom, **options)
    n_views, nv, nu = projections.shape
    before, after = plan.pad
    width = _truncation_width(projections, truncation, padded=before + after > 0)
    out = xp.zeros((n_views, nv, nu + before + after), dtype=projections.dtype)
    weights = xp.asarray(plan.view_weights, dtype=projections.dtype)
    response = xp.asarray(plan.ramp(nu + 2 * width) if width else plan.response, dtype=projections.dtype)  # uploaded once
    for start in range(0, n_views, VIEWS_PER_CHUNK):
        views = slice(start, min(start + VIEWS_PER_CHUNK, n_views))
        cos_w = cosine_weights(geom, views, xp, dtype=projections.dtype)
        out[views, :, before:before + nu] = projections[views] * cos_w * weights[views][:, None, :]
        if width:
            out[views] = ramp_filter_rows(extend_rows(out[views], width), response, xp)[..., width:width + nu]
        else:
            out[views] = ramp_filter_rows(out[views], response, xp)
    return out, plan.geometry


def _truncation_width(projections, truncation: str | bool, *, padded: bool) -> int:
    """Samples of extrapolation on each side of the rows (0: no truncation correction)."""
    mode = check_truncation_mode(truncation)
    if mode == "auto":
        mode = detect_truncation(projections)
        if mode and padded:
            log.info("FDK: truncated rows on a displaced detector: no truncation correction (zero padding kept)")
            return 0
    elif mode and padded:
        raise ValueError("truncation=True cannot be combined with a displaced (offset) detector")
    if not mode:
        return 0
    width = extension_width(projections.shape[-1])
    log.info("FDK: truncation correction: rows extended by %d samples on each side", width)
    return width


@borrow_keywords(fdk_filter)
def fdk(projections, geom: ConeGeometry, **options: Any):
    """FDK reconstruction of a circular cone-beam scan.

    Args:
        projections: (n_views, nv, nu) float32 line integrals (after ``-log``), NumPy (CPU) or CuPy (GPU).
        geom: the acquisition geometry; ``geom.angles`` give the angular weights (non-uniform angles work).
        filter: ramp window: ``"ram-lak"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"`` or ``"hann"``.
        cutoff: window frequency scaling in (0, 1]; frequencies above ``cutoff`` × Nyquist are removed.
        short_scan: Parker weights; ``None`` decides from the angles: one arc shorter than 180° + fan + 20° is a
            short scan (Parker), a full circle with holes gets per-ray hole weights, a full scan 1/2
            (:func:`cbct.fdk.weights.scan_coverage`); ``True`` forces Parker, ``False`` forbids it.
        offset_detector: offset-detector (half-fan) weights; ``None`` applies them when the detector is
            displaced by more than 5 % of its fan.
        truncation: lateral truncation correction (:mod:`cbct.fdk.truncation`): ``"auto"`` applies it when the
            rows do not fall to air at the detector's edges, ``True``/``"on"`` always, ``False``/``"off"`` never.

    Returns:
        (nz, ny, nx) attenuation in mm⁻¹ on ``geom.volume``, same dtype and device as ``projections``.
    """
    filtered, filtered_geom = fdk_filter(projections, geom, **options)
    return backproject_fdk_trusted(filtered, filtered_geom)[0]
