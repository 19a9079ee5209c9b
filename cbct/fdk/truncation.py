"""Lateral truncation correction for FDK: smooth extrapolation of each detector row beyond its u edges.

When the object is wider than the detector sees, the rows do not fall to air at their ends; the ramp filter then
treats the jump from the edge value to the zero padding as an edge of the object, which gives the bright rim and
the cupping of truncated reconstructions. Before filtering, each row is extended on both sides by ``width`` samples
of its point-symmetric mirror image at the edge pixel, ``2 p(edge) − p(edge ∓ k)`` (continuous in value and slope),
clipped at 0 and faded to 0 by the window ``sin(π/2 · (width − k) / width)^0.75`` — the mirrored extension with a
sine taper of RTK's ``TruncationCorrection`` (after Ohnesorge et al., Med. Phys. 27, 2000). Only the original
columns of the filtered rows are backprojected.

Detection (``truncation="auto"``): the scan counts as truncated when, in at least 10 % of the views, the mean of the
two outermost columns on the left or on the right exceeds ``threshold`` (default 5 %) of the largest line integral
of the scan, i.e. the rows do not reach air at the edges.
"""

from __future__ import annotations

import math

import numpy as np

from cbct.backend import array_module

__all__ = ["TRUNCATION_MODES", "check_truncation_mode", "detect_truncation", "extend_rows", "extension_width"]

TRUNCATION_MODES = ("auto", "on", "off", True, False)
EXTENSION_RATIO = 0.5  # extension on each side, as a fraction of the detector width
EDGE_THRESHOLD = 0.05
TRUNCATED_VIEW_FRACTION = 0.1


def check_truncation_mode(mode) -> str | bool:
    """``mode`` as ``"auto"``, ``True`` or ``False`` (``"on"``/``"off"`` accepted); a clear error otherwise."""
    if isinstance(mode, (bool, np.bool_)):
        return bool(mode)
    if mode in ("on", "off"):
        return mode == "on"
    if mode == "auto":
        return "auto"
    raise ValueError(f"truncation must be 'auto', 'on', 'off', True or False, got {mode!r}")


def detect_truncation(projections, threshold: float = EDGE_THRESHOLD) -> bool:
    """Whether the rows of ``projections`` (n_views, nv, nu) fail to fall to air at their left or right edge.

    Only one number per test leaves the device (CuPy data stays there)."""
    xp = array_module(projections)
    if projections.shape[-1] < 8:
        return False
    scale = xp.max(projections)
    left = projections[..., :2].mean(axis=-1).max(axis=-1)  # (n_views,): the most attenuated row's edge
    right = projections[..., -2:].mean(axis=-1).max(axis=-1)
    edge = xp.maximum(left, right)
    fraction = xp.mean((edge > threshold * scale).astype(xp.float32))
    return bool(float(scale) > 0 and float(fraction) >= TRUNCATED_VIEW_FRACTION)


def extension_width(nu: int) -> int:
    """Samples added on each side of a row of ``nu`` detector columns."""
    return max(1, int(math.ceil(EXTENSION_RATIO * nu)))


def _taper(width: int, xp, dtype):
    k = np.arange(1, width + 1, dtype=np.float64)
    return xp.asarray(np.sin(np.pi / 2 * (width - k) / width) ** 0.75, dtype=dtype)


def extend_rows(rows, width: int):
    """(…, nu + 2·width) rows extended on both sides (see the module notes); same device and dtype."""
    xp = array_module(rows)
    nu = rows.shape[-1]
    if width < 1:
        return rows
    reach = min(width, nu - 1)  # mirrored samples available inside the row
    w = _taper(width, xp, rows.dtype)
    out = xp.zeros(rows.shape[:-1] + (nu + 2 * width,), dtype=rows.dtype)
    out[..., width:width + nu] = rows
    left_edge, right_edge = rows[..., :1], rows[..., -1:]
    inner_left = rows[..., 1:reach + 1]  # p(edge + k), k = 1..reach
    inner_right = rows[..., nu - 1 - reach:nu - 1][..., ::-1]  # p(edge − k)
    left = xp.maximum(2 * left_edge - inner_left, 0) * w[:reach]
    right = xp.maximum(2 * right_edge - inner_right, 0) * w[:reach]
    out[..., width - reach:width] = left[..., ::-1]
    out[..., width + nu:width + nu + reach] = right
    return out
