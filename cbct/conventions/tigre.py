"""TIGRE's geometry (a ``geo`` with TIGRE's attributes, and ``angles``) to and from :class:`ConeGeometry`, exactly.

TIGRE's Python conventions, as its CUDA code applies them (``computeDeltas``, ``rollPitchYaw``, ``eulerZYZ``):

- orders: ``nVoxel``, ``dVoxel``, ``sVoxel``, ``offOrigin`` are ``(z, y, x)``; ``nDetector``, ``dDetector``,
  ``sDetector``, ``offDetector`` are ``(v, u)``; mm and radians.
- ``angles``: ``(N,)`` gantry angles ``alpha``, or ``(N, 3)`` Euler angles ``(alpha, theta, psi)``; the whole
  set-up is turned by ``M = Rz(alpha) Ry(theta) Rz(psi)`` about the world origin.
- before ``M``: the source sits at ``(DSO, 0, 0)``; the detector centre at ``(-(DSD - DSO), offU, offV)``; detector
  column ``iu`` runs along ``+y`` and row ``iv`` along ``+z`` (row 0 is the *bottom* of the detector, as TIGRE's
  ``plotproj`` shows with ``origin="lower"``); ``rotDetector = (r0, r1, r2)`` turns the detector about its centre
  by ``Rz(r2) Ry(r1) Rx(r0)`` before the offsets are applied.
- ``COR`` shifts source and detector by ``COR * (-sin alpha, cos alpha, 0)`` after ``M``.
- ``offOrigin`` is the world position of the image centre; given per angle it moves with each view (here: the
  views move the other way about the first view's image centre).
- ``DSD``, ``DSO``, ``COR`` are scalars or ``(N,)``; ``offOrigin``, ``rotDetector`` ``(3,)`` or ``(N, 3)``;
  ``offDetector`` ``(2,)`` or ``(N, 2)``.

So a TIGRE projection array ``(N, nv, nu)`` (TIGRE's ``Ax`` output) is used as it is with the geometry
:func:`from_tigre` returns. cbct's own constructors put row 0 at the top (v along ``-z``); :func:`flip_detector_rows`
turns such a geometry into the one of ``projections[:, ::-1, :]``.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import numpy as np

from cbct.geometry import ConeGeometry, VolumeGrid

__all__ = ["from_tigre", "to_tigre", "flip_detector_rows", "tigre_angles", "TIGRE_ATTRIBUTES"]

TIGRE_ATTRIBUTES = (
    "DSD", "DSO", "nDetector", "dDetector", "sDetector", "nVoxel", "dVoxel", "sVoxel", "offOrigin", "offDetector",
    "rotDetector", "COR", "accuracy", "mode",
)
_REQUIRED = ("DSD", "DSO", "nDetector", "dDetector", "nVoxel", "dVoxel")


def _get(geo: Any, name: str, default=None):
    if isinstance(geo, dict):
        value = geo.get(name, default)
    else:
        value = getattr(geo, name, default)
    return default if value is None else value


def _fixed(geo: Any, name: str, n: int, integer: bool) -> np.ndarray:
    """A fixed-length attribute (nVoxel, dDetector, ...) as a float64 array of ``n`` entries, checked."""
    raw = _get(geo, name)
    if raw is None:
        raise ValueError(f"TIGRE geometry lacks the attribute {name!r} (mandatory: {', '.join(_REQUIRED)})")
    arr = np.asarray(raw, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"geo.{name}.shape should be ({n}, ), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"geo.{name} must be positive and finite, got {arr.tolist()}")
    if integer and np.any(arr != np.round(arr)):
        raise ValueError(f"geo.{name} must hold whole numbers, got {arr.tolist()}")
    return arr


def _per_angle(geo: Any, name: str, n_views: int, width: int | None, default: float) -> np.ndarray:
    """A scalar/vector attribute given once or per angle, as ``(n_views,)`` or ``(n_views, width)`` float64."""
    arr = np.asarray(_get(geo, name, default), dtype=np.float64)
    if width is None:
        if arr.ndim == 0 or arr.shape == (1,):
            arr = np.full(n_views, float(arr.reshape(-1)[0]))
        elif arr.shape != (n_views,):
            raise ValueError(f"geo.{name} must be a number or have one entry per angle ({n_views},), got shape {arr.shape}")
    else:
        if arr.ndim == 0:
            arr = np.full((n_views, width), float(arr))
        elif arr.shape == (width,):
            arr = np.tile(arr, (n_views, 1))
        elif arr.shape != (n_views, width):
            raise ValueError(
                f"geo.{name} with shape {arr.shape} not compatible with shapes ({width},) or ({n_views}, {width}) "
                f"(one row per angle)"
            )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"geo.{name} must be finite")
    return arr


def tigre_angles(angles) -> np.ndarray:
    """TIGRE's ``angles`` as ``(N, 3)`` Euler angles ``(alpha, theta, psi)`` in radians."""
    arr = np.asarray(angles, dtype=np.float64)
    if arr.ndim == 1:
        arr = np.stack([arr, np.zeros_like(arr), np.zeros_like(arr)], axis=1)
    elif arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"angles: expected shape (n,) or (n, 3), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("angles must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError("angles must be finite")
    return arr


