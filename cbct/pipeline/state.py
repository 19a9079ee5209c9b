"""What flows between pipeline stages."""

from __future__ import annotations

import dataclasses
from typing import Any

from cbct.geometry import ConeGeometry
from cbct.scan import Scan


@dataclasses.dataclass
class PipelineState:
    """The data one scan carries through a pipeline; each stage reads some fields and returns a new state.

    Attributes:
        geometry: acquisition geometry of ``projections`` (and the volume grid of ``volume``).
        projections: (n_views, nv, nu) float32 line integrals (NumPy or CuPy), or ``None`` once consumed.
        volume: (nz, ny, nx) float32 attenuation in mm⁻¹, or ``None`` before reconstruction.
        raw: optional raw detector data, e.g. ``{"counts": ..., "dark": ..., "flat": ...}`` before preprocessing.
        metadata: free-form scan metadata (id, source, units, ...), carried to the outputs.
        extras: stage outputs that later stages may use (e.g. ``"filtered"``: FDK-filtered projections).
    """

    geometry: ConeGeometry
    projections: Any = None
    volume: Any = None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    def replace(self, **changes: Any) -> PipelineState:
        """A copy with ``changes`` applied (stages return new states rather than mutating their input)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_scan(cls, scan: Scan) -> PipelineState:
        """The state a run of ``scan`` starts from: its projections or raw counts, metadata, and in ``extras`` its
        ``reference`` volume and ``target_angles`` when it has them."""
        raw = {} if scan.counts is None else {"counts": scan.counts, "dark": scan.dark, "flat": scan.flat}
        extras: dict[str, Any] = {} if scan.reference is None else {"reference": scan.reference}
        if scan.target_angles is not None:
            extras["target_angles"] = scan.target_angles
        return cls(geometry=scan.geometry, projections=scan.projections, raw=raw, metadata=dict(scan.metadata),
                   extras=extras)
