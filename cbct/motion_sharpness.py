"""Image sharpness of a reconstruction in the field of view: the gate statistic of motion correction.

The gradient entropy ``H = −Σ p log p`` with ``p = |∇f| / Σ|∇f|`` over the voxels of the grid's inscribed cylinder
(after Sisniega et al., Phys. Med. Biol. 62, 2017, who use sharpness as an autofocus criterion). Motion blurs edges and
adds streaks; both spread the gradient over more voxels and raise ``H``. Unlike a reprojection residual it needs no
model of the anatomy outside the field of view, so a truncated scan does not bias it; a wrong geometry raises it.
"""

from __future__ import annotations

import numpy as np

from cbct.backend import array_module
from cbct.fdk import fdk_filter
from cbct.geometry import ConeGeometry
from cbct.operators import backproject_fdk_trusted
from cbct.simulation.motion import RigidMotion

__all__ = ["inscribed_cylinder", "gradient_entropy", "sharpness_of_motions"]


def inscribed_cylinder(shape: tuple[int, int, int], margin: float, xp=np):
    """(nz, ny, nx) float32 mask of the grid's inscribed cylinder shrunk to ``margin`` of its radius."""
    nz, ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    r = np.hypot((x - (nx - 1) / 2) / (nx / 2), (y - (ny - 1) / 2) / (ny / 2))
    return xp.asarray(np.broadcast_to(r <= margin, shape).astype(np.float32))


def gradient_entropy(volume, mask) -> float:
    """Entropy of the normalised gradient magnitude of ``volume`` (forward differences, float64) inside ``mask``."""
    xp = array_module(volume)
    volume = volume.astype(xp.float64, copy=False)
    g = xp.zeros_like(volume)
    g[:-1] += (volume[1:] - volume[:-1]) ** 2
    g[:, :-1] += (volume[:, 1:] - volume[:, :-1]) ** 2
    g[:, :, :-1] += (volume[:, :, 1:] - volume[:, :, :-1]) ** 2
    g = xp.sqrt(g) * mask
    p = g / (g.sum() + 1e-30)
    return float(-(p * xp.log(p + 1e-12)).sum())


def sharpness_of_motions(projections, geom: ConeGeometry, motions: list[RigidMotion | None], *, filter: str = "hann",
                         truncation: str | bool = "auto", margin: float = 0.9) -> list[float]:
    """Gradient entropy of the FDK image of ``projections`` with each motion (``None``: the nominal geometry).

    The projections are filtered once (on their device); each motion costs one backprojection."""
    xp = array_module(projections)
    filtered, fgeom = fdk_filter(projections, geom, filter=filter, truncation=truncation)
    filtered = xp.ascontiguousarray(filtered)
    mask = inscribed_cylinder(geom.volume.shape, margin, xp)
    return [gradient_entropy(backproject_fdk_trusted(filtered, fgeom if m is None else m.apply(fgeom))[0], mask)
            for m in motions]