def _rz(a: np.ndarray) -> np.ndarray:
    c, s, o, i = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, -s, o], -1), np.stack([s, c, o], -1), np.stack([o, o, i], -1)], -2)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s, o, i = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, o, s], -1), np.stack([o, i, o], -1), np.stack([-s, o, c], -1)], -2)


def _rx(a: np.ndarray) -> np.ndarray:
    c, s, o, i = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([i, o, o], -1), np.stack([o, c, -s], -1), np.stack([o, s, c], -1)], -2)


def from_tigre(geo: Any, angles) -> ConeGeometry:
    """The :class:`ConeGeometry` of a TIGRE ``geo`` (an object with TIGRE's attribute names, or a dict) and ``angles``.

    Projections keep TIGRE's layout ``(N, nv, nu)`` with row 0 at the bottom of the detector (see the module
    docs). ``ValueError`` names the attribute that is missing, malformed or not representable.
    """
    mode = _get(geo, "mode", "cone")
    if mode != "cone":
        raise ValueError(f"geo.mode must be 'cone' (cbct is cone-beam only), got {mode!r}")
    ang = tigre_angles(angles)
    n = ang.shape[0]
    n_vox = _fixed(geo, "nVoxel", 3, integer=True)
    d_vox = _fixed(geo, "dVoxel", 3, integer=False)
    n_det = _fixed(geo, "nDetector", 2, integer=True)
    d_det = _fixed(geo, "dDetector", 2, integer=False)
    for size, count, pitch in (("sVoxel", n_vox, d_vox), ("sDetector", n_det, d_det)):
        given = _get(geo, size)
        if given is not None:
            s = np.asarray(given, dtype=np.float64)
            if s.shape != count.shape or np.sum(np.abs(count * pitch - s)) > 1e-6 * max(1.0, float(np.abs(s).max())):
                what = "nVoxel*dVoxel is not equal to sVoxel" if size == "sVoxel" else "nDetector*dDetector is not equal to sDetector"
                raise ValueError(f"geo.{size}: {what}. Check fields (got {s.tolist()}, expected {(count * pitch).tolist()})")
    for name in ("DSD", "DSO"):
        if _get(geo, name) is None:
            raise ValueError(f"TIGRE geometry lacks the attribute {name!r} (mandatory: {', '.join(_REQUIRED)})")
    dsd = _per_angle(geo, "DSD", n, None, 0.0)
    dso = _per_angle(geo, "DSO", n, None, 0.0)
    if np.any(dso <= 0) or np.any(dsd <= 0):
        raise ValueError(f"geo.DSO and geo.DSD must be positive, got DSO={dso.min():g}..{dso.max():g}, DSD={dsd.min():g}..{dsd.max():g}")
    cor = _per_angle(geo, "COR", n, None, 0.0)
    off_origin = _per_angle(geo, "offOrigin", n, 3, 0.0)[:, ::-1]  # (z, y, x) -> (x, y, z)
    off_det = _per_angle(geo, "offDetector", n, 2, 0.0)  # (v, u)
    rot_det = _per_angle(geo, "rotDetector", n, 3, 0.0)
    accuracy = float(np.asarray(_get(geo, "accuracy", 0.5)).reshape(-1)[0])
    if not accuracy > 0:
        raise ValueError(f"geo.accuracy must be positive, got {accuracy}")

    alpha = ang[:, 0]
    m = _rz(alpha) @ _ry(ang[:, 1]) @ _rz(ang[:, 2])
    r = m @ _rz(rot_det[:, 2]) @ _ry(rot_det[:, 1]) @ _rx(rot_det[:, 0])
    shift = cor[:, None] * np.stack([-np.sin(alpha), np.cos(alpha), np.zeros(n)], axis=1) - (off_origin - off_origin[0])
    zeros = np.zeros(n)
    src = np.einsum("nij,nj->ni", m, np.stack([dso, zeros, zeros], axis=1)) + shift
    det = np.einsum("nij,nj->ni", m, np.stack([-(dsd - dso), off_det[:, 1], off_det[:, 0]], axis=1)) + shift
    u = r[:, :, 1] * d_det[1]
    v = r[:, :, 2] * d_det[0]
    grid = VolumeGrid(tuple(int(k) for k in n_vox), tuple(d_vox), tuple(off_origin[0, ::-1]))
    vectors = np.concatenate([src, det, u, v], axis=1)
    return ConeGeometry(vectors, (int(n_det[0]), int(n_det[1])), grid, alpha)


