"""FDK: scaling, windows, Shepp–Logan, short scans, displaced detectors, non-uniform angles, errors."""

from unittest import mock

import numpy as np
import pytest

import cbct
from cbct.fdk import reconstruction
from cbct.fdk.filters import FILTERS, padded_length, ramp_response
from cbct.fdk.weights import redundancy_weights, scan_coverage
from cbct.phantoms import Ellipsoid, line_integrals, shepp_logan, shepp_logan_projections, shepp_logan_volume, voxelize

FAN = np.arctan(64 * 1.2 / 600)  # half fan angle of the geometries below (128 columns of 1.2 mm at 600 mm)
BLOBS = [Ellipsoid(0.02, (0, 0, 0), (28, 24, 20)), Ellipsoid(0.01, (8, -5, 3), (8, 10, 6)), Ellipsoid(-0.008, (-9, 6, -4), (6, 5, 7))]
INNER = np.s_[8:56, 8:56, 8:56]
CENTRAL = np.s_[32, 8:56, 8:56]


def geometry(**kw):
    base = dict(dso=400.0, dsd=600.0, detector_shape=(64, 128), detector_pixel_size=1.2, volume_shape=64, voxel_size=1.0, n_views=180)
    base.update(kw)
    if "angles" in kw:
        base.pop("n_views")
    return cbct.ConeGeometry.circular(**base)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def full_blobs():
    g = geometry(n_views=360)
    return cbct.fdk(line_integrals(BLOBS, g), g, filter="hann")


@pytest.mark.parametrize("window", FILTERS)
def test_uniform_cylinder_reconstructs_to_its_attenuation(window):
    g = geometry()
    cylinder = [Ellipsoid(0.02, (0, 0, 0), (25, 25, 20), cylinder=True)]
    rec = cbct.fdk(line_integrals(cylinder, g), g, filter=window)
    assert rec.dtype == np.float32 and rec.shape == g.volume.shape
    assert abs(rec[24:40, 24:40, 24:40].mean() / 0.02 - 1) < 0.01
    assert abs(rec[32, 5, 5]) < 1e-3 * 0.02 * 50  # air stays air


def test_shepp_logan_from_analytic_projections_matches_the_phantom():
    g = geometry(n_views=360)
    truth = shepp_logan_volume(g.volume, half_size=30)
    rec = cbct.fdk(shepp_logan_projections(g, half_size=30), g, filter="hann")
    # mean attenuation inside eroded regions of the central slice: brain matter, the two dark ellipses
    z = 32
    for value in (0.2 * 0.02, 0.0):
        mask = np.isclose(truth[z], value, atol=1e-6)
        eroded = mask & np.roll(mask, 2, 0) & np.roll(mask, -2, 0) & np.roll(mask, 2, 1) & np.roll(mask, -2, 1)
        eroded[:, :4] = eroded[:, -4:] = eroded[:4] = eroded[-4:] = False
        assert eroded.sum() > 50
        assert abs(rec[z][eroded].mean() - value) < 0.03 * 0.02


def test_short_scan_with_parker_weights_matches_the_full_scan(full_blobs):
    g = geometry(angles=np.linspace(0, np.pi + 2 * FAN + 0.05, 200))
    assert scan_coverage(g.angles).short_scan
    rec = cbct.fdk(line_integrals(BLOBS, g), g, filter="hann")
    assert rel(rec[CENTRAL], full_blobs[CENTRAL]) < 0.005
    assert rel(rec[INNER], full_blobs[INNER]) < 0.07  # off the mid-plane, short-scan cone-beam artifacts differ
    # the rotation direction does not matter
    g_rev = geometry(angles=1.0 - np.linspace(0, np.pi + 2 * FAN + 0.05, 200))
    rec_rev = cbct.fdk(line_integrals(BLOBS, g_rev), g_rev, filter="hann")
    assert rel(rec_rev[CENTRAL], full_blobs[CENTRAL]) < 0.005
    # forbidding Parker weights leaves per-ray hole weights (the uncovered arc is one hole), still a proper FBP
    holes = cbct.fdk(line_integrals(BLOBS, g), g, filter="hann", short_scan=False)
    assert rel(holes[CENTRAL], full_blobs[CENTRAL]) < 0.01
    # without redundancy weights (1/2 for every ray) the short scan is badly wrong: the weights matter
    with mock.patch.object(reconstruction, "redundancy_weights", lambda geom, **kw: np.full((geom.n_views, 128), 0.5)):
        wrong = cbct.fdk(line_integrals(BLOBS, g), g, filter="hann")
    assert rel(wrong[CENTRAL], full_blobs[CENTRAL]) > 0.2


