"""Rigid 6-DoF patient motion during a scan, applied through the geometry: :class:`RigidMotion` (one pose per view)
and the conversions between rotation vectors and matrices.

A motion is one rigid pose per view: the object in view ``i`` is ``x -> R_i (x - pivot) + pivot + t_i`` of the
static object (world ``(x, y, z)`` in mm, ``z`` the scanner's rotation axis). Applying it to a
:class:`~cbct.geometry.ConeGeometry` moves source and detector by the inverse motion, so any projector simulates the
moving patient exactly (:meth:`RigidMotion.apply`). The waveforms that make random motions are in
:mod:`cbct.simulation.motion`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cbct.geometry import ConeGeometry

__all__ = ["RigidMotion", "rotation_matrices", "rotation_vectors"]


# ---------------------------------------------------------------------------------------------- rotations
def rotation_matrices(rotvecs: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotation matrices from (n, 3) rotation vectors (axis times angle in radians; Rodrigues)."""
    w = np.asarray(rotvecs, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != 3:
        raise ValueError(f"rotvecs must have shape (n, 3), got {w.shape}")
    theta = np.linalg.norm(w, axis=1)
    k = np.zeros_like(w)
    nz = theta > 0
    k[nz] = w[nz] / theta[nz, None]
    kx = np.zeros((len(w), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2] = -k[:, 2], k[:, 1]
    kx[:, 1, 0], kx[:, 1, 2] = k[:, 2], -k[:, 0]
    kx[:, 2, 0], kx[:, 2, 1] = -k[:, 1], k[:, 0]
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3) + s * kx + (1 - c) * (kx @ kx)


def rotation_vectors(rotations: np.ndarray) -> np.ndarray:
    """(n, 3) rotation vectors (radians, angles in [0, pi]) of (n, 3, 3) rotation matrices; inverse of
    :func:`rotation_matrices`."""
    r = np.asarray(rotations, dtype=np.float64)
    if r.ndim != 3 or r.shape[1:] != (3, 3):
        raise ValueError(f"rotations must have shape (n, 3, 3), got {r.shape}")
    cos_t = np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    theta = np.arccos(cos_t)
    axis = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], axis=1)
    sin_t = np.sin(theta)
    out = np.zeros((len(r), 3))
    small = sin_t < 1e-6
    out[~small] = axis[~small] * (theta[~small] / (2 * sin_t[~small]))[:, None]
    # small angles: w ~ axis / 2; angles near pi are not expected for patient motion
    out[small] = axis[small] / 2
    return out


