"""FDK projection weights: cosine, angular (non-uniform angles), and redundancy (short scan, holes, offset detector).

Redundancy: every line through the object may be measured more than once (twice in a full circular scan; once or
twice in a short scan, in a full circle with holes or with a displaced detector). A weight ``W`` per measured ray
with ``sum W = 1`` over all measurements of the same line makes the backprojection of a circular scan a proper FBP.
Each ray gets a smooth confidence ``c = c_scan(beta, alpha) * c_detector(alpha)`` and ``W = c / (c + c_conjugate)``:

- a full scan: ``c_scan = 1``, so ``W = 1/2`` (with a centred detector);
- a short scan (one arc of less than ``pi + 2 fan + SHORT_SCAN_MARGIN``): Parker's sin² tapers at its ends;
- a full circle with holes (gaps much larger than the typical spacing): ``c_scan`` is 0 inside each hole and rises
  as sin² over ``taper`` outside it, so a ray whose conjugate falls in a hole gets ``W = 1``, one whose conjugate is
  measured ``1/2``, smoothly in between (normalised smooth weights, in the spirit of Wesarg et al., "Parker weights
  revisited", Med. Phys. 2002);
- a displaced detector: Wang's weights across its overlap (as RTK). These compose with any of the above.

Fan angles ``alpha`` follow Parker/RTK: the conjugate of ray ``(beta, alpha)`` is ``(beta + pi + 2 alpha, -alpha)``
with ``beta`` the gantry angle measured from the start of the scan in the direction of rotation.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from cbct.geometry import ConeGeometry

log = logging.getLogger(__name__)

TWO_PI = 2 * np.pi
HOLE_MIN_GAP = np.radians(5.0)  # a hole is a gap above this ...
HOLE_FACTOR = 2.5  # ... and above this many times the 90th percentile of the gaps (random gaps are no holes)
HOLE_ALWAYS = 0.5 * np.pi  # a gap above this (a quarter turn) is a hole however few the views
SHORT_SCAN_MARGIN = np.radians(20.0)  # one arc shorter than 180 deg + 2 half fans + this: Parker short scan
TAPER_MIN = np.radians(20.0)  # the sin² taper beside a hole is this wide, or wider:
TAPER_FANS = 4.0  # this many half fans (W changes across the detector over half the taper: keep it smooth)
TAPER_GAPS = 2.5  # this many median gaps
DISPLACED_FRACTION = 0.1  # |gamma_min + gamma_max| above this fraction of the fan width: displaced detector


@dataclasses.dataclass(frozen=True)
class ScanCoverage:
    """Angular coverage of a circular scan.

    Attributes:
        beta: (n_views,) gantry angle from the start of the scan, radians, increasing with rotation.
        arc: angular range from the first to the last view, radians.
        gaps: (n_views,) angular weight of each view (half the gaps to its neighbours, holes excluded), radians.
        short_scan: one arc of at most about ``pi + 2 fan``: Parker weights.
        holes: (k, 2) ``[start, end)`` in ``beta`` of the gaps not covered by views (a full circle with holes;
            for a short scan the one gap after its last view), radians.
        taper: width of the sin² taper beside each hole, radians.
    """

    beta: np.ndarray
    arc: float
    gaps: np.ndarray
    short_scan: bool
    holes: np.ndarray
    taper: float

    @property
    def kind(self) -> str:
        """``"short"``, ``"holes"`` or ``"full"``."""
        return "short" if self.short_scan else ("holes" if len(self.holes) else "full")


def scan_coverage(angles: np.ndarray, *, half_fan: float = 0.0, short_scan: bool | None = None) -> ScanCoverage:
    """Angular coverage and per-view angular weights of views at gantry ``angles`` (radians, any order).

    Gaps above ``HOLE_MIN_GAP`` and ``HOLE_FACTOR`` times the 90th percentile of the gaps are holes (a sector
    missing from otherwise regular views; the larger gaps of random or uneven views are not), and so are gaps over
    90 degrees. One hole leaving an arc shorter
    than ``pi + 2 half_fan + SHORT_SCAN_MARGIN`` makes a short scan (``short_scan`` forces or forbids it: a forced
    short scan starts after the largest gap); otherwise the scan is a full circle, with holes or without.
    """
    ang = np.asarray(angles, dtype=np.float64)
    n = ang.size
    if n == 1:
        return ScanCoverage(np.zeros(1), 0.0, np.array([TWO_PI]), False, np.zeros((0, 2)), 0.0)
    direction = 1.0 if np.sum(np.diff(np.unwrap(ang))) >= 0 else -1.0
    wrapped = np.mod(direction * ang, TWO_PI)
    order = np.argsort(wrapped, kind="stable")
    sorted_ang = wrapped[order]
    gaps_next = np.diff(np.append(sorted_ang, sorted_ang[0] + TWO_PI))  # gap to the next view, circularly
    spacing = float(np.median(gaps_next))
    is_hole = gaps_next > max(HOLE_MIN_GAP, HOLE_FACTOR * float(np.quantile(gaps_next, 0.9)))
    is_hole |= gaps_next > HOLE_ALWAYS
    largest = int(np.argmax(gaps_next))
    if short_scan is None:
        short = bool(is_hole.sum() == 1 and TWO_PI - gaps_next[largest] < np.pi + 2 * half_fan + SHORT_SCAN_MARGIN)
    else:
        short = bool(short_scan)
    if short:
        is_hole = np.zeros(n, bool)
        is_hole[largest] = True
    first = (int(np.flatnonzero(is_hole)[np.argmax(gaps_next[is_hole])]) + 1) % n if is_hole.any() else 0
    beta_sorted = np.mod(sorted_ang - sorted_ang[first], TWO_PI)
    gaps_prev = np.roll(gaps_next, 1)
    # a hole is not covered: its edge views get their inner gap twice (the typical spacing if both sides are holes)
    inner_prev = np.where(np.roll(is_hole, 1), spacing, gaps_prev)
    inner_next = np.where(is_hole, spacing, gaps_next)
    covered_next = np.where(is_hole, inner_prev, gaps_next)
    covered_prev = np.where(np.roll(is_hole, 1), inner_next, gaps_prev)
    weights_sorted = 0.5 * (covered_prev + covered_next)
    # each hole starts half the edge view's inner gap after it and ends as much before the next view
    k = np.flatnonzero(is_hole)
    starts = beta_sorted[k] + 0.5 * covered_next[k]
    ends = np.maximum(starts, beta_sorted[k] + gaps_next[k] - 0.5 * covered_prev[(k + 1) % n])
    holes = np.stack([starts, ends], axis=1) if k.size else np.zeros((0, 2))
    beta = np.empty(n)
    weights = np.empty(n)
    beta[order] = beta_sorted
    weights[order] = weights_sorted
    taper = max(TAPER_MIN, TAPER_FANS * half_fan, TAPER_GAPS * spacing)
    return ScanCoverage(beta, float(beta_sorted.max()), weights, short, holes, taper)


def fan_angles(geom: ConeGeometry) -> np.ndarray:
    """(n_views, nu) fan angle ``alpha`` of each detector column centre, radians, Parker/RTK sign convention."""
    nv, nu = geom.detector_shape
    pp_u = geom.principal_points()[:, 1]
    du = geom.pixel_sizes()[:, 1]
    dsd = geom.source_detector_distances()
    u_mm = (np.arange(nu) - (nu - 1) / 2)[None, :] * du[:, None] - pp_u[:, None]
    # orient: alpha > 0 on the side the source moves away from (so the conjugate is at beta + pi + 2 alpha)
    coverage_dir = 1.0 if np.sum(np.diff(np.unwrap(geom.angles))) >= 0 else -1.0
    a = geom.angles
    tangent = coverage_dir * np.stack([-np.sin(a), np.cos(a), np.zeros_like(a)], axis=1)
    u_hat = geom.u_vectors / np.linalg.norm(geom.u_vectors, axis=1, keepdims=True)
    side = np.sign(np.einsum("ij,ij->i", u_hat, tangent))
    side[side == 0] = 1.0
    return -side[:, None] * np.arctan(u_mm / dsd[:, None])


def _sin2_ramp(x: np.ndarray) -> np.ndarray:
    """sin²(pi/2 * clip(x, 0, 1))."""
    return np.sin(0.5 * np.pi * np.clip(x, 0.0, 1.0)) ** 2


def parker_confidence(beta: np.ndarray, alpha: np.ndarray, delta: float) -> np.ndarray:
    """Parker's tapers at both ends of a short scan covering ``[0, pi + 2 delta]``; 0 outside it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        start = np.where(delta - alpha > 0, _sin2_ramp(beta / (2 * (delta - alpha))), (beta > 0).astype(float))
        end = np.where(
            delta + alpha > 0,
            _sin2_ramp((np.pi + 2 * delta - beta) / (2 * (delta + alpha))),
            (beta < np.pi + 2 * delta).astype(float),
        )
    inside = (beta >= 0) & (beta <= np.pi + 2 * delta)
    return np.where(inside, start * end, 0.0)


