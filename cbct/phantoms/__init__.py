"""Phantoms: analytic Shepp–Logan, ellipsoid sets, and the procedural dental phantom."""

from cbct.phantoms.dental import dental_phantom
from cbct.phantoms.ellipsoids import Ellipsoid, line_integrals, voxelize
from cbct.phantoms.shepp_logan import shepp_logan, shepp_logan_projections, shepp_logan_volume

__all__ = ["dental_phantom", "Ellipsoid", "line_integrals", "voxelize", "shepp_logan", "shepp_logan_projections", "shepp_logan_volume"]
