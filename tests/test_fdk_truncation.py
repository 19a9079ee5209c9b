"""FDK's lateral truncation correction (cbct.fdk.truncation)."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
from cbct.fdk.truncation import check_truncation_mode, detect_truncation, extend_rows
from cbct.phantoms.ellipsoids import Ellipsoid, line_integrals


@pytest.fixture(scope="module")
def geom():
    """A 90 mm field of view (detector 115 mm at magnification 1.5), thin slab, 120 views."""
    return cbct.ConeGeometry.circular(dso=400.0, dsd=600.0, detector_shape=(16, 96), detector_pixel_size=1.2,
                                      volume_shape=(4, 64, 64), voxel_size=(1.0, 1.2, 1.2), n_views=120)


def _cupping(volume: np.ndarray) -> float:
    """(rim − centre) / centre of the middle slice: centre disc of 8 mm, ring at 30-34 mm radius."""
    y, x = np.mgrid[: volume.shape[1], : volume.shape[2]]
    r = np.hypot(x - (volume.shape[2] - 1) / 2, y - (volume.shape[1] - 1) / 2) * 1.2
    sl = volume[volume.shape[0] // 2]
    centre = float(sl[r < 8].mean())
    return (float(sl[(r > 30) & (r < 34)].mean()) - centre) / centre


def test_truncation_correction_removes_most_of_the_cupping_of_a_wide_cylinder(geom):
    wide = line_integrals([Ellipsoid(0.02, (0.0, 0.0, 0.0), (90.0, 90.0, 200.0), cylinder=True)], geom)
    assert detect_truncation(wide)
    plain = cbct.fdk(wide, geom, filter="hann", truncation=False)
    corrected = cbct.fdk(wide, geom, filter="hann")  # "auto" detects it
    assert np.array_equal(corrected, cbct.fdk(wide, geom, filter="hann", truncation="on"))
    before, after = _cupping(plain), _cupping(corrected)
    # measured: 0.63 -> 0.06 (and the centre value 1.64 -> 1.14 times the true 0.02 mm⁻¹)
    assert before > 0.4 and abs(after) < 0.15, (before, after)
    centre = corrected[2, 28:36, 28:36].mean()
    assert abs(centre / 0.02 - 1) < 0.2, centre


def test_object_inside_the_field_of_view_is_left_exactly_unchanged(geom):
    inside = line_integrals([Ellipsoid(0.02, (0.0, 0.0, 0.0), (25.0, 25.0, 200.0), cylinder=True)], geom)
    assert not detect_truncation(inside)
    assert np.array_equal(cbct.fdk(inside, geom, filter="hann"), cbct.fdk(inside, geom, filter="hann", truncation=False))


def test_extension_is_continuous_and_fades_to_zero():
    row = np.linspace(3.0, 5.0, 20, dtype=np.float32)[None]
    out = extend_rows(row, 10)
    assert out.shape == (1, 40)
    np.testing.assert_array_equal(out[0, 10:30], row[0])
    step = row[0, 1] - row[0, 0]
    assert abs(out[0, 9] - (row[0, 0] - step)) < 0.05 and abs(out[0, 30] - (row[0, -1] + step)) < 0.05
    assert out[0, 0] < 0.5 and out[0, -1] < 0.5 and np.all(out >= 0)


def test_bad_mode_is_refused():
    assert check_truncation_mode("off") is False and check_truncation_mode("auto") == "auto"
    with pytest.raises(ValueError, match="truncation must be"):
        check_truncation_mode("yes")
