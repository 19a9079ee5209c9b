"""TIGRE's ``tigre.algorithms`` on cbct: ``fdk``/``FDK`` and the iterative methods ``sirt``, ``sart``, ``ossart``,
``cgls``, ``fista`` and ``asd_pocs``, with TIGRE's positional ``niter`` and keyword arguments.

They are thin layers over :func:`cbct.fdk` and :mod:`cbct.iterative`; the data stays where it is (NumPy: CPU,
CuPy: GPU).
"""

from cbct.tigre.algorithms.fdk import FDK, fdk
from cbct.tigre.algorithms.iterative import asd_pocs, cgls, fista, ossart, sart, sirt

__all__ = ["FDK", "fdk", "sirt", "sart", "ossart", "cgls", "fista", "asd_pocs"]
