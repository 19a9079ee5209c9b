"""A scan: projections (line integrals) or raw counts with dark/flat frames, its geometry and metadata."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from cbct.angles import check_target_angles, dense_angles, missing_targets
from cbct.geometry import ConeGeometry
from cbct.preprocess import counts_to_line_integrals
from cbct.volume import Volume

__all__ = ["Scan", "ScanError"]


class ScanError(ValueError):
    """A scan's arrays do not fit together (shape, dtype, non-finite values); the message names the scan."""


def _count_bad(x: np.ndarray) -> tuple[int, tuple[int, ...] | None]:
    bad = ~np.isfinite(x)
    n = int(bad.sum())
    return n, (tuple(int(i) for i in np.argwhere(bad)[0]) if n else None)


@dataclasses.dataclass(frozen=True, eq=False)
class Scan:
    """One cone-beam scan.

    Exactly one of ``projections`` (line integrals, after ``-log``) and ``counts`` (raw detector counts, with
    ``flat`` and optionally ``dark`` frames) is set. Build one with :meth:`from_arrays`, or read one with
    :func:`cbct.read_scan` (write it with :func:`cbct.write_scan`).

    Attributes:
        geometry: the acquisition geometry; ``geometry.projection_shape`` is the shape of the data.
        projections: (n_views, nv, nu) float32 line integrals, or ``None``.
        counts: (n_views, nv, nu) raw counts (any real dtype), or ``None``.
        dark: dark frames (n, nv, nu) or (nv, nu), or ``None`` (zero).
        flat: flat (open beam) frames (n, nv, nu) or (nv, nu); required with ``counts``.
        metadata: JSON-serialisable description: ``id``, source, units, provenance, ...
        reference: optional ground-truth volume (simulated scans).
        target_angles: (n_target,) float64 gantry angles (radians) of the complete scan that view completion
            (sparse view) fills in, holding every acquired angle (within ``cbct.angles.ANGLE_TOLERANCE``),
            or ``None``. ``metadata["sparse_step"] = s`` is a shortcut for a scan thinned to every ``s``-th view:
            it fills this with the acquired angles made ``s`` times denser (``cbct.angles.dense_angles``).
    """

    geometry: ConeGeometry
    projections: np.ndarray | None = None
    counts: np.ndarray | None = None
    dark: np.ndarray | None = None
    flat: np.ndarray | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reference: Volume | None = None
    target_angles: np.ndarray | None = None

    def __post_init__(self) -> None:
        name = f"scan '{self.id}'"
        if not isinstance(self.geometry, ConeGeometry):
            raise ScanError(f"{name}: geometry must be a cbct.ConeGeometry, got {type(self.geometry).__name__}")
        if (self.projections is None) == (self.counts is None):
            raise ScanError(f"{name}: give exactly one of projections (line integrals) and counts (raw data)")
        expected = self.geometry.projection_shape
        field = "projections" if self.projections is not None else "counts"
        data = np.asarray(self.projections if self.projections is not None else self.counts)
        if data.dtype.kind not in "fiu":
            raise ScanError(f"{name}: {field} must be a real numeric array, got dtype {data.dtype}")
        if data.shape != expected:
            raise ScanError(f"{name}: {field} have shape {data.shape} but the geometry describes {expected} "
                            f"(n_views, nv, nu): projections and geometry do not match")
        if data.dtype.kind == "f":
            n_bad, first = _count_bad(data)
            if n_bad:
                raise ScanError(f"{name}: {field} contain {n_bad} NaN or infinite values (first at (view, v, u) = {first})")
        if self.projections is not None:
            object.__setattr__(self, "projections", np.ascontiguousarray(data, dtype=np.float32))
            if self.dark is not None or self.flat is not None:
                raise ScanError(f"{name}: dark/flat frames go with raw counts, not with line-integral projections")
        else:
            object.__setattr__(self, "counts", data)
            if self.flat is None:
                raise ScanError(f"{name}: raw counts need flat (open beam) frames")
            for frame_name in ("dark", "flat"):
                frames = getattr(self, frame_name)
                if frames is None:
                    continue
                arr = np.asarray(frames)
                if arr.shape[-2:] != expected[1:] or arr.ndim not in (2, 3):
                    raise ScanError(f"{name}: {frame_name} frames must have shape (n, {expected[1]}, {expected[2]}) "
                                    f"or ({expected[1]}, {expected[2]}), got {arr.shape}")
                if arr.dtype.kind == "f" and _count_bad(arr)[0]:
                    raise ScanError(f"{name}: {frame_name} frames contain NaN or infinite values")
                object.__setattr__(self, frame_name, arr)
        object.__setattr__(self, "metadata", dict(self.metadata))
        if self.reference is not None and self.reference.grid.shape != self.geometry.volume.shape:
            raise ScanError(f"{name}: reference volume shape {self.reference.grid.shape} differs from the geometry's "
                            f"volume grid {self.geometry.volume.shape}")
        object.__setattr__(self, "target_angles", self._checked_target_angles(name))

    def _checked_target_angles(self, name: str) -> np.ndarray | None:
        """``target_angles`` validated against the acquired angles, or filled from ``metadata["sparse_step"]``."""
        target = self.target_angles
        if target is None:
            step = self.metadata.get("sparse_step")
            if step is None:
                return None
            if isinstance(step, bool) or not isinstance(step, (int, float, np.number)) or step < 1 or int(step) != step:
                raise ScanError(f"{name}: metadata['sparse_step'] must be a positive integer, got {step!r}")
            target = dense_angles(self.geometry.angles, int(step))
        try:
            target = check_target_angles(self.geometry.angles, target, name="target_angles")
        except ValueError as exc:
            raise ScanError(f"{name}: {exc}") from None
        target.setflags(write=False)
        return target

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        geometry: ConeGeometry,
        *,
        projections: np.ndarray | None = None,
        counts: np.ndarray | None = None,
        dark: np.ndarray | None = None,
        flat: np.ndarray | None = None,
        metadata: Mapping[str, Any] | None = None,
        reference: Volume | None = None,
        target_angles: np.ndarray | None = None,
    ) -> Scan:
        """A scan from in-memory arrays (validated: shapes against the geometry, finite values, target angles
        holding the acquired ones)."""
        return cls(geometry, projections, counts, dark, flat, dict(metadata or {}), reference, target_angles)

    # ------------------------------------------------------------------ views of the data
    @property
    def id(self) -> str:
        return str(self.metadata.get("id", "scan")) if isinstance(self.metadata, Mapping) else "scan"

    @property
    def is_raw(self) -> bool:
        """Whether the scan holds raw counts (preprocessing needed) rather than line integrals."""
        return self.counts is not None

    def line_integrals(self, **options: Any) -> np.ndarray:
        """(n_views, nv, nu) float32 line integrals: the projections, or the counts after dark/flat and ``-log``
        (``options`` go to :func:`cbct.preprocess.counts_to_line_integrals`)."""
        if self.projections is not None:
            return self.projections
        try:
            return counts_to_line_integrals(self.counts, dark=self.dark, flat=self.flat, **options)
        except ValueError as exc:
            raise ScanError(f"scan '{self.id}': {exc}") from None

    def with_metadata(self, **changes: Any) -> Scan:
        """A copy with metadata entries added or replaced."""
        return dataclasses.replace(self, metadata={**self.metadata, **changes})

    @property
    def missing_views(self) -> np.ndarray:
        """(n_missing,) indices into ``target_angles`` of the views not acquired (empty without a target)."""
        if self.target_angles is None:
            return np.zeros(0, np.int64)
        return missing_targets(self.geometry.angles, self.target_angles)

    def __repr__(self) -> str:
        kind = "counts" if self.is_raw else "projections"
        target = "" if self.target_angles is None else f", target_angles=<{self.target_angles.size} angles>"
        return f"Scan(id={self.id!r}, {kind}={self.geometry.projection_shape}{target}, geometry={self.geometry!r})"
