"""TIGRE geometry → ConeGeometry, checked against positions written from TIGRE's documented conventions.

The reference below follows TIGRE's own steps for one detector pixel (``computeDeltas`` in its CUDA projectors):
pixel on the centred detector, ``rollPitchYaw`` (Rz(roll) Ry(pitch) Rx(yaw) with Python's rotDetector = (yaw, pitch,
roll) order), shift by ``-(DSD - DSO)`` and the detector offsets, ``eulerZYZ`` (Rz(alpha) Ry(theta) Rz(psi)), minus
the image offset, plus the COR shift; Python row ``v`` is TIGRE's ``pixelV = nV - v - 1``. It is written with
scalar trigonometry, independently of the converter's matrices.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import cbct.tigre as tigre
from cbct.conventions.tigre import from_tigre


def _roll_pitch_yaw(p, roll, pitch, yaw):
    x, y, z = p
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    return (
        cr * cp * x + (cr * sp * sy - sr * cy) * y + (cr * sp * cy + sr * sy) * z,
        sr * cp * x + (sr * sp * sy + cr * cy) * y + (sr * sp * cy - cr * sy) * z,
        -sp * x + cp * sy * y + cp * cy * z,
    )


def _euler_zyz(p, a, t, s):
    x, y, z = p
    ca, sa, ct, st, cs, ss = math.cos(a), math.sin(a), math.cos(t), math.sin(t), math.cos(s), math.sin(s)
    return (
        (ca * ct * cs - sa * ss) * x + (-ca * ct * ss - sa * cs) * y + ca * st * z,
        (sa * ct * cs + ca * ss) * x + (-sa * ct * ss + ca * cs) * y + sa * st * z,
        -st * cs * x + st * ss * y + ct * z,
    )


def tigre_reference(view: dict, n_det, d_det, iv: int, iu: int):
    """(source, pixel centre) of Python pixel (iv, iu) in mm, relative to the image centre, by TIGRE's steps."""
    n_v, n_u = n_det
    d_v, d_u = d_det
    a, t, s = view["angles"]
    pixel_v = n_v - iv - 1
    p = (0.0, d_u * (iu - n_u / 2 + 0.5), d_v * (n_v / 2 - 0.5 - pixel_v))
    yaw, pitch, roll = view["rotDetector"]
    p = _roll_pitch_yaw(p, roll, pitch, yaw)
    off_v, off_u = view["offDetector"]
    p = (p[0] - (view["DSD"] - view["DSO"]), p[1] + off_u, p[2] + off_v)
    p = _euler_zyz(p, a, t, s)
    src = _euler_zyz((view["DSO"], 0.0, 0.0), a, t, s)
    oz, oy, ox = view["offOrigin"]
    cor = (-view["COR"] * math.sin(a), view["COR"] * math.cos(a), 0.0)
    shift = (cor[0] - ox, cor[1] - oy, cor[2] - oz)
    return (np.add(src, shift), np.add(p, shift))


def _views(geo, angles):
    """Per-view TIGRE parameters after TIGRE's broadcasting rules."""
    angles = np.asarray(angles, float)
    n = angles.shape[0]
    ang = angles if angles.ndim == 2 else np.stack([angles, 0 * angles, 0 * angles], 1)

    def per(name, width, default):
        v = np.asarray(getattr(geo, name, default), float)
        return np.broadcast_to(v, (n,) if width is None else (n, width)) if v.ndim <= 1 and v.size in (1, width or 1) else v

    return [dict(angles=ang[i], DSD=per("DSD", None, 0)[i], DSO=per("DSO", None, 0)[i], COR=per("COR", None, 0.0)[i],
                 offOrigin=per("offOrigin", 3, 0.0)[i], offDetector=per("offDetector", 2, 0.0)[i],
                 rotDetector=per("rotDetector", 3, 0.0)[i]) for i in range(n)]


def _geo(**changes):
    geo = SimpleNamespace(
        DSD=700.0, DSO=450.0, nDetector=np.array([7, 9]), dDetector=np.array([0.8, 1.1]), nVoxel=np.array([6, 8, 10]),
        dVoxel=np.array([0.5, 0.6, 0.7]), offOrigin=np.array([0.0, 0.0, 0.0]), offDetector=np.array([0.0, 0.0]),
        rotDetector=np.array([0.0, 0.0, 0.0]), COR=0.0, mode="cone", accuracy=0.5,
    )
    geo.sDetector = geo.nDetector * geo.dDetector
    geo.sVoxel = geo.nVoxel * geo.dVoxel
    for k, v in changes.items():
        setattr(geo, k, v)
    return geo


