"""Independent projections for evaluation: RTK's Joseph forward projector along cbct's per-view geometry vectors.

Evaluation data for the learned stages must not come from the projector the stages were trained with. This module
projects a volume on its own grid (which may be much larger than any reconstruction grid: anatomy that overflows the
field of view) through any :class:`cbct.ConeGeometry`, moved views included, with RTK
(``itk-rtk``, imported only when called).
"""

from __future__ import annotations

import logging

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid

log = logging.getLogger(__name__)

__all__ = ["rtk_project"]


def rtk_project(volume: np.ndarray, grid: VolumeGrid, geom: ConeGeometry, *, threads: int | None = None) -> np.ndarray:
    """Line integrals of ``volume`` through every view of ``geom``, by RTK's Joseph projector.

    Args:
        volume: (z, y, x) attenuation in mm⁻¹ on ``grid`` (NumPy; float32 is used).
        grid: the grid of ``volume``; it need not be ``geom.volume`` (the object may be larger than the
            reconstruction grid, or offset from it).
        geom: the scan: any per-view source and detector vectors (rigid motion included); RTK needs orthogonal
            detector axes and one pixel pitch over the views.
        threads: ITK worker threads (default: ITK's own choice).

    Returns:
        (views, nv, nu) float32 line integrals (mm⁻¹ · mm), cbct's row order.
    """
    from cbct.conventions import rtk as crtk  # itk is optional: imported only here

    volume = np.asarray(volume, dtype=np.float32)
    if volume.shape != tuple(grid.shape):
        raise ValueError(f"volume: shape {volume.shape} does not match its grid {tuple(grid.shape)}")
    if not np.all(np.isfinite(volume)):
        raise ValueError("volume: holds NaN or infinite values")
    itk = crtk._itk()
    rtk = crtk._rtk()
    image_type = itk.Image[itk.F, 3]
    rgeom = crtk.to_rtk(geom)
    proj_img = crtk.projection_info(geom).empty_image()
    vol_img = crtk.volume_to_itk(volume, grid)
    joseph = rtk.JosephForwardProjectionImageFilter[image_type, image_type].New()
    if threads is not None:
        joseph.SetNumberOfWorkUnits(int(threads))
    joseph.SetInput(0, proj_img)
    joseph.SetInput(1, vol_img)
    joseph.SetGeometry(rgeom)
    joseph.Update()
    out = crtk.itk_to_projections(joseph.GetOutput())
    log.debug("RTK Joseph: %s volume -> %s projections", volume.shape, out.shape)
    return np.ascontiguousarray(out, dtype=np.float32)
