"""Rigid 6-DoF patient motion during a scan, applied through the geometry.

A motion is one rigid pose per view: the object in view ``i`` is ``x -> R_i (x - pivot) + pivot + t_i`` of the
static object (world ``(x, y, z)`` in mm, ``z`` the scanner's rotation axis). Applying it to a
:class:`~cbct.geometry.ConeGeometry` moves source and detector by the inverse motion, so any projector simulates the
moving patient exactly (:meth:`RigidMotion.apply`). :class:`RigidMotion` and the rotation conversions live in
:mod:`cbct.simulation.rigid` (re-exported here); this module makes the waveforms.

Patient frame used by the waveforms: ``x`` left–right, ``y`` anterior–posterior, ``z`` inferior–superior (the long
axis of a seated or standing dental patient, parallel to the rotation axis). Nodding is a rotation about ``x`` (pitch),
tilting about ``y`` (roll); both act about a ``pivot`` (for a head: the cranio-cervical joint, behind and below the
dental field of view), so they also displace the field of view.

Random motion is made in two steps, as TorchIO separates a transform's random parameters from its application:
:func:`sample_motion_parameters` draws a :class:`MotionParameters` value (the only random step, from a seed or a
``numpy.random.Generator``), and :func:`evaluate_motion` turns it into a :class:`RigidMotion` deterministically.
:func:`random_motion` does both.

Amplitudes: every waveform component has a unit-peak shape ``s(tau)`` (``tau`` in [0, 1] is the acquisition time
as a fraction of the scan, one view per step) times a rotation-vector amplitude (radians) and a translation amplitude
(mm). The rotation of view ``i`` is ``R_i = exp([w_i]_x)`` with ``w_i = sum_k a_k s_k(tau_i)``, so its rotation angle
``|w_i|`` is at most ``sum_k |a_k|``; the amplitudes are drawn so that this sum is at most ``max_rotation_deg`` and
the translations' ``sum_k |b_k|`` at most ``max_translation_mm``. Dental CBCT patients move by up to a few degrees
and millimetres (head nods, swallowing, tremor), the default bounds are 2° and 2 mm.

Reference pose: with ``reference="mean"`` (default) each shape is centred on its mean over the scan, so the average
pose over the views is (to first order) the identity and the static volume is the motion-free reference that the
moving scan is compared with; with ``reference="first"`` the patient starts at rest in the static pose (view 0).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np

from cbct.rng import as_generator
from cbct.simulation.rigid import RigidMotion, rotation_matrices, rotation_vectors

__all__ = [
    "COMPONENT_KINDS",
    "WAVEFORMS",
    "MotionComponent",
    "MotionParameters",
    "RigidMotion",
    "evaluate_motion",
    "random_motion",
    "rotation_matrices",
    "rotation_vectors",
    "sample_motion_parameters",
]

Reference = Literal["mean", "first"]


# ---------------------------------------------------------------------------------------------- waveforms
COMPONENT_KINDS = ("jerk", "drift", "nodding", "tilting", "tremor")


@dataclasses.dataclass(frozen=True)
class MotionComponent:
    """One waveform component: a unit-peak shape in time times rotation and translation amplitudes.

    Attributes:
        kind: one of :data:`COMPONENT_KINDS`.
        rotation: rotation-vector amplitude ``(x, y, z)`` in radians (its length is the peak angle).
        translation: translation amplitude ``(x, y, z)`` in mm.
        onset: start of the event as a fraction of the scan (jerk, drift, nodding, tilting).
        duration: length of the transition or event as a fraction of the scan.
        frequency: cycles per scan (nodding: number of nods; tremor: the base frequency).
        phases: tremor phases in radians (one per harmonic); empty for other kinds.
    """

    kind: str
    rotation: tuple[float, float, float]
    translation: tuple[float, float, float]
    onset: float = 0.0
    duration: float = 1.0
    frequency: float = 1.0
    phases: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in COMPONENT_KINDS:
            raise ValueError(f"kind must be one of {COMPONENT_KINDS}, got {self.kind!r}")
        for name in ("rotation", "translation"):
            v = tuple(float(a) for a in getattr(self, name))
            if len(v) != 3 or not all(math.isfinite(a) for a in v):
                raise ValueError(f"{name} must be 3 finite numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, v)
        if not 0.0 <= self.onset <= 1.0:
            raise ValueError(f"onset must lie in [0, 1] (fraction of the scan), got {self.onset}")
        if not 0.0 < self.duration <= 1.0:
            raise ValueError(f"duration must lie in (0, 1] (fraction of the scan), got {self.duration}")
        if not self.frequency > 0:
            raise ValueError(f"frequency must be positive (cycles per scan), got {self.frequency}")
        object.__setattr__(self, "phases", tuple(float(p) for p in self.phases))

    def raw_shape(self, tau: np.ndarray) -> np.ndarray:
        """The waveform's shape at times ``tau`` (fraction of the scan), before centring and normalisation."""
        tau = np.asarray(tau, dtype=np.float64)
        if self.kind in ("jerk", "drift", "tilting"):
            # smooth step (C1 smoothstep): at rest, a transition of `duration`, then held
            x = np.clip((tau - self.onset) / self.duration, 0.0, 1.0)
            step = x * x * (3 - 2 * x)
            if self.kind == "tilting":
                # lean, hold, and partly come back (the return takes as long as the lean, after a hold of one
                # lean duration, and ends at 40 % of the peak): a slow roll of the head about the pivot
                back = np.clip((tau - self.onset - 2 * self.duration) / self.duration, 0.0, 1.0)
                step = step - 0.6 * back * back * (3 - 2 * back)
            return step
        if self.kind == "nodding":
            # `frequency` nods (raised-cosine bumps down and back) in the window [onset, onset + duration]
            x = (tau - self.onset) / self.duration
            inside = (x >= 0) & (x <= 1)
            return np.where(inside, 0.5 * (1 - np.cos(2 * np.pi * self.frequency * np.clip(x, 0, 1))), 0.0)
        # tremor: a few harmonics of a base frequency with fixed phases, decaying amplitudes
        out = np.zeros_like(tau)
        for h, phase in enumerate(self.phases, start=1):
            out += np.sin(2 * np.pi * self.frequency * h * tau + phase) / h
        return out

    def shape(self, tau: np.ndarray, reference: Reference = "mean") -> np.ndarray:
        """Unit-peak shape: :meth:`raw_shape` minus its mean over ``tau`` (``"mean"``) or its first value
        (``"first"``), divided by the largest absolute value (0 where the shape is constant)."""
        s = self.raw_shape(tau)
        if reference == "mean":
            s = s - s.mean()
        elif reference == "first":
            s = s - s[0]
        else:
            raise ValueError(f"reference must be 'mean' or 'first', got {reference!r}")
        peak = float(np.max(np.abs(s))) if s.size else 0.0
        return s / peak if peak > 1e-12 else np.zeros_like(s)


