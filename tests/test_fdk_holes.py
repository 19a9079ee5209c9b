"""FDK redundancy from the rays: full circles with holes, short scans, full scans, against the analytic phantom."""

from unittest import mock

import numpy as np
import pytest

import cbct
from cbct.fdk import weights
from cbct.fdk.weights import fan_angles, geometry_coverage, redundancy_weights, scan_coverage
from cbct.phantoms import Ellipsoid, line_integrals, shepp_logan_projections, shepp_logan_volume

FAN = np.arctan(64 * 1.2 / 600)  # half fan angle of the geometries below
BLOBS = [Ellipsoid(0.02, (0, 0, 0), (28, 24, 20)), Ellipsoid(0.01, (8, -5, 3), (8, 10, 6)), Ellipsoid(-0.008, (-9, 6, -4), (6, 5, 7))]
CENTRAL = np.s_[32, 8:56, 8:56]


def geometry(angles=None, **kw):
    base = dict(dso=400.0, dsd=600.0, detector_shape=(64, 128), detector_pixel_size=1.2, volume_shape=64, voxel_size=1.0)
    base.update(kw)
    if angles is None:
        return cbct.ConeGeometry.circular(n_views=360, **base)
    return cbct.ConeGeometry.circular(angles=np.asarray(angles), **base)


def with_hole(step: int, hole_deg: float, start_deg: float = 100.0) -> np.ndarray:
    """Angles (radians) of every ``step``-th degree of a full circle without ``[start, start + hole)``."""
    deg = np.arange(0, 360, step, dtype=float)
    return np.radians(deg[~((deg >= start_deg) & (deg < start_deg + hole_deg))])


def plain_fdk(proj, geom, **kw):
    """FDK with 1/2 for every ray and the holes covered by angular weights (the old ``short_scan=False``)."""
    with mock.patch.object(weights, "HOLE_MIN_GAP", np.inf), mock.patch.object(weights, "HOLE_ALWAYS", np.inf):
        return cbct.fdk(proj, geom, short_scan=False, **kw)


@pytest.fixture(scope="module")
def analytic():
    """Exact Shepp-Logan line integrals of 360 views, the phantom and the field-of-view mask."""
    full = geometry()
    truth = shepp_logan_volume(full.volume, half_size=30, supersample=2)
    y, x = np.mgrid[:64, :64] - 31.5
    mask = np.zeros(full.volume.shape, bool)
    mask[16:48] = x**2 + y**2 <= (400 * np.sin(FAN) - 2) ** 2
    return full, shepp_logan_projections(full, half_size=30), truth, mask


def psnr(rec, truth, mask):
    return 20 * np.log10(truth[mask].max() / np.sqrt(np.mean((rec[mask] - truth[mask]) ** 2)))


def test_coverage_kinds():
    assert scan_coverage(np.radians(np.arange(0, 360, 8.0)), half_fan=FAN).kind == "full"
    for hole in (10, 30, 60, 90):
        cov = scan_coverage(with_hole(1, hole), half_fan=FAN)
        assert cov.kind == "holes" and len(cov.holes) == 1
        # the hole spans the missing sector: from half a gap after the last view before it to half a gap before the next
        assert np.degrees(np.diff(cov.holes[0])[0]) == pytest.approx(hole, abs=1e-9)
        assert cov.gaps.sum() == pytest.approx(2 * np.pi - np.radians(hole))
        # Parker can still be forced; forbidding it changes nothing here
        assert scan_coverage(with_hole(1, hole), half_fan=FAN, short_scan=True).kind == "short"
        assert scan_coverage(with_hole(1, hole), half_fan=FAN, short_scan=False).kind == "holes"
    # one arc of 180 deg plus the fan (and a little) is a short scan; its end views get their inner gap twice
    short = scan_coverage(np.linspace(0, np.pi + 2 * FAN + 0.1, 200), half_fan=FAN)
    assert short.kind == "short" and short.gaps.sum() == pytest.approx(np.pi + 2 * FAN + 0.1 + short.gaps[0])
    # a short scan of a few views is still one
    assert scan_coverage(np.radians([0.0, 50, 100, 150, 200]), half_fan=FAN).kind == "short"
    assert scan_coverage(np.radians([0.0, 90, 180, 270]), half_fan=FAN).kind == "full"
    # the larger gaps of random views are no holes
    assert scan_coverage(np.sort(np.random.default_rng(1).uniform(0, 2 * np.pi, 45)), half_fan=FAN).kind == "full"
    # two holes
    deg = np.arange(0, 360, 2.0)
    two = scan_coverage(np.radians(deg[~(((deg > 40) & (deg < 70)) | ((deg > 200) & (deg < 260)))]), half_fan=FAN)
    assert two.kind == "holes" and sorted(np.round(np.degrees(np.diff(two.holes, axis=1)[:, 0]))) == [28.0, 58.0]  # the missing sectors less half a gap each side