def hole_confidence(beta: np.ndarray, holes: np.ndarray, taper: float) -> np.ndarray:
    """0 inside each ``[start, end)`` of ``holes`` (radians, any turn of ``beta``), rising as sin² over ``taper``
    radians on both sides of it, 1 elsewhere."""
    c = np.ones_like(np.asarray(beta, dtype=np.float64))
    for start, end in holes:
        pos = np.mod(beta - start, TWO_PI)  # from the start of the hole, in the direction of rotation
        width = end - start
        distance = np.minimum(pos - width, TWO_PI - pos)  # to the nearer edge, outside the hole
        c = c * np.where(pos < width, 0.0, _sin2_ramp(distance / taper))
    return c


def displaced_confidence(alpha: np.ndarray, alpha_min: float, alpha_max: float) -> np.ndarray:
    """Wang's weights across the overlap of a displaced detector covering fan angles ``[alpha_min, alpha_max]``."""
    overlap = min(-alpha_min, alpha_max)
    sign = 1.0 if alpha_max + alpha_min > 0 else -1.0  # the long side of the detector
    ramp = 0.5 * (1 + np.sin(0.5 * np.pi * np.clip(sign * alpha / overlap, -1.0, 1.0)))
    on_detector = (alpha >= alpha_min - 1e-12) & (alpha <= alpha_max + 1e-12)
    return np.where(on_detector, ramp, 0.0)


