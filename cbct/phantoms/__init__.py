"""Phantoms: analytic Shepp–Logan, ellipsoid sets, the procedural dental phantom and the random ellipsoid dental head."""

from cbct.phantoms.dental import dental_phantom
from cbct.phantoms.ellipsoids import Ellipsoid, line_integrals, voxelize
from cbct.phantoms.random_head import random_head_ellipsoids, random_head_volume
from cbct.phantoms.shepp_logan import shepp_logan, shepp_logan_projections, shepp_logan_volume

__all__ = [
    "dental_phantom", "Ellipsoid", "line_integrals", "voxelize", "random_head_ellipsoids", "random_head_volume",
    "shepp_logan", "shepp_logan_projections", "shepp_logan_volume",
]
