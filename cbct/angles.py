"""Angular bookkeeping of a scan's views: the angles a sparse scan is completed to (checked against the acquired
ones), which acquired views bracket a missing view and at what fraction. Used by :class:`cbct.Scan` and by view
completion (:mod:`cbct.bbc`); it depends on nothing above the geometry.

Angles are gantry angles in radians (``ConeGeometry.angles``). A scan rotates in one direction (increasing or
decreasing angles); all positions here are measured from the first acquired view in the direction of rotation.
On a full circle the last acquired view and the first one (one turn later) bracket the views between them
(wrap-around); on a short scan, views outside the covered arc take the nearest end view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cbct._checks import check_geometry
from cbct.geometry import ConeGeometry

TWO_PI = 2.0 * np.pi
_TOL = 1e-9
ANGLE_TOLERANCE = 1e-5  # radians (2 arcseconds): a target angle this close to an acquired one is that view

__all__ = ["ANGLE_TOLERANCE", "CompletionPlan", "bracket_views", "check_target_angles", "circular_distance",
           "dense_angles", "geometry_at_angles", "is_full_circle", "missing_targets", "plan_completion"]


def _as_angles(angles, name: str) -> np.ndarray:
    arr = np.asarray(angles, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _direction(acq: np.ndarray) -> float:
    if acq.size < 2:
        return 1.0
    return 1.0 if float(np.sum(np.diff(np.unwrap(acq)))) >= 0 else -1.0


@dataclasses.dataclass(frozen=True)
class _Circle:
    """Acquired angles in rotation order, measured from the start of the scan."""

    direction: float
    start: float  # angle (in direction-multiplied units) of the first view in rotation order
    order: np.ndarray  # indices of the acquired views in rotation order
    rel: np.ndarray  # their positions in [0, 2 pi), increasing, rel[0] == 0
    full: bool


def _circle(acquired: np.ndarray, full_circle: bool | None) -> _Circle:
    direction = _direction(acquired)
    s = direction * acquired
    wrapped = np.mod(s - s[0], TWO_PI)
    order = np.argsort(wrapped, kind="stable")
    rel = wrapped[order]
    if np.any(np.diff(rel) <= _TOL):
        raise ValueError("acquired angles must be distinct (modulo a full turn)")
    n = rel.size
    gaps = np.diff(np.append(rel, TWO_PI))  # gap after each view, circularly
    if full_circle is None:
        full = n >= 3 and bool(gaps[-1] <= 1.5 * gaps[:-1].max() + _TOL)
    else:
        full = bool(full_circle)
        if full and n < 2:
            raise ValueError("a full circle needs at least 2 acquired views to interpolate between")
    if not full and n >= 2:
        # a short scan starts after its largest gap (which need not follow the last view)
        first = (int(np.argmax(gaps)) + 1) % n
        start = float(s[order[first]])
        wrapped = np.mod(s - start, TWO_PI)
        order = np.argsort(wrapped, kind="stable")
        return _Circle(direction, start, order, wrapped[order], False)
    return _Circle(direction, float(s[order[0]]), order, rel, full)


def is_full_circle(angles: Sequence[float] | np.ndarray) -> bool:
    """Whether views at ``angles`` sample a full circle: the gap from the last view back to the first is no
    larger than 1.5 times the largest other gap (so a full scan thinned to every s-th view stays a full circle)."""
    return _circle(_as_angles(angles, "angles"), None).full


def circular_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in [0, pi] between angles ``a`` and ``b`` (radians, broadcast) on the circle."""
    return np.abs(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b)))))


def missing_targets(acquired: Sequence[float] | np.ndarray, target: Sequence[float] | np.ndarray, *,
                    tol: float = ANGLE_TOLERANCE) -> np.ndarray:
    """(n_missing,) indices into ``target`` of the angles no acquired view is within ``tol`` of (on the circle)."""
    diff = circular_distance(np.asarray(target, np.float64)[:, None], np.asarray(acquired, np.float64)[None, :])
    return np.flatnonzero(diff.min(axis=1) > tol)


