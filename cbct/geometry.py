"""Cone-beam geometry as immutable values.

World frame: millimetres, right-handed ``(x, y, z)`` with ``z`` the rotation axis of a circular scan.
A volume array is indexed ``(z, y, x)``; voxel ``(k, j, i)`` has its centre at
``offset + ((i, j, k) - (shape - 1) / 2) * voxel_size`` (in ``x, y, z`` order).

Each view is one row of 12 numbers, ASTRA's ``cone_vec`` layout: source position, detector centre, the vector from
detector pixel ``(v, u) = (0, 0)`` to ``(0, 1)`` and the vector from ``(0, 0)`` to ``(1, 0)``. A projection array is
indexed ``(view, v, u)``; pixel ``(iv, iu)`` has its centre at ``centre + (iu - (nu - 1) / 2) * u + (iv - (nv - 1) / 2) * v``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["VolumeGrid", "ConeGeometry"]


def _triple(name: str, value, *, positive: bool) -> tuple[float, float, float]:
    """Return ``value`` (scalar or 3 numbers) as a tuple of 3 floats, checking finiteness and sign."""
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,)) if np.ndim(value) == 0 else np.asarray(value, np.float64)
    if arr.shape != (3,):
        raise ValueError(f"{name} must be a number or 3 numbers in (z, y, x) order, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {tuple(arr)}")
    if positive and np.any(arr <= 0):
        raise ValueError(f"{name} must be positive, got {tuple(arr)}")
    return tuple(float(a) for a in arr)


def _vector_columns(start: int, doc: str) -> property:
    """A read-only property: columns ``start:start + 3`` of a geometry's ``vectors``."""

    def columns(geom: ConeGeometry) -> np.ndarray:
        return geom.vectors[:, start:start + 3]

    return property(columns, doc=doc)


@dataclasses.dataclass(frozen=True)
class VolumeGrid:
    """A regular voxel grid.

    Attributes:
        shape: number of voxels ``(nz, ny, nx)``.
        voxel_size: voxel edge lengths ``(dz, dy, dx)`` in mm.
        offset: world position of the grid centre ``(oz, oy, ox)`` in mm.
    """

    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        arr = np.atleast_1d(np.asarray(self.shape))
        if arr.size == 1:
            arr = np.repeat(arr, 3)
        if arr.shape != (3,) or not np.all(arr == np.round(arr)) or np.any(arr <= 0):
            raise ValueError(f"volume shape must be 3 positive integers (nz, ny, nx), got {self.shape}")
        shape = tuple(int(s) for s in arr)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "voxel_size", _triple("voxel_size", self.voxel_size, positive=True))
        object.__setattr__(self, "offset", _triple("offset", self.offset, positive=False))

    @property
    def size(self) -> tuple[float, float, float]:
        """Physical extent ``(z, y, x)`` in mm."""
        return tuple(n * d for n, d in zip(self.shape, self.voxel_size))

    def index_to_world(self) -> np.ndarray:
        """Affine (4, 4) taking homogeneous voxel indices ``(i, j, k, 1)`` to world ``(x, y, z, 1)`` in mm."""
        aff = np.eye(4)
        for axis in range(3):  # world axis x, y, z <- array axis 2, 1, 0
            arr_axis = 2 - axis
            aff[axis, axis] = self.voxel_size[arr_axis]
            aff[axis, 3] = self.offset[arr_axis] - (self.shape[arr_axis] - 1) / 2 * self.voxel_size[arr_axis]
        return aff

    def world_to_index(self) -> np.ndarray:
        """Inverse of :meth:`index_to_world`: world ``(x, y, z, 1)`` to voxel indices ``(i, j, k, 1)``."""
        return np.linalg.inv(self.index_to_world())

    def bounding_radius(self) -> float:
        """Radius in mm of the smallest sphere about the world origin that holds the whole grid."""
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        half = np.array(self.size[::-1]) / 2
        centre = np.array(self.offset[::-1])
        return float(np.max(np.linalg.norm(centre + corners * half, axis=1)))