@pytest.mark.parametrize("offset_u", [24 * 1.2, -24 * 1.2])
def test_displaced_detector_matches_the_full_scan(full_blobs, offset_u):
    g = geometry(n_views=360, detector_shape=(64, 88), detector_offset=(0, offset_u))
    rec = cbct.fdk(line_integrals(BLOBS, g), g, filter="hann")
    assert rel(rec[CENTRAL], full_blobs[CENTRAL]) < 0.005
    assert rel(rec[INNER], full_blobs[INNER]) < 0.02
    wrong = cbct.fdk(line_integrals(BLOBS, g), g, filter="hann", offset_detector=False)
    assert rel(wrong[CENTRAL], full_blobs[CENTRAL]) > 0.1


def test_short_scan_with_displaced_detector(full_blobs):
    g = geometry(detector_shape=(64, 112), detector_offset=(0, 8 * 1.2), angles=np.linspace(0, np.pi + 2 * FAN + 0.1, 220))
    rec = cbct.fdk(line_integrals(BLOBS, g), g, filter="hann", offset_detector=True)
    assert rel(rec[CENTRAL], full_blobs[CENTRAL]) < 0.005


def test_non_uniform_angles_get_angular_weights(full_blobs):
    rng = np.random.default_rng(3)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 360))
    g = geometry(angles=angles)
    rec = cbct.fdk(line_integrals(BLOBS, g), g, filter="hann")
    assert rel(rec[CENTRAL], full_blobs[CENTRAL]) < 0.01


def test_redundancy_weights_are_normalised():
    full = geometry()
    np.testing.assert_allclose(redundancy_weights(full), 0.5)
    g = geometry(angles=np.linspace(0, np.pi + 2 * FAN + 0.05, 200))
    w = redundancy_weights(g)
    assert w.min() >= 0 and w.max() <= 1
    # Parker: the two rays of each line sum to one; the central column at the middle of the scan has weight one
    assert w[100, 63] == pytest.approx(1.0) or w[100, 64] == pytest.approx(1.0)
    assert w[0].max() < 0.05 and w[-1].max() < 0.05


def test_ramp_response():
    n = padded_length(100)
    assert n == 256
    r = ramp_response(n, 0.5)
    assert r[0] == pytest.approx(0.0, abs=0.02 / 0.25)  # the band-limited ramp vanishes at DC up to its 1/n² term
    assert r[-1] == pytest.approx(0.5 / 0.5**2 * 1.0, rel=0.05)  # |f| at Nyquist: 1 / (2 du) in cycles/mm, over du
    for window in FILTERS[1:]:
        assert ramp_response(n, 0.5, window)[-1] < r[-1]
    cut = ramp_response(n, 0.5, "hann", cutoff=0.5)
    assert np.all(cut[n // 4 + 1:] == 0)
    with pytest.raises(ValueError, match="filter must be one of"):
        ramp_response(n, 0.5, "butterworth")
    with pytest.raises(ValueError, match="cutoff"):
        ramp_response(n, 0.5, "hann", cutoff=1.5)


def test_fdk_bad_input(small_geometry):
    proj = np.zeros(small_geometry.projection_shape, np.float32)
    with pytest.raises(ValueError, match="projection shape of the geometry"):
        cbct.fdk(proj[:, :-1], small_geometry)
    proj[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        cbct.fdk(proj, small_geometry)
    with pytest.raises(ValueError, match="filter must be one of"):
        cbct.fdk(np.zeros(small_geometry.projection_shape, np.float32), small_geometry, filter="ramlak")
    too_short = geometry(angles=np.linspace(0, 2.5, 50))
    with pytest.raises(ValueError, match="more than 180 degrees"):
        cbct.fdk(np.zeros(too_short.projection_shape, np.float32), too_short)
