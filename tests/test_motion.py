"""Rigid patient motion: applied through the geometry it must equal moving the object."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cbct
from cbct.phantoms import Ellipsoid, line_integrals
from cbct.phantoms.shepp_logan import shepp_logan_volume
from cbct.simulation.motion import (
    COMPONENT_KINDS,
    WAVEFORMS,
    MotionComponent,
    MotionParameters,
    RigidMotion,
    evaluate_motion,
    random_motion,
    rotation_matrices,
    rotation_vectors,
    sample_motion_parameters,
)


def _geometry(n_views: int = 24) -> cbct.ConeGeometry:
    return cbct.ConeGeometry.circular(
        dso=400.0, dsd=600.0, detector_shape=(48, 64), detector_pixel_size=1.5,
        volume_shape=48, voxel_size=1.0, n_views=n_views,
    )


def _moved_ellipsoid(e: Ellipsoid, rot: np.ndarray, t: np.ndarray, pivot: np.ndarray) -> Ellipsoid:
    """The ellipsoid moved by x -> R (x - pivot) + pivot + t (R about z only, or e a sphere)."""
    centre = rot @ (np.asarray(e.centre) - pivot) + pivot + t
    phi = e.phi + np.arctan2(rot[1, 0], rot[0, 0])
    return dataclasses.replace(e, centre=tuple(centre), phi=float(phi))


def test_motion_through_geometry_matches_moving_spheres_analytically():
    """6-DoF motion about an off-centre pivot: exact projections of moved spheres = static spheres, moved geometry."""
    geom = _geometry(12)
    spheres = [
        Ellipsoid(0.02, (0.0, 0.0, 0.0), (18.0, 18.0, 18.0)),
        Ellipsoid(0.03, (8.0, -5.0, 6.0), (4.0, 4.0, 4.0)),
        Ellipsoid(-0.01, (-9.0, 4.0, -7.0), (5.0, 5.0, 5.0)),
    ]
    rng = np.random.default_rng(3)
    w = rng.normal(0, np.radians(4.0), (geom.n_views, 3))
    t = rng.normal(0, 3.0, (geom.n_views, 3))
    pivot = np.array([5.0, -30.0, -20.0])
    motion = RigidMotion.from_vectors(w, t, pivot)
    via_geometry = line_integrals(spheres, motion.apply(geom))
    moved = np.stack([
        line_integrals([_moved_ellipsoid(s, motion.rotations[i], motion.translations[i], pivot) for s in spheres], geom[i])[0]
        for i in range(geom.n_views)
    ])
    static = line_integrals(spheres, geom)
    assert np.abs(moved - static).max() > 0.05  # the motion changes the scan
    np.testing.assert_allclose(via_geometry, moved, atol=2e-5)


def test_motion_about_z_moves_rotated_ellipsoids():
    geom = _geometry(8)
    e = Ellipsoid(0.02, (6.0, -3.0, 2.0), (15.0, 8.0, 10.0), phi=0.3)
    angles = np.linspace(0.0, 0.2, geom.n_views)
    w = np.stack([np.zeros_like(angles), np.zeros_like(angles), angles], axis=1)
    pivot = np.array([0.0, -25.0, 0.0])
    motion = RigidMotion.from_vectors(w, np.tile([1.0, -2.0, 0.5], (geom.n_views, 1)), pivot)
    via_geometry = line_integrals([e], motion.apply(geom))
    moved = np.stack([
        line_integrals([_moved_ellipsoid(e, motion.rotations[i], motion.translations[i], pivot)], geom[i])[0]
        for i in range(geom.n_views)
    ])
    np.testing.assert_allclose(via_geometry, moved, atol=2e-5)


def test_integer_voxel_translation_and_quarter_turn_match_moved_voxel_volume():
    geom = _geometry(16)
    vol = shepp_logan_volume(geom.volume, half_size=20.0)
    # translate by (+3, -2, +1) voxels in (x, y, z): the array rolls by (+1, -2, +3) along (z, y, x)
    shift = RigidMotion(np.broadcast_to(np.eye(3), (geom.n_views, 3, 3)), np.tile([3.0, -2.0, 1.0], (geom.n_views, 1)))
    rolled = np.roll(vol, (1, -2, 3), axis=(0, 1, 2))
    np.testing.assert_allclose(cbct.project(vol, shift.apply(geom)), cbct.project(rolled, geom), atol=1e-4)
    # a quarter turn about z, x -> (-y, x): new[k, j, i] = old[k, n - 1 - i, j], i.e. rot90 clockwise in (y, x)
    quarter = RigidMotion.from_vectors(np.tile([0.0, 0.0, np.pi / 2], (geom.n_views, 1)), np.zeros((geom.n_views, 3)))
    turned = np.ascontiguousarray(np.rot90(vol, k=-1, axes=(1, 2)))
    np.testing.assert_allclose(cbct.project(vol, quarter.apply(geom)), cbct.project(turned, geom), atol=1e-4)


def test_zero_motion_gives_the_static_scan():
    geom = _geometry(10)
    vol = shepp_logan_volume(geom.volume)
    static = cbct.project(vol, geom)
    moved_geom = RigidMotion.none(geom.n_views, pivot=(3.0, -40.0, 5.0)).apply(geom)
    np.testing.assert_allclose(moved_geom.vectors, geom.vectors, atol=1e-12)
    np.testing.assert_allclose(cbct.project(vol, moved_geom), static, atol=1e-6)
    still = random_motion(geom.n_views, waveform="mixed", max_rotation_deg=0.0, max_translation_mm=0.0, rng=1)
    assert still.is_identity(atol=1e-12)
    np.testing.assert_allclose(still.apply(geom).vectors, geom.vectors, atol=1e-12)


@pytest.mark.parametrize("waveform", sorted(WAVEFORMS))
def test_waveforms_are_bounded_by_the_amplitudes(waveform):
    for seed in range(25):
        m = random_motion(180, waveform=waveform, max_rotation_deg=3.0, max_translation_mm=1.5, pivot=(0, -50, -20), rng=seed)
        assert m.rotation_angles_deg().max() <= 3.0 + 1e-9
        assert m.translation_norms_mm().max() <= 1.5 + 1e-9
        assert m.rotation_angles_deg().max() > 0.1 * 3.0 * 0.25  # not degenerate
        # mean reference: the mean pose is (to first order) the static one
        np.testing.assert_allclose(m.translations.mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(m.rotation_vectors().mean(axis=0), 0.0, atol=1e-3)


def test_waveform_character():
    n = 200
    nod = sample_motion_parameters(waveform="nodding", rng=4).components[0]
    assert abs(nod.rotation[0]) > 2 * max(abs(nod.rotation[1]), abs(nod.rotation[2]))  # mostly pitch about x
    tilt = sample_motion_parameters(waveform="tilting", rng=4).components[0]
    assert abs(tilt.rotation[1]) > 2 * max(abs(tilt.rotation[0]), abs(tilt.rotation[2]))  # mostly roll about y
    jerk = random_motion(n, waveform="jerk", reference="first", rng=5)
    steps = np.linalg.norm(np.diff(jerk.translations, axis=0), axis=1)
    assert 0 < np.count_nonzero(steps > 1e-9) <= 0.06 * n  # one fast transition, at rest before and after
    assert np.linalg.norm(jerk.translations[-1]) > 0.25 * 2.0 - 1e-9
    assert jerk.is_identity() is False and np.allclose(jerk.translations[0], 0) and np.allclose(jerk.rotations[0], np.eye(3))
    tremor = random_motion(n, waveform="tremor", max_rotation_deg=2.0, rng=6)
    assert tremor.rotation_angles_deg().max() <= 0.5 + 1e-9  # tremor is small: a quarter of the budget
    signs = np.sign(tremor.translations[:, np.argmax(np.abs(tremor.translations).max(axis=0))])
    assert np.count_nonzero(np.diff(signs)) >= 6  # oscillates


def test_seeded_reproducibility_and_parameter_split():
    a = random_motion(90, waveform="mixed", rng=11)
    b = random_motion(90, waveform="mixed", rng=np.random.default_rng(11))
    c = random_motion(90, waveform="mixed", rng=12)
    assert a == b and a != c
    params = sample_motion_parameters(waveform="mixed", rng=11)
    assert evaluate_motion(params, 90) == a
    assert 2 <= len(params.components) <= 3 and {comp.kind for comp in params.components} <= set(COMPONENT_KINDS)
    assert params.max_rotation_deg() <= 2.0 + 1e-9 and params.max_translation_mm() <= 2.0 + 1e-9
    kinds = ("jerk", "drift", "nodding", "tremor")
    for seed in range(20):  # a held-out kind never appears in a mixture drawn without it
        drawn = sample_motion_parameters(waveform="mixed", mixed_kinds=kinds, rng=seed).components
        assert {comp.kind for comp in drawn} <= set(kinds)


def test_rotation_vector_round_trip():
    w = np.random.default_rng(0).normal(0, 0.5, (20, 3))
    r = rotation_matrices(w)
    np.testing.assert_allclose(r @ np.transpose(r, (0, 2, 1)), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(rotation_vectors(r), w, atol=1e-9)


def test_motion_slicing_and_errors():
    geom = _geometry(10)
    m = random_motion(10, rng=2)
    assert len(m[2:5]) == 3 and m[3] == RigidMotion(m.rotations[3:4], m.translations[3:4], m.pivot)
    with pytest.raises(ValueError, match="views"):
        random_motion(9, rng=2).apply(geom)
    with pytest.raises(ValueError, match="translations"):
        RigidMotion(np.broadcast_to(np.eye(3), (4, 3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="rotations"):
        RigidMotion(np.ones((4, 3, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="waveform"):
        random_motion(10, waveform="sneeze")
    with pytest.raises(ValueError, match="max_rotation_deg"):
        random_motion(10, max_rotation_deg=-1.0)
    with pytest.raises(ValueError, match="onset"):
        MotionComponent("jerk", (0, 0, 0), (0, 0, 0), onset=1.5)
    with pytest.raises(ValueError, match="reference"):
        MotionParameters((), reference="last")