@dataclasses.dataclass(frozen=True, eq=False)
class ConeGeometry:
    """Cone-beam acquisition geometry: one source/detector pose per view plus the volume grid.

    Attributes:
        vectors: (n_views, 12) float64, ASTRA ``cone_vec`` rows ``(src, det_centre, u, v)`` in mm.
        detector_shape: ``(nv, nu)`` detector rows and columns.
        volume: the reconstruction grid.
        angles: (n_views,) nominal gantry angle of each view in radians (used by FDK's angular and
            short-scan weights; motion does not change it).
    """

    vectors: np.ndarray
    detector_shape: tuple[int, int]
    volume: VolumeGrid
    angles: np.ndarray

    def __post_init__(self) -> None:
        vec = np.array(self.vectors, dtype=np.float64, copy=True)
        if vec.ndim != 2 or vec.shape[1] != 12 or vec.shape[0] == 0:
            raise ValueError(f"vectors must have shape (n_views, 12) with n_views >= 1, got {vec.shape}")
        if not np.all(np.isfinite(vec)):
            raise ValueError("vectors must be finite")
        det = tuple(int(s) for s in self.detector_shape)
        if len(det) != 2 or min(det) <= 0:
            raise ValueError(f"detector_shape must be 2 positive integers (nv, nu), got {self.detector_shape}")
        if not isinstance(self.volume, VolumeGrid):
            raise TypeError(f"volume must be a VolumeGrid, got {type(self.volume).__name__}")
        ang = np.array(self.angles, dtype=np.float64, copy=True).reshape(-1)
        if ang.shape != (vec.shape[0],):
            raise ValueError(f"angles must have one entry per view ({vec.shape[0]}), got {ang.shape[0]}")
        if not np.all(np.isfinite(ang)):
            raise ValueError("angles must be finite")
        u, v = vec[:, 6:9], vec[:, 9:12]
        normal = np.cross(u, v)
        if np.any(np.linalg.norm(u, axis=1) <= 0) or np.any(np.linalg.norm(v, axis=1) <= 0):
            raise ValueError("detector pixel vectors u and v must have positive length")
        if np.any(np.linalg.norm(normal, axis=1) <= 1e-12 * np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)):
            raise ValueError("detector pixel vectors u and v must not be parallel")
        src_to_det = np.abs(np.einsum("ij,ij->i", vec[:, 3:6] - vec[:, 0:3], normal / np.linalg.norm(normal, axis=1)[:, None]))
        if np.any(src_to_det <= 0):
            raise ValueError("the source must not lie in the detector plane")
        radius = self.volume.bounding_radius()
        src_dist = np.linalg.norm(vec[:, 0:3] - np.array(self.volume.offset[::-1]), axis=1)
        inside = self._sources_inside_volume(vec[:, 0:3])
        if np.any(inside):
            first = int(np.flatnonzero(inside)[0])
            raise ValueError(
                f"source of view {first} lies inside the volume (distance {src_dist[first]:.3f} mm from the volume "
                f"centre, volume half-diagonal {radius:.3f} mm): increase DSO or shrink the volume"
            )
        vec.setflags(write=False)
        ang.setflags(write=False)
        object.__setattr__(self, "vectors", vec)
        object.__setattr__(self, "detector_shape", det)
        object.__setattr__(self, "angles", ang)

    def _sources_inside_volume(self, sources: np.ndarray) -> np.ndarray:
        idx = sources @ self.volume.world_to_index()[:3, :3].T + self.volume.world_to_index()[:3, 3]
        shape_xyz = np.array(self.volume.shape[::-1], dtype=np.float64)
        return np.all((idx >= -0.5) & (idx <= shape_xyz - 0.5), axis=1)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def circular(
        cls,
        *,
        dso: float,
        dsd: float,
        detector_shape: Sequence[int],
        detector_pixel_size: float | Sequence[float],
        volume_shape: int | Sequence[int],
        voxel_size: float | Sequence[float],
        angles: np.ndarray | None = None,
        n_views: int | None = None,
        arc: float = 2 * np.pi,
        start_angle: float = 0.0,
        detector_offset: Sequence[float] = (0.0, 0.0),
        volume_offset: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> ConeGeometry:
        """Circular orbit about the ``z`` axis with TIGRE's parameters.

        Args:
            dso: source to rotation axis distance, mm.
            dsd: source to detector distance, mm.
            detector_shape: ``(nv, nu)`` pixels.
            detector_pixel_size: ``(dv, du)`` or one number, mm.
            volume_shape: ``(nz, ny, nx)`` or one number.
            voxel_size: ``(dz, dy, dx)`` or one number, mm.
            angles: gantry angles in radians; or give ``n_views`` (and optionally ``arc``, ``start_angle``)
                for ``n_views`` equally spaced angles over ``arc`` (a full circle excludes its end point,
                a short arc includes it).
            detector_offset: ``(off_v, off_u)`` shift of the detector centre in mm along the detector's
                v (row) and u (column) directions, as TIGRE's ``offDetector``.
            volume_offset: ``(oz, oy, ox)`` world position of the volume centre, mm, as TIGRE's ``offOrigin``.

        At angle ``a`` the source sits at ``dso * (cos a, sin a, 0)``; the detector faces it from the other side
        with u along ``(-sin a, cos a, 0)`` (the direction of source motion) and v along ``-z`` (row 0 on top).
        """
        if not (np.isfinite(dso) and np.isfinite(dsd)) or dso <= 0 or dsd <= 0:
            raise ValueError(f"dso and dsd must be positive, got dso={dso}, dsd={dsd}")
        if dsd <= dso:
            raise ValueError(f"dsd ({dsd}) must exceed dso ({dso}): the detector lies beyond the rotation axis")
        if angles is None:
            if n_views is None or int(n_views) <= 0:
                raise ValueError("give either angles or a positive n_views")
            full = np.isclose(abs(arc), 2 * np.pi)
            angles = start_angle + np.linspace(0.0, arc, int(n_views), endpoint=not full)
        elif n_views is not None:
            raise ValueError("give angles or n_views, not both")
        angles = np.asarray(angles, dtype=np.float64).reshape(-1)
        if angles.size == 0:
            raise ValueError("angles must not be empty")
        if not np.all(np.isfinite(angles)):
            raise ValueError("angles must be finite")
        dv, du = np.broadcast_to(np.asarray(detector_pixel_size, np.float64), (2,))
        if dv <= 0 or du <= 0:
            raise ValueError(f"detector_pixel_size must be positive, got {(dv, du)}")
        off_v, off_u = np.broadcast_to(np.asarray(detector_offset, np.float64), (2,))
        c, s = np.cos(angles), np.sin(angles)
        zeros = np.zeros_like(c)
        src = np.stack([dso * c, dso * s, zeros], axis=1)
        u_dir = np.stack([-s, c, zeros], axis=1)
        v_dir = np.stack([zeros, zeros, -np.ones_like(c)], axis=1)
        det = -(dsd - dso) * np.stack([c, s, zeros], axis=1) + off_u * u_dir + off_v * v_dir
        vectors = np.concatenate([src, det, du * u_dir, dv * v_dir], axis=1)
        grid = VolumeGrid(volume_shape, voxel_size, volume_offset)
        return cls(vectors, tuple(detector_shape), grid, angles)

    # ------------------------------------------------------------------ views and derived values
    @property
    def n_views(self) -> int:
        return self.vectors.shape[0]

    @property
    def projection_shape(self) -> tuple[int, int, int]:
        """Shape ``(n_views, nv, nu)`` of the projections this geometry describes."""
        return (self.n_views, *self.detector_shape)

    sources = _vector_columns(0, "(n_views, 3) source positions in mm.")
    detector_centres = _vector_columns(3, "(n_views, 3) detector centres in mm.")
    u_vectors = _vector_columns(6, "(n_views, 3) steps in mm from one detector column to the next.")
    v_vectors = _vector_columns(9, "(n_views, 3) steps in mm from one detector row to the next.")

    def detector_normals(self) -> np.ndarray:
        """(n_views, 3) unit normals of the detector planes, pointing from the source towards the detector."""
        n = np.cross(self.u_vectors, self.v_vectors)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        sign = np.sign(np.einsum("ij,ij->i", self.detector_centres - self.sources, n))
        return n * sign[:, None]

    def source_detector_distances(self) -> np.ndarray:
        """(n_views,) distance in mm from the source to the detector plane (DSD)."""
        return np.einsum("ij,ij->i", self.detector_centres - self.sources, self.detector_normals())

    def source_origin_distances(self) -> np.ndarray:
        """(n_views,) depth in mm of the world origin (the rotation axis) seen from the source (DSO)."""
        return np.einsum("ij,ij->i", -self.sources, self.detector_normals())

    def principal_points(self) -> np.ndarray:
        """(n_views, 2) detector coordinates ``(v, u)`` in mm, relative to the detector centre, of the foot of
        the perpendicular from the source onto the detector (the central ray)."""
        foot = self.sources + self.source_detector_distances()[:, None] * self.detector_normals()
        rel = foot - self.detector_centres
        u_hat = self.u_vectors / np.linalg.norm(self.u_vectors, axis=1, keepdims=True)
        v_hat = self.v_vectors / np.linalg.norm(self.v_vectors, axis=1, keepdims=True)
        return np.stack([np.einsum("ij,ij->i", rel, v_hat), np.einsum("ij,ij->i", rel, u_hat)], axis=1)

    def pixel_sizes(self) -> np.ndarray:
        """(n_views, 2) detector pixel pitch ``(dv, du)`` in mm."""
        return np.stack([np.linalg.norm(self.v_vectors, axis=1), np.linalg.norm(self.u_vectors, axis=1)], axis=1)

    def projection_matrices(self) -> np.ndarray:
        """(n_views, 3, 4) float64 matrices taking world ``(x, y, z, 1)`` in mm to ``(iu * w, iv * w, w)``.

        ``iu, iv`` are continuous detector column/row indices (0 at the first pixel centre) of the ray through the
        point, and ``w = depth / DSO`` with ``depth`` the distance from the source along the detector normal.
        FDK's distance weight is ``1 / w**2``.
        """
        src, det, u, v = self.sources, self.detector_centres, self.u_vectors, self.v_vectors
        nrm = self.detector_normals()
        dsd = self.source_detector_distances()
        dso = self.source_origin_distances()
        if np.any(dso <= 0):
            raise ValueError("the world origin must lie in front of the source for every view")
        nv, nu = self.detector_shape
        mats = np.empty((self.n_views, 3, 4))
        for axis_vec, other, row, centre in ((u, v, 0, (nu - 1) / 2), (v, u, 1, (nv - 1) / 2)):
            # dual vector: <q - det, a> / <axis_vec, a> gives the coordinate along axis_vec for q on the detector
            a = np.cross(other, np.cross(u, v))
            denom = np.einsum("ij,ij->i", axis_vec, a)
            sd = np.einsum("ij,ij->i", src - det, a)
            # coordinate * depth = sd * depth + dsd * <x - src, a>, depth = <x - src, n>
            lin = (sd[:, None] * nrm + dsd[:, None] * a) / denom[:, None]
            const = (sd * -np.einsum("ij,ij->i", src, nrm) - dsd * np.einsum("ij,ij->i", src, a)) / denom
            mats[:, row, :3] = lin / dso[:, None]
            mats[:, row, 3] = const / dso
        mats[:, 2, :3] = nrm / dso[:, None]
        mats[:, 2, 3] = -np.einsum("ij,ij->i", src, nrm) / dso
        mats[:, 0, :] += (nu - 1) / 2 * mats[:, 2, :]
        mats[:, 1, :] += (nv - 1) / 2 * mats[:, 2, :]
        return mats

    # ------------------------------------------------------------------ slicing and variants
    def __len__(self) -> int:
        return self.n_views

    def __getitem__(self, key) -> ConeGeometry:
        """Select views: ``geom[10:20]``, ``geom[::4]``, ``geom[[0, 5]]`` or a boolean mask give a geometry."""
        if isinstance(key, (int, np.integer)):
            key = slice(int(key), int(key) + 1 if int(key) != -1 else None)
        idx = np.arange(self.n_views)[key]
        if idx.size == 0:
            raise IndexError(f"view selection {key!r} selects no views of {self.n_views}")
        return dataclasses.replace(self, vectors=self.vectors[idx], angles=self.angles[idx])

    def with_volume(self, volume: VolumeGrid) -> ConeGeometry:
        """The same views with another volume grid."""
        return dataclasses.replace(self, volume=volume)

    def with_detector_shape(self, detector_shape: tuple[int, int], shift: tuple[float, float] = (0.0, 0.0)) -> ConeGeometry:
        """A detector of another size whose centre moves by ``shift = (dv, du)`` pixels along v and u."""
        vec = self.vectors.copy()
        vec[:, 3:6] += shift[0] * vec[:, 9:12] + shift[1] * vec[:, 6:9]
        return dataclasses.replace(self, vectors=vec, detector_shape=tuple(detector_shape))

    def with_rigid_motion(self, rotations: np.ndarray, translations: np.ndarray, pivot: Sequence[float] = (0, 0, 0)) -> ConeGeometry:
        """Apply a per-view rigid motion of the object.

        The object in view ``i`` is ``x -> R_i (x - pivot) + pivot + t_i`` of the static object; projecting the
        static volume with the returned geometry equals projecting the moved object with this one.

        Args:
            rotations: (n_views, 3, 3) rotation matrices acting on world ``(x, y, z)``.
            translations: (n_views, 3) translations in mm, world ``(x, y, z)``.
            pivot: world ``(x, y, z)`` centre of rotation, mm.
        """
        rot = np.asarray(rotations, np.float64)
        tr = np.asarray(translations, np.float64)
        if rot.shape != (self.n_views, 3, 3):
            raise ValueError(f"rotations must have shape ({self.n_views}, 3, 3), got {rot.shape}")
        if tr.shape != (self.n_views, 3):
            raise ValueError(f"translations must have shape ({self.n_views}, 3), got {tr.shape}")
        if not np.allclose(np.einsum("nij,nkj->nik", rot, rot), np.eye(3), atol=1e-9):
            raise ValueError("rotations must be orthonormal matrices")
        p = np.asarray(pivot, np.float64)
        # moving the object by (R, t) equals moving source and detector by the inverse motion
        rt = np.transpose(rot, (0, 2, 1))
        vec = self.vectors.copy()
        for part in (slice(0, 3), slice(3, 6)):
            vec[:, part] = np.einsum("nij,nj->ni", rt, vec[:, part] - p - tr) + p
        for part in (slice(6, 9), slice(9, 12)):
            vec[:, part] = np.einsum("nij,nj->ni", rt, vec[:, part])
        return dataclasses.replace(self, vectors=vec)

    # ------------------------------------------------------------------ value semantics
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConeGeometry):
            return NotImplemented
        return (
            self.detector_shape == other.detector_shape
            and self.volume == other.volume
            and np.array_equal(self.vectors, other.vectors)
            and np.array_equal(self.angles, other.angles)
        )

    def __hash__(self) -> int:
        return hash((self.detector_shape, self.volume, self.vectors.tobytes(), self.angles.tobytes()))

    def __repr__(self) -> str:
        return (
            f"ConeGeometry(n_views={self.n_views}, detector_shape={self.detector_shape}, volume={self.volume!r}, "
            f"dso={float(np.median(self.source_origin_distances())):.6g}, "
            f"dsd={float(np.median(self.source_detector_distances())):.6g})"
        )
