"""Iterative reconstruction on cbct's projector and its exact adjoint, for NumPy (CPU) and CuPy (GPU) arrays.

- :func:`os_sart`, :func:`sirt`, :func:`sart`: the SART family (blocks of views, relaxation, positivity);
- :func:`cgls`: conjugate gradients for least squares;
- :func:`fista_tv`: FISTA with a TV proximal step; :func:`asd_pocs`: ASD-POCS (data step + adaptive TV descent).

Each returns an :class:`IterativeResult` (``volume`` and, when asked, ``||A x - b||_2`` per iteration). TIGRE's
names and arguments for them live in :mod:`cbct.tigre.algorithms`.
"""

from cbct.iterative._common import IterativeResult, view_blocks
from cbct.iterative.art import os_sart, sart, sirt
from cbct.iterative.krylov import cgls
from cbct.iterative.tv import asd_pocs, fista_tv, operator_norm_squared, total_variation, tv_denoise, tv_gradient

__all__ = [
    "IterativeResult", "view_blocks", "os_sart", "sart", "sirt", "cgls", "fista_tv", "asd_pocs",
    "operator_norm_squared", "total_variation", "tv_denoise", "tv_gradient",
]
