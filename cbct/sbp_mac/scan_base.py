"""What SBP-MAC's three simulated acquisitions share: the scanner and the bounds of the patient's random motion.

:class:`SimulatedScanner` is the base of the in-grid training scans (:class:`cbct.sbp_mac.data.InGridScanConfig`), the
truncated training scans (:class:`cbct.sbp_mac.truncated.TruncatedScanConfig`) and the held-out scans
(:class:`cbct.sbp_mac.heldout.HeldOutConfig`); each sets its own :class:`MotionBounds`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cbct._checks import check_fields
from cbct.simulation.motion import COMPONENT_KINDS, MotionParameters, sample_motion_parameters

__all__ = ["MOTION_KEYS", "MotionBounds", "SimulatedScanner", "fold_motion_keys"]

MOTION_KEYS = ("max_rotation_deg", "max_translation_mm", "min_motion_fraction", "pivot")


@dataclasses.dataclass(frozen=True)
class MotionBounds:
    """The random rigid motion of a simulated scan.

    Attributes:
        max_rotation_deg: bound of the patient's rotation angle in any view, degrees.
        max_translation_mm: bound of the patient's translation in any view, mm.
        min_motion_fraction: smallest drawn amplitude as a fraction of the bounds (0: some scans barely move).
        pivot: world ``(x, y, z)`` centre of head rotation, mm.
    """

    max_rotation_deg: float = 2.0
    max_translation_mm: float = 2.0
    min_motion_fraction: float = 0.25
    pivot: tuple[float, float, float] = (0.0, -60.0, -30.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pivot", tuple(float(v) for v in self.pivot))
        if len(self.pivot) != 3:
            raise ValueError(f"pivot must be (x, y, z) in mm, got {self.pivot}")
        if self.max_rotation_deg < 0 or self.max_translation_mm < 0:
            raise ValueError(f"max_rotation_deg and max_translation_mm must be >= 0, got {self.max_rotation_deg}, "
                             f"{self.max_translation_mm}")
        if not 0.0 <= self.min_motion_fraction <= 1.0:
            raise ValueError(f"min_motion_fraction must lie in [0, 1], got {self.min_motion_fraction}")

    def updated(self, value: MotionBounds | Mapping[str, Any]) -> MotionBounds:
        """``value`` itself, or these bounds with the fields a mapping gives (unknown keys refused)."""
        if isinstance(value, MotionBounds):
            return value
        return dataclasses.replace(self, **check_fields(MotionBounds, value, "motion keys"))

    def draw(self, waveform: str, rng: np.random.Generator, *, reference: str,
             mixed_kinds: Sequence[str] = COMPONENT_KINDS) -> MotionParameters:
        """Random parameters of a motion of ``waveform`` within these bounds, about :attr:`pivot`."""
        return sample_motion_parameters(
            waveform=waveform, max_rotation_deg=self.max_rotation_deg, max_translation_mm=self.max_translation_mm,
            min_fraction=self.min_motion_fraction, pivot=self.pivot, reference=reference, mixed_kinds=mixed_kinds,
            rng=rng,
        )


def fold_motion_keys(d: Mapping[str, Any]) -> dict[str, Any]:
    """A scan config mapping with the motion keys of the earlier flat layout (``max_rotation_deg`` ... ``pivot``
    beside the scan's keys, as older configs and weights files hold them) moved into its ``motion`` mapping."""
    out = dict(d)
    flat = {k: out.pop(k) for k in MOTION_KEYS if k in out}
    if flat:
        motion = out.get("motion", {})
        out["motion"] = {**(dataclasses.asdict(motion) if isinstance(motion, MotionBounds) else dict(motion)), **flat}
    return out


@dataclasses.dataclass(frozen=True)
class SimulatedScanner:
    """The simulated circular scanner (base of SBP-MAC's scan configs).

    Attributes:
        n_views: views over a full circle.
        dso: source to rotation axis, mm. dsd: source to detector, mm.
        filter: FDK ramp window (see :func:`cbct.fdk.fdk`) of every reconstruction.
        motion: the bounds of the patient's random motion; a mapping of some :class:`MotionBounds` fields changes
            those of the class's default bounds.
    """

    n_views: int = 180
    dso: float = 400.0
    dsd: float = 600.0
    filter: str = "hann"
    motion: MotionBounds = MotionBounds()

    def __post_init__(self) -> None:
        default = type(self).__dataclass_fields__["motion"].default  # the bounds this kind of scan has by default
        object.__setattr__(self, "motion", default.updated(self.motion))
        if self.n_views < 2 or not 0 < self.dso < self.dsd:
            raise ValueError(f"need n_views >= 2 and 0 < dso < dsd, got {self.n_views}, {self.dso}, {self.dsd}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """The config a mapping of its fields describes (the earlier flat motion keys are accepted)."""
        return cls(**check_fields(cls, fold_motion_keys(d), f"{cls.__name__} keys"))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON types (tuples as lists), as cache keys and weights files store it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))