@pytest.mark.parametrize("hole", [10, 30, 90])
def test_hole_weights_sum_to_one_per_line(hole):
    g = geometry(with_hole(1, hole) + 0.3)
    w = redundancy_weights(g)
    alpha = fan_angles(g)
    beta = geometry_coverage(g).beta
    assert w.min() >= 0 and w.max() <= 1
    order = np.argsort(beta)
    for i in range(0, g.n_views, 7):
        conj_beta = np.mod(beta[i] + np.pi + 2 * alpha[i], 2 * np.pi)
        # W of the conjugate ray (column nu - 1 - j has fan angle -alpha), linearly interpolated between views
        conj_w = np.array([np.interp(b, beta[order], w[order, -1 - j], period=2 * np.pi) for j, b in enumerate(conj_beta)])
        lo, hi = geometry_coverage(g).holes[0]
        in_hole = np.mod(conj_beta - lo, 2 * np.pi) < hi - lo
        np.testing.assert_array_equal(w[i][in_hole], 1.0)  # measured once: the whole weight
        # (skip conjugates between the views bordering the hole: W is not interpolated across the hole)
        near = np.mod(conj_beta - lo + np.radians(1), 2 * np.pi) < hi - lo + np.radians(2)
        np.testing.assert_allclose((w[i] + conj_w)[~near], 1.0, atol=2e-3)
    # far from the hole and from its conjugate sector every ray has weight one half; rays whose conjugates lie
    # in the hole have weight one
    gantry = np.degrees(g.angles - 0.3)
    np.testing.assert_allclose(w[np.abs(gantry - 62) < 2], 0.5)
    central = np.abs(alpha[0]) < np.radians(2)
    np.testing.assert_array_equal(w[np.abs(gantry - (280 + hole / 2)) < 1][:, central], 1.0)


@pytest.mark.parametrize("hole", [10, 30, 60, 90])
def test_sparse_fdk_with_a_hole_beats_parker_and_plain_weights(analytic, hole):
    """Every 4th degree with a hole: the per-ray weights beat Parker's (the old choice for gaps over 20 deg) and
    1/2 everywhere (the old choice below), in PSNR against the phantom inside the field of view."""
    full, proj, truth, mask = analytic
    keep = np.flatnonzero(np.isin(np.round(np.degrees(full.angles), 6), np.round(np.degrees(with_hole(4, hole)), 6)))
    g, p = full[keep], proj[keep]
    assert geometry_coverage(g).kind == "holes"
    now = psnr(cbct.fdk(p, g), truth, mask)
    parker = psnr(cbct.fdk(p, g, short_scan=True), truth, mask)
    plain = psnr(plain_fdk(p, g), truth, mask)
    assert now > max(parker, plain) + 0.3, (now, parker, plain)


@pytest.mark.parametrize("hole", [30, 90])
def test_dense_fdk_with_a_hole_matches_the_full_scan(hole):
    ref_g = geometry()
    ref = cbct.fdk(line_integrals(BLOBS, ref_g), ref_g, filter="hann")
    g = geometry(with_hole(1, hole))
    p = line_integrals(BLOBS, g)
    rel = lambda a: np.linalg.norm(a[CENTRAL] - ref[CENTRAL]) / np.linalg.norm(ref[CENTRAL])  # noqa: E731
    assert rel(cbct.fdk(p, g, filter="hann")) < 0.002
    assert rel(plain_fdk(p, g, filter="hann")) > 0.02  # the hole matters