def check_target_angles(
    acquired: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    *,
    name: str = "target angles",
    tol: float = ANGLE_TOLERANCE,
) -> np.ndarray:
    """Check that ``target`` (radians) can be completed from views at ``acquired``: 1-D, finite, distinct modulo a
    turn, and holding every acquired angle within ``tol`` (modulo a turn).

    Returns:
        (n_target,) float64 target angles with the ones matching an acquired view replaced by its exact angle.

    Raises:
        ValueError: naming ``name`` and the first acquired angles (degrees) missing from the target.
    """
    acq = _as_angles(acquired, "acquired angles")
    arr = np.asarray(target)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of angles (radians), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be real numbers (radians), got dtype {arr.dtype}")
    tgt = arr.astype(np.float64)
    if not np.all(np.isfinite(tgt)):
        raise ValueError(f"{name} must be finite")
    wrapped = np.sort(np.mod(tgt, TWO_PI))
    if tgt.size > 1 and np.min(np.diff(np.append(wrapped, wrapped[0] + TWO_PI))) <= tol:
        raise ValueError(f"{name} must be distinct modulo a full turn (two lie within {tol:g} rad)")
    diff = circular_distance(acq[:, None], tgt[None, :])  # of each acquired angle to each target angle
    nearest = np.argmin(diff, axis=1)
    missing = np.flatnonzero(diff[np.arange(acq.size), nearest] > tol)
    if missing.size:
        shown = ", ".join(f"{np.degrees(acq[i]):.4f}" for i in missing[:5])
        raise ValueError(f"{name} do not contain {missing.size} of the {acq.size} acquired view angles (within "
                         f"{tol:g} rad), e.g. {shown} deg: the completed scan must keep every acquired view")
    if np.unique(nearest).size != nearest.size:
        raise ValueError(f"{name}: two acquired views match the same target angle")
    out = tgt.copy()
    out[nearest] = tgt[nearest] + np.angle(np.exp(1j * (acq - tgt[nearest])))  # snap, keeping the target's turn
    return out