def flip_detector_rows(geom: ConeGeometry) -> ConeGeometry:
    """The geometry of ``projections[..., ::-1, :]``: same detector, rows in the opposite order."""
    vec = geom.vectors.copy()
    vec[:, 9:12] *= -1.0
    return dataclasses.replace(geom, vectors=vec)


def to_tigre(geom: ConeGeometry) -> tuple[SimpleNamespace, np.ndarray]:
    """TIGRE's ``geo`` (a namespace with TIGRE's attribute names) and ``(N,)`` ``angles`` for ``geom``.

    ``geom`` must be a circular orbit about ``z`` with fixed DSO, DSD and offsets, in TIGRE's layout (row 0 at the
    bottom: use ``flip_detector_rows(geom)`` and ``projections[:, ::-1]`` for cbct's own layout); else ValueError.
    """
    if np.any(geom.v_vectors[:, 2] <= 0):
        raise ValueError(
            "geom has detector rows running downwards (cbct's layout, row 0 on top); TIGRE's row 0 is at the bottom: "
            "convert flip_detector_rows(geom) and pass projections[:, ::-1, :]"
        )
    pitch = geom.pixel_sizes()[0]
    src0 = geom.sources[0]
    a0 = geom.angles[0]
    radial = np.array([np.cos(a0), np.sin(a0), 0.0])
    tangent = np.array([-np.sin(a0), np.cos(a0), 0.0])
    dso = float(src0 @ radial)
    det_rel = geom.detector_centres[0]
    dsd = float(dso - det_rel @ radial)
    n_det = np.array(geom.detector_shape)
    d_det = np.array([float(pitch[0]), float(pitch[1])])
    n_vox = np.array(geom.volume.shape)
    d_vox = np.array(geom.volume.voxel_size)
    geo = SimpleNamespace(
        mode="cone", DSD=dsd, DSO=dso, nDetector=n_det, dDetector=d_det, sDetector=n_det * d_det,
        nVoxel=n_vox, dVoxel=d_vox, sVoxel=n_vox * d_vox, offOrigin=np.array(geom.volume.offset),
        offDetector=np.array([float(det_rel[2]), float(det_rel @ tangent)]), accuracy=0.5, COR=0.0,
        rotDetector=np.zeros(3),
    )
    angles = np.array(geom.angles)
    rebuilt = from_tigre(geo, angles)
    scale = max(1.0, float(np.abs(geom.vectors).max()))
    if not np.allclose(rebuilt.vectors, geom.vectors, rtol=0, atol=1e-9 * scale):
        worst = int(np.argmax(np.abs(rebuilt.vectors - geom.vectors).max(axis=1)))
        raise ValueError(f"geometry is not a circular orbit about z with fixed DSO/DSD/offsets (view {worst} differs)")
    return geo, angles
