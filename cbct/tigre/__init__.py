"""TIGRE's Python API on cbct: change ``import tigre`` to ``import cbct.tigre as tigre`` (and ``tigre.algorithms``,
``tigre.utilities`` likewise) and TIGRE scripts run on cbct's operators, on the CPU (NumPy) or a GPU (CuPy).

- geometry: :func:`geometry`, :func:`geometry_default`, or any object/dict with TIGRE's attribute names;
  converted exactly into per-view vectors by :func:`cbct.conventions.tigre.from_tigre`;
- operators: :func:`Ax`, :func:`Atb` (``"FDK"`` or ``"matched"``, the exact adjoint);
- :mod:`cbct.tigre.algorithms`: ``fdk``, ``sirt``, ``sart``, ``ossart``, ``cgls``, ``fista``, ``asd_pocs``;
- :mod:`cbct.tigre.utilities`: ``sample_loader``, ``CTnoise``, ``plotimg``, ``plotproj``.

What is supported and what is not: ``docs/tigre.md``.
"""

from cbct.tigre import algorithms, utilities
from cbct.tigre.geometry import Geometry, cone_geometry, geometry, geometry_default
from cbct.tigre.operators import Atb, Ax
from cbct.tigre.utilities.plotting import plotimg, plotImg, plotproj, plotProj

__all__ = [
    "Ax", "Atb", "Geometry", "geometry", "geometry_default", "cone_geometry", "algorithms", "utilities",
    "plotimg", "plotImg", "plotproj", "plotProj",
]