# ---------------------------------------------------------------------------------------------- RigidMotion
@dataclasses.dataclass(frozen=True, eq=False)
class RigidMotion:
    """Per-view rigid motion of the object.

    Attributes:
        rotations: (n_views, 3, 3) float64 rotation matrices acting on world ``(x, y, z)``.
        translations: (n_views, 3) float64 translations in mm, world ``(x, y, z)``.
        pivot: (3,) float64 world ``(x, y, z)`` centre of rotation in mm.
    """

    rotations: np.ndarray
    translations: np.ndarray
    pivot: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        rot = np.array(self.rotations, dtype=np.float64, copy=True)
        tr = np.array(self.translations, dtype=np.float64, copy=True)
        piv = np.array(self.pivot, dtype=np.float64, copy=True).reshape(-1)
        if rot.ndim != 3 or rot.shape[1:] != (3, 3) or rot.shape[0] == 0:
            raise ValueError(f"rotations must have shape (n_views, 3, 3) with n_views >= 1, got {rot.shape}")
        if tr.shape != (rot.shape[0], 3):
            raise ValueError(f"translations must have shape ({rot.shape[0]}, 3) to match rotations, got {tr.shape}")
        if piv.shape != (3,):
            raise ValueError(f"pivot must be 3 numbers (x, y, z) in mm, got shape {piv.shape}")
        for name, a in (("rotations", rot), ("translations", tr), ("pivot", piv)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite")
        if not np.allclose(rot @ np.transpose(rot, (0, 2, 1)), np.eye(3), atol=1e-9) or np.any(np.linalg.det(rot) <= 0):
            raise ValueError("rotations must be proper rotation matrices (orthonormal, determinant +1)")
        for name, a in (("rotations", rot), ("translations", tr), ("pivot", piv)):
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    # -------------------------------------------------------------------------------- constructors
    @classmethod
    def none(cls, n_views: int, pivot: Sequence[float] = (0.0, 0.0, 0.0)) -> RigidMotion:
        """No motion: identity rotations and zero translations for ``n_views`` views."""
        if not isinstance(n_views, (int, np.integer)) or n_views < 1:
            raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
        return cls(np.broadcast_to(np.eye(3), (int(n_views), 3, 3)), np.zeros((int(n_views), 3)), pivot)

    @classmethod
    def from_vectors(
        cls, rotvecs: np.ndarray, translations: np.ndarray, pivot: Sequence[float] = (0.0, 0.0, 0.0)
    ) -> RigidMotion:
        """From (n_views, 3) rotation vectors (radians) and (n_views, 3) translations (mm)."""
        return cls(rotation_matrices(rotvecs), translations, pivot)

    # -------------------------------------------------------------------------------- values
    @property
    def n_views(self) -> int:
        return self.rotations.shape[0]

    def __len__(self) -> int:
        return self.n_views

    def __getitem__(self, key) -> RigidMotion:
        """The motion of a selection of views (a slice, index array or mask), as a ``RigidMotion``."""
        if isinstance(key, (int, np.integer)):
            key = [int(key)]
        idx = np.arange(self.n_views)[key]
        if idx.size == 0:
            raise IndexError(f"view selection {key!r} selects no views of {self.n_views}")
        return RigidMotion(self.rotations[idx], self.translations[idx], self.pivot)

    def rotation_vectors(self) -> np.ndarray:
        """(n_views, 3) rotation vectors in radians."""
        return rotation_vectors(self.rotations)

    def rotation_angles_deg(self) -> np.ndarray:
        """(n_views,) rotation angle of each view's pose in degrees."""
        return np.degrees(np.linalg.norm(self.rotation_vectors(), axis=1))

    def translation_norms_mm(self) -> np.ndarray:
        """(n_views,) length of each view's translation in mm."""
        return np.linalg.norm(self.translations, axis=1)

    def displacement_mm(self, points: np.ndarray) -> np.ndarray:
        """(n_views, n_points) distance in mm each of the (n_points, 3) world points moves in each view."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        moved = np.einsum("nij,pj->npi", self.rotations, p - self.pivot) + self.pivot + self.translations[:, None, :]
        return np.linalg.norm(moved - p[None], axis=2)

    def is_identity(self, atol: float = 0.0) -> bool:
        """Whether every view has the identity pose (to ``atol``)."""
        return bool(np.allclose(self.rotations, np.eye(3), atol=atol, rtol=0) and np.allclose(self.translations, 0, atol=atol, rtol=0))

    def apply(self, geom: ConeGeometry) -> ConeGeometry:
        """The geometry under which projecting the static volume gives the scan of the moving object."""
        if not isinstance(geom, ConeGeometry):
            raise TypeError(f"geom must be a ConeGeometry, got {type(geom).__name__}")
        if geom.n_views != self.n_views:
            raise ValueError(f"geom has {geom.n_views} views but the motion has {self.n_views}")
        return geom.with_rigid_motion(self.rotations, self.translations, self.pivot)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RigidMotion):
            return NotImplemented
        return (
            np.array_equal(self.rotations, other.rotations)
            and np.array_equal(self.translations, other.translations)
            and np.array_equal(self.pivot, other.pivot)
        )

    def __hash__(self) -> int:
        return hash((self.rotations.tobytes(), self.translations.tobytes(), self.pivot.tobytes()))

    def __repr__(self) -> str:
        return (
            f"RigidMotion(n_views={self.n_views}, max_rotation_deg={float(self.rotation_angles_deg().max()):.4g}, "
            f"max_translation_mm={float(self.translation_norms_mm().max()):.4g}, pivot={tuple(self.pivot.tolist())})"
        )