@dataclasses.dataclass(frozen=True)
class MotionParameters:
    """The random parameters of a motion: its components, pivot and reference-pose convention.

    Attributes:
        components: the waveform components that add up.
        pivot: world ``(x, y, z)`` centre of rotation in mm.
        reference: ``"mean"`` (the mean pose is the static pose) or ``"first"`` (view 0 is the static pose).
        waveform: the name the parameters were drawn for (informative).
    """

    components: tuple[MotionComponent, ...]
    pivot: tuple[float, float, float] = (0.0, 0.0, 0.0)
    reference: Reference = "mean"
    waveform: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", tuple(self.components))
        if not all(isinstance(c, MotionComponent) for c in self.components):
            raise TypeError("components must be MotionComponent values")
        piv = tuple(float(p) for p in self.pivot)
        if len(piv) != 3 or not all(math.isfinite(p) for p in piv):
            raise ValueError(f"pivot must be 3 finite numbers (x, y, z) in mm, got {self.pivot!r}")
        object.__setattr__(self, "pivot", piv)
        if self.reference not in ("mean", "first"):
            raise ValueError(f"reference must be 'mean' or 'first', got {self.reference!r}")

    def max_rotation_deg(self) -> float:
        """Upper bound of the rotation angle of any view, degrees (sum of the components' peak angles)."""
        return float(np.degrees(sum(np.linalg.norm(c.rotation) for c in self.components)))

    def max_translation_mm(self) -> float:
        """Upper bound of the translation length of any view, mm."""
        return float(sum(np.linalg.norm(c.translation) for c in self.components))