def bracket_views(
    acquired: Sequence[float] | np.ndarray,
    targets: Sequence[float] | np.ndarray,
    *,
    full_circle: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The acquired views on either side of each target angle and the target's fraction between them.

    Args:
        acquired: (n,) angles of the acquired views, radians (any order).
        targets: (m,) angles of the views wanted, radians.
        full_circle: whether the acquired views cover a full circle (wrap-around between the last and the
            first view); ``None`` detects it (see :func:`is_full_circle`).

    Returns:
        ``(ia, ib, t)``: (m,) int64 indices into ``acquired`` of the previous and the next view in the direction
        of rotation, and (m,) float64 fractions ``t`` in [0, 1] (``0`` at view ``ia``, ``1`` at ``ib``). A target
        at an acquired angle gets ``ia == ib`` and ``t = 0``.
    """
    acq = _as_angles(acquired, "acquired")
    tgt = _as_angles(targets, "targets")
    c = _circle(acq, full_circle)
    n = acq.size
    pos = np.mod(c.direction * tgt - c.start, TWO_PI)
    pos = np.where(pos > TWO_PI - 1e-7, 0.0, pos)  # a target one turn after the start is the start
    k = np.searchsorted(c.rel, pos + 1e-9, side="right") - 1
    k = np.clip(k, 0, n - 1)
    k_next = k + 1
    ends = np.append(c.rel, TWO_PI if c.full else np.inf)
    lo = c.rel[k]
    hi = ends[k_next]
    on_view = np.abs(pos - lo) <= 1e-9
    ia = c.order[k]
    ib = c.order[np.mod(k_next, n)]
    with np.errstate(invalid="ignore"):
        t = np.where(np.isfinite(hi), (pos - lo) / (hi - lo), 0.0)
    if not c.full:
        # beyond the last view of a short scan: the nearer end view
        beyond = k == n - 1
        nearer_first = (TWO_PI - pos) < (pos - c.rel[-1])
        ia = np.where(beyond & nearer_first, c.order[0], ia)
        ib = np.where(beyond, ia, ib)
        t = np.where(beyond, 0.0, t)
    ib = np.where(on_view, ia, ib)
    t = np.clip(np.where(on_view, 0.0, t), 0.0, 1.0)
    return ia.astype(np.int64), ib.astype(np.int64), t


def dense_angles(acquired: Sequence[float] | np.ndarray, factor: int, *, full_circle: bool | None = None) -> np.ndarray:
    """Angles of a dense scan: the acquired ones plus views filling each gap, ``factor`` times as dense.

    The target spacing is the median acquired gap divided by ``factor``; each gap gets ``round(gap / spacing)``
    intervals (at least one), equally spaced, so uneven gaps are filled evenly. On a full circle the gap from the
    last view back to the first is filled too. Returns the angles in rotation order, starting at the first view
    in rotation order, in the units and direction of ``acquired``.
    """
    acq = _as_angles(acquired, "acquired")
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    c = _circle(acq, full_circle)
    if acq.size == 1:
        return acq.copy()
    ends = np.append(c.rel, TWO_PI) if c.full else c.rel
    gaps = np.diff(ends)
    spacing = float(np.median(gaps)) / factor
    out = []
    for lo, gap in zip(ends[:-1], gaps):
        m = max(1, int(round(gap / spacing)))
        out.append(lo + gap * np.arange(m) / m)
    if not c.full:
        out.append(c.rel[-1:])
    rel = np.concatenate(out)
    return c.direction * (c.start + rel)


def _rotation_z(delta: np.ndarray) -> np.ndarray:
    c, s = np.cos(delta), np.sin(delta)
    rot = np.zeros((delta.size, 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    return rot


def geometry_at_angles(geom: ConeGeometry, angles: Sequence[float] | np.ndarray, *, full_circle: bool | None = None) -> ConeGeometry:
    """A geometry with views at ``angles``, each the pose of the nearest acquired view of ``geom`` rotated about the
    ``z`` axis by the angle difference (exact for a circular orbit; source, detector and its tilt and offsets are
    carried along). Views at acquired angles are copied unchanged."""
    geom = check_geometry(geom)
    tgt = _as_angles(angles, "angles")
    ia, ib, t = bracket_views(geom.angles, tgt, full_circle=full_circle)
    near = np.where(t <= 0.5, ia, ib)
    delta = np.angle(np.exp(1j * (tgt - geom.angles[near])))
    rot = _rotation_z(delta)
    vec = geom.vectors[near].reshape(-1, 4, 3)
    vec = np.einsum("nij,nkj->nki", rot, vec).reshape(-1, 12)
    same = np.abs(delta) <= 1e-12
    vec[same] = geom.vectors[near[same]]
    return dataclasses.replace(geom, vectors=vec, angles=tgt)


@dataclasses.dataclass(frozen=True)
class CompletionPlan:
    """How to build a dense scan from a sparse one.

    Attributes:
        geometry: the dense geometry (``n_dense`` views).
        prev: (n_dense,) index of the acquired view before each dense view (rotation order).
        next: (n_dense,) index of the acquired view after it (wraps to the first view on a full circle).
        t: (n_dense,) fraction in [0, 1] between them.
        acquired: (n_dense,) bool, the dense view is an acquired one (``prev == next``, ``t == 0``).
        full_circle: whether wrap-around was used.
    """

    geometry: ConeGeometry
    prev: np.ndarray
    next: np.ndarray
    t: np.ndarray
    acquired: np.ndarray
    full_circle: bool

    @property
    def missing(self) -> np.ndarray:
        """Indices of the dense views to synthesise."""
        return np.flatnonzero(~self.acquired)


def plan_completion(
    geom: ConeGeometry,
    *,
    factor: int | None = None,
    angles: Sequence[float] | np.ndarray | None = None,
    target: ConeGeometry | None = None,
    full_circle: bool | None = None,
) -> CompletionPlan:
    """Plan the completion of the sparse scan ``geom``: give ``factor`` (``factor`` times denser, see
    :func:`dense_angles`), explicit target ``angles`` (radians), or a ``target`` geometry (e.g. the full scan it
    was thinned from, whose poses are then used as they are).

    Target angles (or the target geometry's) must hold every acquired angle (see :func:`check_target_angles`);
    the dense scan has exactly those views, in their order. ``full_circle`` (wrap-around from the last acquired
    view to the first) is detected from the target when ``None``: a target that is a full circle completes the
    gaps (holes included) of a full circle.
    """
    geom = check_geometry(geom)
    if sum(x is not None for x in (factor, angles, target)) != 1:
        raise ValueError("give exactly one of factor, angles and target")
    if target is not None:
        dense = check_geometry(target, "target")
        if dense.detector_shape != geom.detector_shape:
            raise ValueError(f"target must have the detector shape of geom {geom.detector_shape}, got {dense.detector_shape}")
        ang = check_target_angles(geom.angles, dense.angles, name="target geometry angles")
    elif angles is not None:
        ang = check_target_angles(geom.angles, angles, name="angles")
    if full_circle is None and factor is None and ang.size >= 3:
        full_circle = _circle(ang, None).full
    full = _circle(np.asarray(geom.angles, np.float64), full_circle).full
    if factor is not None:
        ang = dense_angles(geom.angles, factor, full_circle=full)
    if target is None:
        dense = geometry_at_angles(geom, ang, full_circle=full)
    ia, ib, t = bracket_views(geom.angles, ang, full_circle=full)
    acquired = (ia == ib) & (t == 0.0)
    return CompletionPlan(dense, ia, ib, t, acquired, full)