def is_displaced(alpha: np.ndarray) -> bool:
    """Whether the detector columns (fan angles of one view) are displaced enough to need Wang's weights."""
    lo, hi = float(alpha.min()), float(alpha.max())
    if lo >= 0 or hi <= 0:
        raise ValueError(
            "the detector does not cover the rotation axis in every view (fan angles "
            f"{np.degrees(lo):.2f} to {np.degrees(hi):.2f} deg): FDK needs the central ray on the detector"
        )
    return abs(lo + hi) > DISPLACED_FRACTION * (hi - lo)


def uses_offset_weights(geom: ConeGeometry, offset_detector: bool | None, alpha: np.ndarray | None = None) -> bool:
    """Resolve ``offset_detector``: ``None`` means "when the detector is displaced" (any view)."""
    if offset_detector is not None:
        return bool(offset_detector)
    alpha = fan_angles(geom) if alpha is None else alpha
    return any(is_displaced(a) for a in alpha)


def geometry_coverage(geom: ConeGeometry, *, short_scan: bool | None = None, alpha: np.ndarray | None = None) -> ScanCoverage:
    """:func:`scan_coverage` of ``geom``'s angles with the half fan of its detector (the smaller side)."""
    alpha = fan_angles(geom) if alpha is None else alpha
    half_fan = float(np.min(np.abs(alpha[:, [0, -1]])))
    return scan_coverage(geom.angles, half_fan=half_fan, short_scan=short_scan)