def evaluate_motion(params: MotionParameters, n_views: int) -> RigidMotion:
    """The deterministic part: a :class:`RigidMotion` for ``n_views`` equally spaced acquisition times."""
    if not isinstance(params, MotionParameters):
        raise TypeError(f"params must be MotionParameters, got {type(params).__name__}")
    if not isinstance(n_views, (int, np.integer)) or n_views < 1:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
    tau = np.linspace(0.0, 1.0, int(n_views))
    w = np.zeros((int(n_views), 3))
    t = np.zeros((int(n_views), 3))
    for comp in params.components:
        s = comp.shape(tau, params.reference)[:, None]
        w += s * np.asarray(comp.rotation)
        t += s * np.asarray(comp.translation)
    return RigidMotion.from_vectors(w, t, params.pivot)


# ---------------------------------------------------------------------------------------------- sampling
def _unit(rng: np.random.Generator, weights: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A random unit vector, its components drawn from normals of standard deviations ``weights``."""
    v = rng.normal(0.0, 1.0, 3) * np.asarray(weights, dtype=np.float64)
    n = np.linalg.norm(v)
    return v / n if n > 0 else np.array([1.0, 0.0, 0.0])


def _axis(rng: np.random.Generator, main: Sequence[float], spread: float = 0.15) -> np.ndarray:
    """A unit vector near ``main`` (a random sign, plus normal perturbations of standard deviation ``spread``)."""
    v = rng.choice([-1.0, 1.0]) * np.asarray(main, dtype=np.float64) + rng.normal(0.0, spread, 3)
    return v / np.linalg.norm(v)


def _component(kind: str, rot_amp: float, trans_amp: float, rng: np.random.Generator) -> MotionComponent:
    """Draw one component of ``kind`` with peak rotation ``rot_amp`` (rad) and translation ``trans_amp`` (mm)."""
    if kind == "jerk":  # a sudden start: any axis, fast transition (1-5 % of the scan, ~0.2-1 s)
        return MotionComponent(
            kind, tuple(rot_amp * _unit(rng)), tuple(trans_amp * _unit(rng)),
            onset=float(rng.uniform(0.1, 0.85)), duration=float(rng.uniform(0.01, 0.05)),
        )
    if kind == "drift":  # slow settling: mostly translation and yaw, over half the scan or more
        duration = float(rng.uniform(0.5, 1.0))
        return MotionComponent(
            kind, tuple(rot_amp * _unit(rng, (0.3, 0.3, 1.0))), tuple(trans_amp * _unit(rng)),
            onset=float(rng.uniform(0.0, 1.0 - duration)), duration=duration,
        )
    if kind == "nodding":  # pitch about the left-right axis (x), with the small forward/down slip it drags
        duration = float(rng.uniform(0.2, 0.9))
        return MotionComponent(
            kind, tuple(rot_amp * _axis(rng, (1.0, 0.0, 0.0))), tuple(trans_amp * _unit(rng, (0.1, 1.0, 0.5))),
            onset=float(rng.uniform(0.0, 1.0 - duration)), duration=duration, frequency=float(rng.integers(1, 4)),
        )
    if kind == "tilting":  # roll about the anterior-posterior axis (y): lean, hold, partly return
        duration = float(rng.uniform(0.1, 0.3))
        return MotionComponent(
            kind, tuple(rot_amp * _axis(rng, (0.0, 1.0, 0.0))), tuple(trans_amp * _unit(rng, (1.0, 0.1, 0.3))),
            onset=float(rng.uniform(0.0, 1.0 - 3 * duration)), duration=duration,
        )
    if kind == "tremor":  # small fast oscillation (4-40 cycles per scan, three harmonics), any axis
        return MotionComponent(
            kind, tuple(rot_amp * _unit(rng)), tuple(trans_amp * _unit(rng)),
            frequency=float(rng.uniform(4.0, 40.0)), phases=tuple(rng.uniform(0, 2 * np.pi, 3)),
        )
    raise ValueError(f"unknown component kind {kind!r}")


Recipe = Callable[[np.random.Generator, Sequence[str]], list[tuple[str, float]]]


def _single(kind: str) -> Recipe:
    """A waveform made of one component: the whole budget goes to it (tremor: at most a quarter of it)."""
    share = 0.25 if kind == "tremor" else 1.0
    return lambda rng, kinds: [(kind, share)]


def _mixed(rng: np.random.Generator, kinds: Sequence[str] = COMPONENT_KINDS) -> list[tuple[str, float]]:
    """2 or 3 distinct components of ``kinds`` whose amplitude shares sum to 1 (tremor's share capped at a quarter)."""
    n = min(int(rng.integers(2, 4)), len(kinds))
    kinds = [str(k) for k in rng.choice(list(kinds), size=n, replace=False)]
    shares = rng.dirichlet(np.ones(n))
    if "tremor" in kinds:
        i = kinds.index("tremor")
        if shares[i] > 0.25:
            excess = shares[i] - 0.25
            shares[i] = 0.25
            others = [j for j in range(n) if j != i]
            shares[others] += excess / len(others)
    return [(str(k), float(s)) for k, s in zip(kinds, shares)]


#: waveform name -> recipe ``(rng, mixed_kinds) -> [(component kind, share of the amplitude budget), ...]``
WAVEFORMS: Mapping[str, Recipe] = types.MappingProxyType(
    {**{kind: _single(kind) for kind in COMPONENT_KINDS}, "mixed": _mixed}
)


def sample_motion_parameters(
    *,
    waveform: str = "mixed",
    max_rotation_deg: float = 2.0,
    max_translation_mm: float = 2.0,
    min_fraction: float = 0.25,
    pivot: Sequence[float] = (0.0, 0.0, 0.0),
    reference: Reference = "mean",
    mixed_kinds: Sequence[str] = COMPONENT_KINDS,
    rng: np.random.Generator | int | None = None,
) -> MotionParameters:
    """The random part: draw the parameters of a motion of the given waveform.

    The overall amplitudes are drawn uniformly in ``[min_fraction, 1]`` times the bounds (independently for
    rotation and translation) and split over the waveform's components.

    Args:
        waveform: a key of :data:`WAVEFORMS`: ``"jerk"``, ``"drift"``, ``"nodding"``, ``"tilting"``, ``"tremor"``
            or ``"mixed"`` (2–3 of them).
        max_rotation_deg: bound of the rotation angle of any view, degrees (>= 0).
        max_translation_mm: bound of the translation length of any view, mm (>= 0).
        min_fraction: smallest drawn amplitude as a fraction of the bounds, in [0, 1].
        pivot: world ``(x, y, z)`` centre of rotation, mm.
        reference: ``"mean"`` or ``"first"`` (see the module notes).
        mixed_kinds: the component kinds ``"mixed"`` draws from (e.g. leave one out for a held-out waveform).
        rng: a Generator or a seed.
    """
    if waveform not in WAVEFORMS:
        raise ValueError(f"waveform must be one of {sorted(WAVEFORMS)}, got {waveform!r}")
    for name, value in (("max_rotation_deg", max_rotation_deg), ("max_translation_mm", max_translation_mm)):
        if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must lie in [0, 1], got {min_fraction}")
    mixed_kinds = tuple(mixed_kinds)
    if len(mixed_kinds) < 2 or len(set(mixed_kinds)) != len(mixed_kinds) or not set(mixed_kinds) <= set(COMPONENT_KINDS):
        raise ValueError(f"mixed_kinds must be >= 2 distinct kinds of {COMPONENT_KINDS}, got {mixed_kinds}")
    gen = as_generator(rng)
    parts = WAVEFORMS[waveform](gen, mixed_kinds)
    rot_total = math.radians(max_rotation_deg) * gen.uniform(min_fraction, 1.0)
    trans_total = max_translation_mm * gen.uniform(min_fraction, 1.0)
    comps = tuple(_component(kind, rot_total * share, trans_total * share, gen) for kind, share in parts)
    return MotionParameters(comps, tuple(pivot), reference, waveform)


def random_motion(
    n_views: int,
    *,
    waveform: str = "mixed",
    max_rotation_deg: float = 2.0,
    max_translation_mm: float = 2.0,
    pivot: Sequence[float] = (0.0, 0.0, 0.0),
    reference: Reference = "mean",
    rng: np.random.Generator | int | None = None,
) -> RigidMotion:
    """A random rigid patient motion over ``n_views`` views (seeded): :func:`sample_motion_parameters` then
    :func:`evaluate_motion`. Every view's rotation angle is at most ``max_rotation_deg`` and its translation
    at most ``max_translation_mm`` long.

    Example: ``random_motion(geom.n_views, waveform="nodding", rng=7).apply(geom)`` is the geometry of a nodding
    patient; ``project(volume, moved)`` simulates the scan.
    """
    params = sample_motion_parameters(
        waveform=waveform, max_rotation_deg=max_rotation_deg, max_translation_mm=max_translation_mm,
        pivot=pivot, reference=reference, rng=rng,
    )
    return evaluate_motion(params, n_views)
