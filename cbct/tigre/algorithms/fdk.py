"""TIGRE's ``algorithms.fdk`` on :func:`cbct.fdk`: same call, plus Parker short-scan weights TIGRE's Python FDK lacks."""

from __future__ import annotations

import logging

from cbct.fdk import fdk as cbct_fdk
from cbct.tigre.geometry import cone_geometry

__all__ = ["fdk", "FDK", "FILTER_NAMES"]

log = logging.getLogger("cbct.tigre")

FILTER_NAMES = {
    None: "ram-lak", "ram_lak": "ram-lak", "ram-lak": "ram-lak", "shepp_logan": "shepp-logan",
    "shepp-logan": "shepp-logan", "cosine": "cosine", "hamming": "hamming", "hann": "hann",
}
"""TIGRE's filter names (and cbct's) → cbct's ramp windows."""


def fdk(proj, geo, angles, filter=None, verbose: bool = False, gpuids=None, dowang: bool = False, **kwargs):  # noqa: A002
    """FDK of ``proj`` (float32 ``(len(angles), nv, nu)``, NumPy or CuPy) → ``geo.nVoxel`` volume in mm⁻¹.

    Args:
        filter: TIGRE's ``"ram_lak"`` (default), ``"shepp_logan"``, ``"cosine"``, ``"hamming"``, ``"hann"``; when None,
            ``geo.filter`` if the geometry sets one (as TIGRE).
        dowang: force Wang's offset-detector weights; without it they are applied when the detector is displaced
            by more than 5 % of its fan (cbct's rule).
        verbose, gpuids: accepted for TIGRE's scripts; progress goes to logging, the device is the data's.
        kwargs: cbct's own ``cutoff``, ``short_scan`` (Parker weights; detected from the angles by default) and
            ``offset_detector``; TIGRE's ``niter`` is ignored as TIGRE does.
    """
    kwargs.pop("niter", None)
    extra = set(kwargs) - {"cutoff", "short_scan", "offset_detector"}
    if extra:
        raise TypeError(f"fdk got unexpected keyword arguments {sorted(extra)}")
    if filter is None:
        filter = geo.get("filter") if isinstance(geo, dict) else getattr(geo, "filter", None)
    if filter not in FILTER_NAMES:
        raise ValueError(f"filter must be one of {sorted(k for k in FILTER_NAMES if k)} or None, got {filter!r}")
    if dowang:
        kwargs.setdefault("offset_detector", True)
    geom = cone_geometry(geo, angles)
    if tuple(proj.shape) != geom.projection_shape:
        raise ValueError(f"Expected data shape: {geom.projection_shape} not compatible with: {tuple(proj.shape)}")
    log.info("FDK: %d views, filter %s", geom.n_views, FILTER_NAMES[filter])
    return cbct_fdk(proj, geom, filter=FILTER_NAMES[filter], **kwargs)


FDK = fdk