def redundancy_weights(geom: ConeGeometry, *, short_scan: bool | None = None, offset_detector: bool | None = None) -> np.ndarray:
    """(n_views, nu) weights ``W`` with ``sum W = 1`` over the measurements of each line (see module docs).

    ``short_scan``: ``None`` decides from the angles (:func:`scan_coverage`): Parker weights for a short scan, hole
    weights for a full circle with holes, 1/2 for a full scan; ``True`` forces Parker weights, ``False`` forbids
    them (a full circle, with holes where there are gaps). ``offset_detector``: ``None`` applies Wang's weights
    when the detector is displaced by more than 5 % of its fan; ``False`` disables, ``True`` forces.
    """
    alpha = fan_angles(geom)
    coverage = geometry_coverage(geom, short_scan=short_scan, alpha=alpha)
    short = coverage.short_scan
    displaced = uses_offset_weights(geom, offset_detector, alpha)
    beta = coverage.beta[:, None]
    delta = 0.5 * (coverage.arc - np.pi)
    if short:
        if delta <= 0:
            raise ValueError(f"a short scan needs more than 180 degrees of coverage, got {np.degrees(coverage.arc):.1f}")
        half_fan = float(np.min(np.abs(alpha[:, [0, -1]])))
        if delta < half_fan:
            log.warning(
                "short scan covers %.1f deg, less than 180 deg plus the fan (%.1f deg): Parker weights are approximate",
                np.degrees(coverage.arc), 180 + np.degrees(2 * half_fan),
            )
        log.info("short scan of %.1f deg: Parker weights (delta = %.2f deg)", np.degrees(coverage.arc), np.degrees(delta))
    elif len(coverage.holes):
        log.info("full circle with %d hole(s) of %s deg: hole weights (taper %.1f deg)", len(coverage.holes),
                 ", ".join(f"{np.degrees(e - s):.1f}" for s, e in coverage.holes), np.degrees(coverage.taper))
    if displaced:
        log.info("displaced detector: offset-detector weights")
        if len(coverage.holes) and not short:
            log.warning("displaced detector with holes in the circle: lines beyond the overlap that cross the holes "
                        "are measured by no view")

    def confidence(b: np.ndarray, a: np.ndarray, view_alpha: np.ndarray) -> np.ndarray:
        if short:
            c = parker_confidence(b, a, delta)
        else:
            c = hole_confidence(b, coverage.holes, coverage.taper) * np.ones_like(a)
        if displaced:
            c = c * displaced_confidence(a, float(view_alpha.min()), float(view_alpha.max()))
        return c

    own = np.empty_like(alpha)
    conjugate = np.zeros_like(alpha)
    for i in range(geom.n_views):
        a = alpha[i]
        own[i] = confidence(beta[i], a, a)
        # the conjugate of (beta, alpha) is (beta + pi + 2 alpha, -alpha); a short scan may meet it a turn away
        for turns in ((-1, 0, 1) if short else (0,)):
            conjugate[i] += confidence(beta[i] + np.pi + 2 * a + TWO_PI * turns, -a, a)
    total = own + conjugate
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(total > 1e-12, own / total, np.where(own > 0, 1.0, 0.0))
    return weights


def cosine_weights(geom: ConeGeometry, views: slice | np.ndarray, xp=np, dtype=np.float64):
    """(len(views), nv, nu) FDK cosine weights ``DSD / sqrt(DSD² + u² + v²)``, with ``(u, v)`` measured from the
    principal point (so detector offsets are respected). ``xp``: array module of the result; ``dtype``: its dtype
    (only the small per-view offsets are computed on the host)."""
    nv, nu = geom.detector_shape
    sub = geom[views]
    dsd = sub.source_detector_distances()
    pp = sub.principal_points()
    pitch = sub.pixel_sizes()
    v_mm = (np.arange(nv) - (nv - 1) / 2)[None, :] * pitch[:, 0:1] - pp[:, 0:1]
    u_mm = (np.arange(nu) - (nu - 1) / 2)[None, :] * pitch[:, 1:2] - pp[:, 1:2]
    dsd_x = xp.asarray(dsd, dtype=dtype)[:, None, None]
    r2 = xp.asarray(v_mm, dtype=dtype)[:, :, None] ** 2 + xp.asarray(u_mm, dtype=dtype)[:, None, :] ** 2
    return dsd_x / xp.sqrt(dsd_x**2 + r2)