def test_true_short_scans_keep_parker_weights(analytic):
    full, proj, truth, mask = analytic
    for step in (1, 4):
        keep = np.flatnonzero(full.angles <= np.pi + 2 * FAN + np.radians(10) + 1e-9)[::step]
        g, p = full[keep], proj[keep]
        assert geometry_coverage(g).kind == "short"
        np.testing.assert_array_equal(cbct.fdk(p, g), cbct.fdk(p, g, short_scan=True))
        # forbidding Parker gives the hole weights, no better on a true short scan
        assert psnr(cbct.fdk(p, g, short_scan=False), truth, mask) < psnr(cbct.fdk(p, g), truth, mask) + 0.1


def test_full_scans_keep_one_half():
    for angles in (np.linspace(0, 2 * np.pi, 360, endpoint=False), np.radians(np.arange(0, 360, 8.0))):
        g = geometry(angles)
        assert geometry_coverage(g).kind == "full"
        np.testing.assert_array_equal(redundancy_weights(g), 0.5)
        np.testing.assert_allclose(geometry_coverage(g).gaps, 2 * np.pi / g.n_views, rtol=1e-12)
    # uneven sparse views without a hole: the plain weights, to rounding
    from cbct.simulation.sparse import uneven_indices

    g = geometry()[uneven_indices(360, 4, rng=0)]
    p = line_integrals(BLOBS, g)
    assert geometry_coverage(g).kind == "full"
    np.testing.assert_allclose(cbct.fdk(p, g), plain_fdk(p, g), rtol=1e-6, atol=1e-9)


def test_hole_with_displaced_detector_composes():
    """Wang's weights compose with hole weights: a ray whose conjugate is off the short side or in the hole is
    measured once (W = 1); two measurements still share one."""
    g = geometry(with_hole(1, 40), detector_shape=(64, 88), detector_offset=(0, 24 * 1.2))
    w = redundancy_weights(g)
    alpha = fan_angles(g)
    assert w.min() >= 0 and w.max() <= 1
    overlap = min(-alpha[0].min(), alpha[0].max())
    beyond = np.abs(alpha[0]) > overlap + 1e-6  # the long side beyond the overlap: no conjugate on the detector
    assert beyond.sum() > 20
    np.testing.assert_allclose(w[:, beyond], 1.0)
    short_edge = np.argmin(np.abs(np.abs(alpha[0]) - overlap) + (np.abs(alpha[0]) > overlap) * 1.0)
    assert np.all(w[:, short_edge] < 0.01)  # Wang's weight falls to zero at the edge of the short side


def test_real_anatomy_holes_and_random_views(data_file):
    """The head CT (real anatomy) projected by cbct's projector: a missing sector among every 8th view and 45 views
    at random angles (whose larger gaps are no holes) beat the old choice, Parker weights (a gap over 20 deg)."""
    from cbct.operators import project
    from cbct.phantoms.real import load_head_mha

    vol, grid = load_head_mha(data_file("head.mha"))
    full = cbct.ConeGeometry.circular(dso=500.0, dsd=800.0, detector_shape=(96, 128), detector_pixel_size=2.6,
                                      volume_shape=grid.shape, voxel_size=grid.voxel_size, n_views=360)
    proj = np.asarray(project(vol, full))
    mask = np.zeros(grid.shape, bool)
    mask[23:70] = True
    mask &= vol > 0.002
    deg = np.degrees(full.angles)
    patterns = {"holes": np.flatnonzero((np.arange(360) % 8 == 0) & ~((deg >= 100) & (deg < 132))),
                "full": np.sort(np.random.default_rng(1).choice(360, 45, replace=False))}
    for kind, keep in patterns.items():
        g, p = full[keep], proj[keep]
        assert geometry_coverage(g).kind == kind
        now, parker = psnr(cbct.fdk(p, g), vol, mask), psnr(cbct.fdk(p, g, short_scan=True), vol, mask)
        assert now > parker + 0.3, (kind, now, parker)