N = 5
ANGLES = np.linspace(0.2, 5.5, N)
CASES = {
    "plain": ({}, ANGLES),
    "offDetector": ({"offDetector": np.array([3.0, -7.5])}, ANGLES),
    "offOrigin": ({"offOrigin": np.array([2.0, -4.0, 6.0])}, ANGLES),
    "COR": ({"COR": 1.7}, ANGLES),
    "rotDetector": ({"rotDetector": np.array([0.03, -0.05, 0.08])}, ANGLES),
    "per-angle DSO/DSD/COR": ({"DSO": np.linspace(440, 460, N), "DSD": np.linspace(690, 720, N),
                               "COR": np.linspace(-1, 1, N)}, ANGLES),
    "per-angle offsets": ({"offOrigin": np.arange(3 * N, dtype=float).reshape(N, 3) * 0.3,
                           "offDetector": np.arange(2 * N, dtype=float).reshape(N, 2) - 4,
                           "rotDetector": np.linspace(-0.05, 0.05, 3 * N).reshape(N, 3)}, ANGLES),
    "Euler angles": ({}, np.stack([ANGLES, np.linspace(0.1, -0.2, N), np.linspace(-0.3, 0.4, N)], 1)),
    "everything": ({"offOrigin": np.array([1.0, 2.0, -3.0]), "offDetector": np.array([-2.0, 5.0]), "COR": -0.9,
                    "rotDetector": np.array([0.02, 0.04, -0.06]), "DSO": np.linspace(445, 455, N)},
                   np.stack([ANGLES, 0.1 + 0 * ANGLES, -0.2 + 0 * ANGLES], 1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_attribute_converts_to_tigres_positions(case):
    changes, angles = CASES[case]
    geo = _geo(**changes)
    geom = from_tigre(geo, angles)
    centre = np.asarray(geom.volume.offset[::-1])  # world position of the image centre (first view's offOrigin)
    n_v, n_u = geo.nDetector
    for i, view in enumerate(_views(geo, angles)):
        for iv, iu in ((0, 0), (0, n_u - 1), (n_v - 1, 0), (3, 4)):
            src, pix = tigre_reference(view, geo.nDetector, geo.dDetector, iv, iu)
            ours = geom.detector_centres[i] + (iu - (n_u - 1) / 2) * geom.u_vectors[i] + (iv - (n_v - 1) / 2) * geom.v_vectors[i]
            np.testing.assert_allclose(ours - centre, pix, atol=1e-9, err_msg=f"{case}: view {i} pixel {(iv, iu)}")
            np.testing.assert_allclose(geom.sources[i] - centre, src, atol=1e-9, err_msg=f"{case}: view {i} source")
    assert geom.volume.shape == (6, 8, 10) and geom.volume.voxel_size == (0.5, 0.6, 0.7)
    assert geom.detector_shape == (7, 9)
    np.testing.assert_allclose(geom.angles, np.asarray(angles).reshape(N, -1)[:, 0])


def test_hand_written_view_at_90_degrees():
    """alpha = pi/2, no offsets: source on +y, detector beyond -y, u along -x, row 0 at the bottom (-z)."""
    geo = _geo(offDetector=np.array([2.0, 3.0]))
    g = from_tigre(geo, np.array([np.pi / 2]))
    np.testing.assert_allclose(g.sources[0], [0, 450, 0], atol=1e-12)
    np.testing.assert_allclose(g.detector_centres[0], [-3.0, -250, 2.0], atol=1e-12)  # offU along -x, offV up
    np.testing.assert_allclose(g.u_vectors[0], [-1.1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(g.v_vectors[0], [0, 0, 0.8], atol=1e-12)


def test_dict_and_defaults():
    geo = _geo()
    as_dict = {k: v for k, v in vars(geo).items() if k not in ("offOrigin", "offDetector", "rotDetector", "COR")}
    np.testing.assert_allclose(from_tigre(as_dict, ANGLES).vectors, from_tigre(geo, ANGLES).vectors)
    low = tigre.geometry_default(high_resolution=False)
    assert list(low.nVoxel) == [64, 64, 64] and list(low.nDetector) == [128, 128] and low.dDetector[0] == pytest.approx(3.2)
    high = tigre.geometry(mode="cone", default=True)
    assert list(high.nVoxel) == [512, 512, 512] and list(high.dVoxel) == [0.5, 0.5, 0.5]
    custom = tigre.geometry(mode="cone", nVoxel=np.array([32, 48, 40]), default=True)
    assert list(custom.nDetector) == [48, 40] and custom.sVoxel[0] == 256
    assert tigre.cone_geometry(custom, ANGLES).projection_shape == (N, 48, 40)
    empty = tigre.geometry()
    assert isinstance(empty, tigre.Geometry) and "DSD" not in vars(empty)
    assert "DSD = 1536.0" in str(low)


@pytest.mark.parametrize("change, angles, message", [
    ({"DSO": None}, ANGLES, "lacks the attribute 'DSO'"),
    ({"nVoxel": np.array([6, 8])}, ANGLES, r"geo.nVoxel.shape should be \(3, \)"),
    ({"nDetector": np.array([7.5, 9])}, ANGLES, "nDetector must hold whole numbers"),
    ({"sDetector": np.array([5.6, 99.0])}, ANGLES, "nDetector\\*dDetector is not equal to sDetector"),
    ({"sVoxel": np.array([1.0, 1.0, 1.0])}, ANGLES, "nVoxel\\*dVoxel is not equal to sVoxel"),
    ({"offDetector": np.zeros((N + 1, 2))}, ANGLES, "geo.offDetector with shape"),
    ({"DSO": np.ones(N + 2) * 450}, ANGLES, "geo.DSO must be a number or have one entry per angle"),
    ({"rotDetector": np.zeros(2)}, ANGLES, "geo.rotDetector with shape"),
    ({"mode": "parallel"}, ANGLES, "cone-beam only"),
    ({}, np.zeros((N, 2)), r"angles: expected shape \(n,\) or \(n, 3\)"),
    ({"DSO": -5.0}, ANGLES, "must be positive"),
])
def test_errors_name_the_attribute(change, angles, message):
    geo = _geo(**change)
    if change.get("DSO", 0) is None:
        del geo.DSO
    with pytest.raises(ValueError, match=message):
        from_tigre(geo, angles)
    with pytest.raises(ValueError, match="cone-beam only"):
        tigre.geometry(mode="parallel")
