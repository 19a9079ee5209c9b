"""ConeGeometry and VolumeGrid: construction, derived values, slicing, motion, errors."""

import dataclasses

import numpy as np
import pytest

import cbct
from cbct import ConeGeometry, VolumeGrid


def circular(**kw):
    base = dict(dso=500.0, dsd=800.0, detector_shape=(40, 60), detector_pixel_size=(1.5, 1.2),
                volume_shape=(30, 32, 34), voxel_size=(1.0, 0.9, 0.8), n_views=36)
    base.update(kw)
    if "angles" in kw:
        base.pop("n_views")
    return ConeGeometry.circular(**base)


def test_circular_positions_follow_tigre_parameters():
    g = circular(angles=np.array([0.0, np.pi / 2]), detector_offset=(2.0, 3.0))
    np.testing.assert_allclose(g.sources[0], [500, 0, 0], atol=1e-12)
    np.testing.assert_allclose(g.sources[1], [0, 500, 0], atol=1e-12)
    # detector 300 mm beyond the axis, shifted 3 mm along u = +y and 2 mm along v = -z at angle 0
    np.testing.assert_allclose(g.detector_centres[0], [-300, 3.0, -2.0], atol=1e-12)
    np.testing.assert_allclose(g.source_detector_distances(), [800, 800])
    np.testing.assert_allclose(g.source_origin_distances(), [500, 500])
    np.testing.assert_allclose(g.principal_points()[0], [-2.0, -3.0], atol=1e-12)


def test_projection_matrix_maps_points_to_their_detector_pixels():
    g = circular(detector_offset=(1.3, -2.1), volume_offset=(2.0, -1.0, 3.0))
    mats = g.projection_matrices()
    nv, nu = g.detector_shape
    rng = np.random.default_rng(0)
    for view in (0, 7, 20):
        iu, iv = rng.uniform(0, nu - 1), rng.uniform(0, nv - 1)
        pixel = g.detector_centres[view] + (iu - (nu - 1) / 2) * g.u_vectors[view] + (iv - (nv - 1) / 2) * g.v_vectors[view]
        point = g.sources[view] + 0.6 * (pixel - g.sources[view])  # on the ray, inside the scanner
        h = mats[view] @ np.append(point, 1.0)
        np.testing.assert_allclose([h[0] / h[2], h[1] / h[2]], [iu, iv], atol=1e-9)
        depth = (point - g.sources[view]) @ g.detector_normals()[view]
        np.testing.assert_allclose(h[2], depth / g.source_origin_distances()[view])


def test_full_circle_excludes_endpoint_and_short_arc_includes_it():
    full = circular(n_views=4)
    np.testing.assert_allclose(full.angles, [0, np.pi / 2, np.pi, 3 * np.pi / 2])
    short = circular(n_views=3, arc=np.pi)
    np.testing.assert_allclose(short.angles, [0, np.pi / 2, np.pi])


def test_slicing_by_views_gives_a_geometry():
    g = circular()
    seg = g[5:10]
    assert isinstance(seg, ConeGeometry) and seg.n_views == 5
    np.testing.assert_array_equal(seg.vectors, g.vectors[5:10])
    np.testing.assert_array_equal(g[::4].angles, g.angles[::4])
    assert g[[0, 3]].n_views == 2 and g[3].n_views == 1
    with pytest.raises(IndexError, match="no views"):
        g[40:50]


def test_geometry_is_immutable_and_hashable():
    g = circular()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.volume = None
    with pytest.raises(ValueError):
        g.vectors[0, 0] = 1.0
    assert g == circular() and hash(g) == hash(circular())
    assert g != circular(dso=501.0)
    assert "ConeGeometry(n_views=36" in repr(g)


def test_rigid_motion_identity_and_inverse_relation():
    g = circular()
    n = g.n_views
    same = g.with_rigid_motion(np.tile(np.eye(3), (n, 1, 1)), np.zeros((n, 3)))
    np.testing.assert_allclose(same.vectors, g.vectors)
    # translating the object by +t equals translating source and detector by -t
    moved = g.with_rigid_motion(np.tile(np.eye(3), (n, 1, 1)), np.tile([1.0, 2.0, 3.0], (n, 1)))
    np.testing.assert_allclose(moved.sources, g.sources - [1.0, 2.0, 3.0])
    np.testing.assert_allclose(moved.u_vectors, g.u_vectors)
    with pytest.raises(ValueError, match="rotations must have shape"):
        g.with_rigid_motion(np.eye(3), np.zeros((n, 3)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dso=10.0, dsd=800.0), "inside the volume"),
        (dict(dso=-1.0), "dso and dsd must be positive"),
        (dict(dsd=400.0), "must exceed dso"),
        (dict(detector_pixel_size=0.0), "detector_pixel_size must be positive"),
        (dict(voxel_size=(1.0, -1.0, 1.0)), "voxel_size must be positive"),
        (dict(volume_shape=(10, 0, 10)), "volume shape"),
        (dict(detector_shape=(0, 10)), "detector_shape"),
        (dict(angles=np.array([np.nan])), "angles must be finite"),
    ],
)
def test_impossible_geometries_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        circular(**kwargs)


def test_mismatched_angles_and_vectors_raise():
    g = circular()
    with pytest.raises(ValueError, match="one entry per view"):
        ConeGeometry(g.vectors, g.detector_shape, g.volume, g.angles[:-1])
    with pytest.raises(ValueError, match=r"shape \(n_views, 12\)"):
        ConeGeometry(g.vectors[:, :9], g.detector_shape, g.volume, g.angles)
    with pytest.raises(TypeError, match="VolumeGrid"):
        ConeGeometry(g.vectors, g.detector_shape, (30, 32, 34), g.angles)


def test_volume_grid_affine_and_inverse():
    grid = VolumeGrid((4, 6, 8), (2.0, 1.0, 0.5), (10.0, -5.0, 1.0))
    aff = grid.index_to_world()
    np.testing.assert_allclose(aff @ [0, 0, 0, 1], [1.0 - 3.5 * 0.5, -5.0 - 2.5, 10.0 - 3.0, 1.0])
    np.testing.assert_allclose(grid.world_to_index() @ aff, np.eye(4), atol=1e-12)
    assert grid.size == (8.0, 6.0, 4.0)
    assert VolumeGrid(16).shape == (16, 16, 16)
