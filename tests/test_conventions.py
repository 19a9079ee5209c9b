"""Round trips between ConeGeometry and TIGRE / ASTRA conventions."""

import numpy as np
import pytest

from cbct import ConeGeometry
from cbct.conventions.astra import from_astra, to_astra
from cbct.conventions.tigre import flip_detector_rows, from_tigre, to_tigre


@pytest.fixture
def geom():
    return ConeGeometry.circular(
        dso=450.0, dsd=700.0, detector_shape=(50, 70), detector_pixel_size=(0.8, 0.6), volume_shape=(20, 24, 28),
        voxel_size=(0.5, 0.4, 0.3), angles=np.linspace(0.3, 5.0, 17), detector_offset=(1.5, -4.0), volume_offset=(2.0, -1.0, 0.5),
    )


def test_tigre_round_trip(geom):
    tigre_layout = flip_detector_rows(geom)  # TIGRE's row 0 is the bottom of the detector; cbct's the top
    geo, angles = to_tigre(tigre_layout)
    assert geo.DSO == pytest.approx(450.0) and geo.DSD == pytest.approx(700.0)
    np.testing.assert_allclose(geo.offDetector, [-1.5, -4.0])  # cbct's +1.5 along v (downwards) is TIGRE's -1.5 (up)
    np.testing.assert_allclose(geo.sVoxel, [10.0, 9.6, 8.4])
    back = from_tigre(geo, angles)
    np.testing.assert_allclose(back.vectors, tigre_layout.vectors, atol=1e-9)
    assert back.volume == geom.volume and back.detector_shape == geom.detector_shape
    as_dict = from_tigre(vars(geo), angles)
    np.testing.assert_allclose(as_dict.vectors, tigre_layout.vectors, atol=1e-9)
    with pytest.raises(ValueError, match="flip_detector_rows"):
        to_tigre(geom)


def test_tigre_rejects_non_circular_and_incomplete(geom):
    n = geom.n_views
    moved = geom.with_rigid_motion(np.tile(np.eye(3), (n, 1, 1)), np.linspace(0, 2, 3 * n).reshape(n, 3))
    with pytest.raises(ValueError, match="not a circular orbit"):
        to_tigre(flip_detector_rows(moved))
    geo, angles = to_tigre(flip_detector_rows(geom))
    del geo.DSO
    with pytest.raises(ValueError, match="'DSO'"):
        from_tigre(geo, angles)


def test_astra_round_trip(geom):
    vol_geom, proj_geom = to_astra(geom)
    assert proj_geom["type"] == "cone_vec" and proj_geom["DetectorRowCount"] == 50
    assert vol_geom["GridSliceCount"] == 20 and vol_geom["GridColCount"] == 28
    back = from_astra(vol_geom, proj_geom, geom.angles)
    np.testing.assert_array_equal(back.vectors, geom.vectors)
    np.testing.assert_allclose(back.volume.voxel_size, geom.volume.voxel_size)
    np.testing.assert_allclose(back.volume.offset, geom.volume.offset)
    derived = from_astra(vol_geom, proj_geom)  # angles from the source azimuth
    np.testing.assert_allclose(derived.angles, geom.angles, atol=1e-12)


def test_astra_cone_type_matches_its_vector_form():
    proj_geom = {"type": "cone", "DetectorRowCount": 8, "DetectorColCount": 10, "DetectorSpacingX": 1.0,
                 "DetectorSpacingY": 1.0, "ProjectionAngles": np.array([0.0, 1.0]),
                 "DistanceOriginSource": 300.0, "DistanceOriginDetector": 200.0}
    vol_geom = {"GridRowCount": 8, "GridColCount": 8, "GridSliceCount": 8,
                "option": {"WindowMinX": -4, "WindowMaxX": 4, "WindowMinY": -4, "WindowMaxY": 4, "WindowMinZ": -4, "WindowMaxZ": 4}}
    g = from_astra(vol_geom, proj_geom)
    np.testing.assert_allclose(g.source_origin_distances(), 300.0)
    np.testing.assert_allclose(g.source_detector_distances(), 500.0)
    with pytest.raises(ValueError, match="cone_vec"):
        from_astra(vol_geom, {"type": "parallel3d"})
