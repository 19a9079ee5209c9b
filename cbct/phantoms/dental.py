"""A procedural dental phantom: jaws, teeth, airways and optional metal restorations on any voxel grid.

Anatomy (adult, in mm; frame of the patient: world ``+x`` is the patient's left, ``+y`` posterior, ``+z`` superior,
so an axial slice ``volume[k]`` shows the face at low ``y``, i.e. at the top of an image whose row 0 is ``y`` minimum):

- soft tissue: the lower face as an elliptic cylinder filling the grid's ``(y, x)`` extent (lips ~13 mm in front of the
  incisors, cheeks beside the molars), including tongue, lips, gingiva and the soft palate;
- air: outside the face, the oral cavity between tongue and palate (and between the teeth when the jaw is open), the
  pharyngeal airway, the nasal cavity (with a bony septum), the maxillary sinuses and the air under the chin;
- bone: mandible (U-shaped body with rami, a cortical shell 0.8–3 mm thick around trabecular bone, and the mandibular
  canal) and maxilla (alveolar process, palate with its vault, and the body around the nasal cavity and sinuses);
- teeth along both arches (per quadrant from the midline: central and lateral incisor, canine, two premolars, three
  molars; mesio-distal widths 5–11 mm after standard dental-anatomy tables), each with an enamel crown (incisal edge,
  canine cusp, premolar and molar cusps and grooves), dentin, a pulp chamber with root canals, and roots (1 for
  anterior teeth and most premolars, 2 for the upper first premolar and lower molars, 3 for upper molars) embedded in
  the alveolar bone, inclined as in a normal occlusion (upper incisors ~15° labially);
- optional metal (``metal=True``): amalgam fillings (occlusal, sometimes extending to one proximal side), full metal
  crowns, and titanium implants with a threaded fixture and a metal crown in gaps left by missing teeth.

Linear attenuation coefficients (mm⁻¹, approximate values for a ~70 keV effective energy) are in :data:`TISSUES`; the
label volume (:func:`dental_phantom_with_labels`) holds the tissue's ``label``. Trabecular bone carries a smooth
multiplicative texture (relative standard deviation ``texture``, clipped at ±2.5 σ); every other tissue is uniform.

The anatomy is built in its own frame (mm, occlusal plane at ``z = 0``, dental arch centred in ``(x, y)``), placed at
the world origin (the rotation axis of a scan; the occlusal plane 0–4 mm above it) and scaled down uniformly when the
grid's ``(y, x)`` extent is too small for an adult jaw (about 80 × 72 mm). A grid shorter than the anatomy in ``z``
shows a slab of it; a grid offset from the origin shows the part of the anatomy it covers (pass ``scale=1`` for a
small region of interest at full size). Each voxel takes the tissue at its centre
(no partial-volume averaging). Randomness: a seed draws four independent streams (anatomy, texture, metal, spare), so
``metal=True`` and ``metal=False`` with the same seed give the same anatomy and differ only where metal is.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import types

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from cbct.geometry import VolumeGrid
from cbct.rng import as_generator

__all__ = [
    "Tissue", "TISSUES", "MU", "LABEL", "METAL_LABELS", "dental_phantom", "dental_phantom_with_labels",
    "dental_phantom_grid",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Tissue:
    """A tissue class: its id in the label volume, its name and its linear attenuation coefficient in mm⁻¹."""

    label: int
    name: str
    mu: float


TISSUES: tuple[Tissue, ...] = (
    Tissue(0, "air", 0.0),
    Tissue(1, "soft_tissue", 0.019),  # water-like, 0.0193 mm⁻¹ at 70 keV
    Tissue(2, "trabecular_bone", 0.030),  # mean; textured by ``texture``
    Tissue(3, "cortical_bone", 0.050),  # 1.9 g/cm³
    Tissue(4, "pulp", 0.020),
    Tissue(5, "dentin", 0.055),  # 2.1 g/cm³
    Tissue(6, "enamel", 0.085),  # 2.9 g/cm³
    Tissue(7, "amalgam", 1.0),  # effective value; real amalgam attenuates even more (Ag, Sn, Hg)
    Tissue(8, "crown_alloy", 0.8),  # e.g. Co-Cr or gold-alloy crowns, effective value
    Tissue(9, "titanium", 0.25),  # implant fixture and abutment, 4.5 g/cm³
)
MU = types.MappingProxyType({t.name: t.mu for t in TISSUES})
"""Tissue name → linear attenuation coefficient in mm⁻¹ (read-only)."""
LABEL = types.MappingProxyType({t.name: t.label for t in TISSUES})
"""Tissue name → label id (read-only)."""
METAL_LABELS = (7, 8, 9)

_AIR, _SOFT, _TRAB, _CORT, _PULP, _DENTIN, _ENAMEL, _AMALGAM, _ALLOY, _TI = range(10)

# Per quadrant from the midline: kind, mesio-distal and bucco-lingual crown width, crown height, root length (mm),
# root layout, crown inclination (degrees, crown towards the cheek/lips when positive).
_UPPER_TEETH = (
    ("incisor", 8.5, 7.0, 10.5, 13.0, "single", 15.0),
    ("incisor", 6.5, 6.0, 9.0, 13.0, "single", 12.0),
    ("canine", 7.5, 8.0, 10.0, 17.0, "single", 8.0),
    ("premolar", 7.0, 9.0, 8.5, 14.0, "bucco_palatal", 5.0),
    ("premolar", 6.5, 9.0, 8.0, 14.0, "single", 4.0),
    ("molar", 10.0, 11.0, 7.5, 13.0, "three", 2.0),
    ("molar", 9.0, 11.0, 7.0, 12.0, "three", 2.0),
    ("molar", 8.5, 10.0, 6.5, 11.0, "three", 2.0),
)
_LOWER_TEETH = (
    ("incisor", 5.0, 6.0, 9.0, 12.5, "single", 10.0),
    ("incisor", 5.5, 6.5, 9.5, 14.0, "single", 10.0),
    ("canine", 7.0, 7.5, 11.0, 16.0, "single", 6.0),
    ("premolar", 7.0, 7.5, 8.5, 14.0, "single", 3.0),
    ("premolar", 7.0, 8.0, 8.0, 14.5, "single", 0.0),
    ("molar", 11.0, 10.5, 7.5, 14.0, "mesio_distal", -5.0),
    ("molar", 10.5, 10.0, 7.0, 13.0, "mesio_distal", -8.0),
    ("molar", 10.0, 9.5, 7.0, 11.0, "mesio_distal", -10.0),
)
# Root layouts: trunk (fraction of the root length shared by all roots) and per root the centre (u, w) and the
# half-widths, in units of the cervical half-widths; u is mesio-distal (distal +), w bucco-lingual (buccal +).
_ROOTS = {
    "single": (1.0, ((0.0, 0.0, 1.0, 1.0),)),
    "bucco_palatal": (0.45, ((0.0, 0.45, 0.85, 0.45), (0.0, -0.45, 0.85, 0.45))),
    "mesio_distal": (0.3, ((-0.5, 0.0, 0.42, 0.85), (0.5, 0.0, 0.42, 0.85))),
    "three": (0.3, ((-0.45, 0.45, 0.45, 0.45), (0.45, 0.45, 0.42, 0.42), (0.0, -0.5, 0.5, 0.45))),
}
_ADULT_HALF_EXTENT_XY = (40.0, 36.0)  # (x, y) half-extent in mm the anatomy needs, before scaling to small grids


# ---------------------------------------------------------------------------------------------------------- layout
@dataclasses.dataclass(frozen=True)
class _Tooth:
    upper: bool
    index: int  # 0 (central incisor) .. 7 (third molar)
    side: int  # +1 patient's left (x > 0), -1 right
    kind: str
    s: float  # centre, signed arc length along the arch curve (mm)
    n: float  # centre offset from the arch curve, buccal positive (mm)
    md: float
    bl: float
    crown: float
    root: float
    roots: str
    tan_tilt: float
    tan_tip: float
    z_occlusal: float  # jaw-frame height of the crown tip (mm)
    present: bool
    restoration: str | None = None  # None, "amalgam", "crown", "implant"
    params: tuple[float, ...] = ()  # restoration parameters

    @property
    def anterior(self) -> bool:
        return self.kind in ("incisor", "canine")

    @property
    def z_cej(self) -> float:
        return self.z_occlusal + self.crown if self.upper else self.z_occlusal - self.crown

    @property
    def half_widths(self) -> tuple[float, float, float, float]:
        """Crown (a, b) and cervical (a_c, b_c) half-widths, mesio-distal and bucco-lingual (mm)."""
        a, b = self.md / 2, self.bl / 2
        return a, b, (0.7 if self.anterior else 0.8) * a, 0.9 * b


@dataclasses.dataclass(frozen=True)
class _Arch:
    """The dental arch curve ``y = y0 + depth (|x| / half_width) ** power`` sampled by signed arc length."""

    s: np.ndarray  # (m,) signed arc length, uniform step, 0 at the midline, positive for x > 0
    xy: np.ndarray  # (m, 2)
    normal: np.ndarray  # (m, 2) unit outward (buccal) normals
    tree: cKDTree

    @classmethod
    def build(cls, half_width: float, depth: float, power: float, y0: float, s_max: float = 140.0, step: float = 0.04):
        x = np.linspace(0.0, 3.0 * half_width, 60001)
        slope = depth * power / half_width * (x / half_width) ** (power - 1)
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), 0.5 * (slope[1:] + slope[:-1]) * np.diff(x)))])
        s_half = np.arange(0.0, min(s_max, arc[-1]) + step / 2, step)
        xs = np.interp(s_half, arc, x)
        s = np.concatenate([-s_half[:0:-1], s_half])
        xs = np.concatenate([-xs[:0:-1], xs])
        ys = y0 + depth * (np.abs(xs) / half_width) ** power
        dy = np.sign(xs) * depth * power / half_width * (np.abs(xs) / half_width) ** (power - 1)
        normal = np.stack([dy, -np.ones_like(dy)], axis=1) / np.hypot(dy, 1.0)[:, None]
        xy = np.stack([xs, ys], axis=1)
        return cls(s, xy, normal, cKDTree(xy))

    def locate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arc length ``s`` of the nearest curve point and signed distance ``n`` (buccal +) for points ``(x, y)``."""
        pts = np.stack(np.broadcast_arrays(x, y), axis=-1).reshape(-1, 2)
        _, idx = self.tree.query(pts)
        n = np.einsum("ij,ij->i", pts - self.xy[idx], self.normal[idx])
        shape = np.broadcast_shapes(np.shape(x), np.shape(y))
        return self.s[idx].reshape(shape).astype(np.float32), n.reshape(shape).astype(np.float32)

    def point(self, s: float, n: float = 0.0) -> np.ndarray:
        """``(x, y)`` of the point at arc length ``s`` and offset ``n``."""
        p = np.array([np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1])])
        nrm = np.array([np.interp(s, self.s, self.normal[:, 0]), np.interp(s, self.s, self.normal[:, 1])])
        return p + n * nrm / np.linalg.norm(nrm)


@dataclasses.dataclass(frozen=True)
class _Anatomy:
    """Every random draw of one phantom, in the anatomy's own frame (mm)."""

    arch: _Arch
    teeth: tuple[_Tooth, ...]  # all 32 positions, present or not
    opening: float  # jaw opening, radians
    hinge: tuple[float, float]  # (y, z) of the mandible's rotation axis
    z_shift: float  # height of the occlusal plane above the grid centre, mm (anatomy frame)
    palate_vault: float
    palate_thickness: float
    tongue_gap: float
    body_height: tuple[float, float]  # mandible height at the symphysis and at the molars
    face: tuple[float, float]  # soft-tissue half-width and lip thickness
    pharynx: tuple[float, float, float]  # centre y, half-widths x and y
    nasal_half_width: float
    sinuses: tuple[tuple[float, ...], ...]  # per side: centre x, y, z and semi-axes
    y_palate_back: float
    y_front: float  # labial surface of the upper central incisors
    ramus: tuple[float, float]  # arc length where the ramus starts and where it ends

    def jaw_teeth(self, upper: bool) -> list[_Tooth]:
        return sorted((t for t in self.teeth if t.upper == upper), key=lambda t: t.s)


def _draw_anatomy(
    rng: np.random.Generator, n_teeth: int | None, missing_probability: float, opening_deg: float | None
) -> _Anatomy:
    half_width = rng.uniform(24.0, 28.0)
    depth = rng.uniform(40.0, 46.0)
    power = rng.uniform(1.9, 2.5)
    size = rng.normal(1.0, 0.035)  # overall tooth size
    per_tooth = rng.normal(1.0, 0.03, size=(2, 8))  # shared left/right
    asym = rng.normal(0.0, 0.01, size=(2, 2, 8))
    gaps = rng.uniform(0.0, 0.3, size=(2, 2, 8))
    jitter_n = rng.normal(0.0, 0.3, size=(2, 2, 8))
    jitter_z = rng.normal(0.0, 0.25, size=(2, 2, 8))
    jitter_tilt = rng.normal(0.0, 2.5, size=(2, 2, 8))
    jitter_tip = rng.normal(0.0, 2.0, size=(2, 2, 8))
    third_molars = rng.random(size=(2, 2)) < 0.35
    missing = rng.random(size=(2, 2, 8)) < missing_probability
    opening = rng.uniform(0.0, 7.0) if opening_deg is None else opening_deg
    z_shift = rng.uniform(0.0, 4.0)
    palate_vault = rng.uniform(8.0, 13.0)
    palate_thickness = rng.uniform(3.0, 5.0)
    tongue_gap = rng.uniform(1.0, 6.0)
    body_height = (rng.uniform(28.0, 33.0), rng.uniform(23.0, 27.0))
    lip = rng.uniform(11.0, 15.0)
    cheek = rng.uniform(9.0, 14.0)
    pharynx_gap, pharynx_ax, pharynx_ay = rng.uniform(12.0, 16.0), rng.uniform(8.0, 13.0), rng.uniform(4.0, 8.0)
    nasal_half_width = rng.uniform(9.0, 12.0)
    sinus = rng.uniform([10.0, 13.0, 13.0, 0.5], [13.0, 17.0, 17.0, 4.0], size=(2, 4))
    ramus_width = rng.uniform(28.0, 33.0)

    arch = _Arch.build(half_width, depth, power, 0.0)
    teeth: list[_Tooth] = []
    for jaw, table in enumerate((_UPPER_TEETH, _LOWER_TEETH)):
        upper = jaw == 0
        for side_i, side in enumerate((-1, 1)):
            edge = 0.1
            for k, (kind, md, bl, crown, root, roots, tilt) in enumerate(table):
                f = size * per_tooth[jaw, k] + asym[jaw, side_i, k]
                md_k, bl_k = md * f, bl * f
                s = side * (edge + md_k / 2)
                edge += md_k + gaps[jaw, side_i, k]
                if upper:
                    n = jitter_n[jaw, side_i, k]
                    z_occ = (-1.5 if k < 2 else -1.0 if k == 2 else 0.0) + jitter_z[jaw, side_i, k]
                else:
                    n = (-3.0 if k < 3 else -2.0) + jitter_n[jaw, side_i, k]
                    z_occ = jitter_z[jaw, side_i, k]
                present = not missing[jaw, side_i, k]
                if k == 7:
                    present = bool(third_molars[jaw, side_i]) if n_teeth is None else present
                if n_teeth is not None and k >= n_teeth:
                    present = False
                teeth.append(
                    _Tooth(
                        upper=upper, index=k, side=side, kind=kind, s=float(s), n=float(n), md=float(md_k), bl=float(bl_k),
                        crown=float(crown * f), root=float(root * f), roots=roots,
                        tan_tilt=math.tan(math.radians(tilt + jitter_tilt[jaw, side_i, k])),
                        tan_tip=math.tan(math.radians(jitter_tip[jaw, side_i, k])), z_occlusal=float(z_occ), present=present,
                    )
                )
    # centre the dentition (lips to 10 mm behind the last molar positions) on y = 0
    upper_teeth = [t for t in teeth if t.upper]
    s_end = max(abs(t.s) + t.md / 2 for t in upper_teeth if t.index == 6)
    y_back = arch.point(s_end)[1]
    y_lips = -lip - 4.0
    y0 = -(y_lips + y_back + 10.0) / 2
    arch = _Arch.build(half_width, depth, power, y0)
    s_last = max(abs(t.s) + t.md / 2 for t in teeth if not t.upper)  # distal end of the lower third molar position
    ramus = (s_last + 1.0, s_last + 1.0 + ramus_width)
    hinge_y = float(arch.point(ramus[1] - 6.0)[1])
    hinge = (hinge_y, 22.0)
    y_palate_back = float(arch.point(s_end + 2.0)[1])
    pharynx = (y_palate_back + pharynx_gap, pharynx_ax, pharynx_ay)
    sinuses = []
    for side in (-1, 1):
        m1 = next(t for t in upper_teeth if t.index == 5 and t.side == side)
        cx, cy = arch.point(m1.s, -2.0)
        rx, ry, rz, floor = sinus[(side + 1) // 2]
        sinuses.append((float(cx) + side * 1.0, float(cy) + 2.0, m1.z_cej + m1.root + floor + rz, rx, ry, rz))
    return _Anatomy(
        arch=arch, teeth=tuple(teeth), opening=math.radians(opening), hinge=hinge, z_shift=z_shift,
        palate_vault=palate_vault, palate_thickness=palate_thickness, tongue_gap=tongue_gap, body_height=body_height,
        face=(half_width + cheek + 12.0, lip), pharynx=pharynx, nasal_half_width=nasal_half_width,
        sinuses=tuple(sinuses), y_palate_back=y_palate_back, y_front=float(y0 - 3.5), ramus=ramus,
    )


def _draw_metal(rng: np.random.Generator, teeth: tuple[_Tooth, ...]) -> tuple[_Tooth, ...]:
    """Choose restorations: amalgam fillings in posterior teeth, metal crowns, implants in gaps."""
    out = list(teeth)
    u_draw = rng.random(len(out))
    kind_draw = rng.random(len(out))
    params = rng.random((len(out), 4))
    for i, t in enumerate(out):
        if t.present and t.kind in ("premolar", "molar") and u_draw[i] < 0.22:
            out[i] = dataclasses.replace(t, restoration="amalgam", params=tuple(params[i]))
        elif t.present and u_draw[i] > 0.93:
            out[i] = dataclasses.replace(t, restoration="crown", params=tuple(params[i]))
        elif not t.present and t.index < 7 and kind_draw[i] < 0.6:
            out[i] = dataclasses.replace(t, restoration="implant", params=tuple(params[i]))
    if not any(t.restoration for t in out):  # at least one restoration when metal is asked for
        candidates = [i for i, t in enumerate(out) if t.present]
        if candidates:
            i = candidates[int(rng.integers(len(candidates)))]
            kind = "amalgam" if out[i].kind in ("premolar", "molar") else "crown"
            out[i] = dataclasses.replace(out[i], restoration=kind, params=tuple(params[i]))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------- shapes
def _se(u, a, w, b, q: float):
    """Superellipse level ``|u/a|^q + |w/b|^q`` (inside where <= 1)."""
    return np.abs(u / np.maximum(a, 1e-3)) ** q + np.abs(w / np.maximum(b, 1e-3)) ** q


def _taper(t):
    """Root half-width profile along the root, 1 at the cervix (t = 0), 0 at the apex (t = 1)."""
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(1.0 - t**1.5) * (1.0 - 0.5 * t)


def _crown_profile(t: _Tooth, h):
    """Crown half-widths a(h), b(h), occlusal surface height function and superellipse exponent."""
    a, b, a_c, b_c = t.half_widths
    rel = np.clip(h / t.crown, 0.0, 1.0)
    bulge = np.sin(np.pi / 2 * np.clip(rel / 0.35, 0.0, 1.0))
    ah = a_c + (a - a_c) * bulge
    bh = b_c + (b - b_c) * bulge
    upper_part = np.clip((rel - 0.35) / 0.65, 0.0, 1.0)
    if t.kind == "incisor":
        bh = bh * (1.0 - 0.7 * upper_part)
        q = 2.2
    elif t.kind == "canine":
        bh = bh * (1.0 - 0.55 * upper_part)
        ah = ah * (1.0 - 0.45 * np.clip((rel - 0.6) / 0.4, 0.0, 1.0))
        q = 2.2
    else:
        rounding = np.sqrt(1.0 - 0.5 * np.clip((rel - 0.75) / 0.25, 0.0, 1.0) ** 2)
        ah, bh = ah * rounding, bh * rounding
        q = 2.5 if t.kind == "premolar" else 3.0
    return ah, bh, q


def _crown_top(t: _Tooth, u, w):
    a, b, _, _ = t.half_widths
    hc = t.crown
    if t.kind == "incisor":
        return np.full(np.broadcast_shapes(np.shape(u), np.shape(w)), hc)
    if t.kind == "canine":
        return hc * (1.0 - 0.25 * np.abs(u) / a)
    if t.kind == "premolar":
        return hc - 0.2 * hc * np.exp(-((w / (0.25 * b)) ** 2)) - 0.1 * hc * (u / a) ** 2
    groove = np.maximum(np.exp(-((w / (0.2 * b)) ** 2)), np.exp(-((u / (0.2 * a)) ** 2)))
    return hc - 0.22 * hc * groove


def _tooth_masks(t: _Tooth, u, w, h) -> dict[str, np.ndarray]:
    """Boolean masks of one tooth in its local frame (mm): u mesio-distal (distal +), w bucco-lingual (buccal +),
    h along the tooth axis from the cemento-enamel junction (crown +, root -)."""
    a, b, a_c, b_c = t.half_widths
    ah, bh, q = _crown_profile(t, h)
    top = _crown_top(t, u, w)
    in_crown = (h >= 0) & (h <= top) & (_se(u, ah, w, bh, q) <= 1.0)
    e_side = (1.0 if t.anterior else 1.3) * np.clip(h / (0.5 * t.crown), 0.0, 1.0)
    e_top = 1.2 if t.kind == "incisor" else 1.6 if t.kind == "canine" else 2.0
    core = (h <= top - e_top) & (_se(u, ah - e_side, w, bh - e_side, q) <= 1.0)
    enamel = in_crown & ~core

    d = -h
    length = t.root
    trunk_frac, layout = _ROOTS[t.roots]
    in_root = np.zeros(np.shape(h), bool)
    canal = np.zeros(np.shape(h), bool)
    rc = 0.45 * (1.0 - 0.4 * np.clip(d / length, 0.0, 1.0))  # canal radius, mm
    if len(layout) == 1:
        tau = _taper(d / length)
        in_root = (d > 0) & (d <= length) & (_se(u, a_c * tau, w, b_c * tau, 2.2) <= 1.0)
        canal = (d > 0) & (np.minimum(a_c, b_c) * tau >= rc + 0.6) & (u * u + w * w <= rc * rc)
        chamber_floor = -2.0
    else:
        trunk = trunk_frac * length
        in_root = (d > 0) & (d <= trunk) & (_se(u, a_c * (1 - 0.1 * d / trunk), w, b_c * (1 - 0.05 * d / trunk), 2.5) <= 1.0)
        start = 0.6 * trunk
        rel = (d - start) / (length - start)
        tau = _taper(rel)
        spread = 1.0 + 0.3 * np.clip(rel, 0.0, 1.0)
        for cu, cw, ru, rw in layout:
            uu = u - cu * a_c * spread
            ww = w - cw * b_c * spread
            this = (d >= start) & (d <= length) & (_se(uu, ru * a_c * tau, ww, rw * b_c * tau, 2.2) <= 1.0)
            in_root |= this
            canal |= (d >= 0.4 * trunk) & (np.minimum(ru * a_c, rw * b_c) * tau >= rc + 0.6) & (uu * uu + ww * ww <= rc * rc)
        chamber_floor = -0.5 * trunk
    roof = (0.4 if t.anterior else 0.25) * t.crown
    centre, half = (roof + chamber_floor) / 2, (roof - chamber_floor) / 2
    chamber = (u / (0.32 * a_c)) ** 2 + (w / (0.32 * b_c)) ** 2 + ((h - centre) / half) ** 2 <= 1.0
    tooth = in_crown | in_root
    return {"tooth": tooth, "enamel": enamel, "pulp": (chamber | canal) & tooth, "crown": in_crown, "core": core,
            "top": top, "roof": roof}


def _restoration_masks(t: _Tooth, u, w, h, m: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
    """Metal of a restored present tooth: (mask, label)."""
    a, b, _, _ = t.half_widths
    p = t.params
    if t.restoration == "amalgam":
        depth = 1.8 + 1.0 * p[0]
        bottom = np.maximum(m["top"] - depth, m["roof"] + 1.2)
        box = (np.abs(u) <= (0.35 + 0.2 * p[1]) * a) & (np.abs(w) <= 0.3 * b)
        if p[2] < 0.4:  # class II: open towards one proximal side
            sign = 1.0 if p[3] < 0.5 else -1.0
            box |= (sign * u >= 0) & (np.abs(w) <= 0.35 * b)
        return m["crown"] & box & (h >= bottom), _AMALGAM
    # full metal crown over a prepared stump 1.5 mm inside the outer surface
    ah, bh, q = _crown_profile(t, h)
    stump = (h <= m["top"] - 2.0) & (_se(u, ah - 1.5, w, bh - 1.5, q) <= 1.0)
    return m["crown"] & ~stump, _ALLOY


def _implant_masks(t: _Tooth, u, w, h) -> tuple[np.ndarray, np.ndarray]:
    """An implant in the gap of a missing tooth: (titanium fixture and abutment, metal crown)."""
    p = t.params
    radius = 1.75 + 0.6 * p[0]
    length = 8.0 + 3.5 * p[1]
    shoulder = -1.5
    r2 = u * u + w * w
    depth = shoulder - h  # along the fixture from its shoulder
    thread = radius - 0.35 * (0.5 + 0.5 * np.sin(2 * np.pi * depth / 0.8))
    apex = np.clip((length - depth) / 1.5, 0.0, 1.0) ** 0.5  # rounded apex
    fixture = (depth >= 0) & (depth <= length) & (r2 <= (thread * apex) ** 2)
    abutment = (h > shoulder) & (h <= 0.8) & (r2 <= (0.85 * radius) ** 2)
    ah, bh, q = _crown_profile(t, h)
    crown = (h >= 0) & (h <= _crown_top(t, u, w)) & (_se(u, ah, w, bh, q) <= 1.0)
    return fixture | abutment, crown


def _tooth_bbox(t: _Tooth, arch: _Arch) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box (min, max) of the tooth in its jaw frame, (x, y, z) mm."""
    cx, cy = arch.point(t.s, t.n)
    a, b, _, _ = t.half_widths
    lean = (t.crown + t.root) * (abs(t.tan_tilt) + abs(t.tan_tip))
    r = 1.35 * max(a, b) + lean + 1.0
    if t.upper:
        z0, z1 = t.z_occlusal - 0.5, t.z_cej + t.root + 0.5
    else:
        z0, z1 = t.z_cej - t.root - 0.5, t.z_occlusal + 0.5
    return np.array([cx - r, cy - r, z0]), np.array([cx + r, cy + r, z1])


# ---------------------------------------------------------------------------------------------------------- raster
def _p4(x):
    """``x ** 4`` with two multiplications."""
    x2 = x * x
    return x2 * x2


def _range(coord: np.ndarray, lo: float, hi: float) -> slice:
    """Index range of the sorted coordinates ``coord`` within ``[lo, hi]``."""
    return slice(int(np.searchsorted(coord, lo, side="left")), int(np.searchsorted(coord, hi, side="right")))


class _Raster:
    """Voxel coordinates of a grid in the anatomy frame, fields along the arches, and the painting of a slab."""

    def __init__(self, grid: VolumeGrid, anatomy: _Anatomy, scale: float):
        self.a = a = anatomy
        aff = grid.index_to_world()
        nz, ny, nx = grid.shape
        dz, dy, dx = grid.voxel_size
        # anatomy frame: world = scale * (anatomy coordinates + (0, 0, z_shift)), centred on the world origin
        self.x = (aff[0, 3] + np.arange(nx) * dx) / scale
        self.y = (aff[1, 3] + np.arange(ny) * dy) / scale
        self.z = (aff[2, 3] + np.arange(nz) * dz) / scale - a.z_shift
        self.upper = a.jaw_teeth(True)
        self.lower = a.jaw_teeth(False)
        self.cos, self.sin = math.cos(a.opening), math.sin(a.opening)
        yh, zh = a.hinge
        self.s_up, self.n_up = a.arch.locate(self.x[None, :], self.y[:, None])
        self.up = self._upper_fields(self.s_up, self.n_up, self.y[:, None])
        # mandible frame: y' = c (y - yh) + s (z - zh) + yh; its arch fields sampled finely in y' once
        corners = [self.cos * (yy - yh) + self.sin * (zz - zh) + yh for yy in self.y[[0, -1]] for zz in self.z[[0, -1]]]
        self.fine = min(dy / scale, 0.5) / 2
        self.yf0 = min(corners) - self.fine
        nyf = int(math.ceil((max(corners) - self.yf0) / self.fine)) + 2
        s_lo, n_lo = a.arch.locate(self.x[None, :], (self.yf0 + self.fine * np.arange(nyf))[:, None])
        self.lo = self._lower_fields(s_lo)
        self.lo["s"], self.lo["n"] = s_lo, n_lo
        self.face = self._face()
        self.mouth = self._mouth()
        self.bboxes = [self._index_box(t) for t in a.teeth]

    # -- fields along the arches (functions of the arch coordinates only)
    @staticmethod
    def _knots(teeth: list[_Tooth]) -> dict[str, np.ndarray]:
        b_c = np.array([t.half_widths[3] for t in teeth])
        return {"s": np.array([t.s for t in teeth]), "n_t": np.array([t.n for t in teeth]),
                "tan": np.array([t.tan_tilt for t in teeth]), "cej": np.array([t.z_cej for t in teeth]),
                "tc": b_c + 1.6, "tb": b_c + 3.2,
                "apex": np.array([t.z_cej + (t.root if t.upper else -t.root) for t in teeth]),
                "root": np.array([t.root for t in teeth])}

    def _upper_fields(self, S, N, Y) -> dict[str, np.ndarray]:
        a, k = self.a, self._knots(self.upper)
        f = {key: np.interp(S, k["s"], k[key]) for key in ("n_t", "tan", "cej", "tc", "tb")}
        abs_s = np.abs(S)
        canine_s = next(abs(t.s) for t in self.upper if t.index == 2)
        premolar_s = next(abs(t.s) for t in self.upper if t.index == 4)
        s_end = max(abs(t.s) + t.md / 2 for t in self.upper) + 4.0
        f["crest"] = f["cej"] + 1.5
        f["top"] = f["crest"] + np.interp(abs_s, [0.0, canine_s, premolar_s], [22.0, 24.0, 42.0])
        f["end"] = _p4(np.maximum(abs_s - (s_end - 6.0), 0) / 6.0)
        nb_crest = f["n_t"] - 1.5 * f["tan"]
        d_in = (nb_crest - f["tc"]) - N  # depth inside the arch from the alveolar process, mm
        f["d_in"] = d_in
        f["pal_low"] = f["crest"] + 2.0 + a.palate_vault * (1 - np.exp(-np.maximum(d_in, 0) / 5.0))
        f["inside"] = (N <= nb_crest) & (Y <= a.y_palate_back)
        # the nasal floor: the palate's upper surface, and above the apices of the nearest upper teeth
        f["nasal_floor"] = np.maximum(f["pal_low"] + a.palate_thickness, np.interp(S, k["s"], k["apex"]) + 3.0)
        return {key: (v if v.dtype == bool else v.astype(np.float32)) for key, v in f.items()}

    def _lower_fields(self, S) -> dict[str, np.ndarray]:
        a, k = self.a, self._knots(self.lower)
        f = {key: np.interp(S, k["s"], k[key]) for key in ("n_t", "tan", "cej", "tc", "tb", "root")}
        abs_s = np.abs(S)
        r0, r1 = a.ramus
        m1_s = next(abs(t.s) for t in self.lower if t.index == 5)
        pm2_s = next(abs(t.s) for t in self.lower if t.index == 4)
        height = np.interp(abs_s, [0.0, m1_s, r0], [a.body_height[0], a.body_height[1], a.body_height[1] - 1.0])
        crest_teeth = f["cej"] - 1.5
        crest_mol = float(np.interp(r0, np.abs(k["s"]), k["cej"])) - 1.5
        bottom_mol = crest_mol - a.body_height[1] + 1.0
        zh = a.hinge[1]
        in_ramus = abs_s > r0
        f["crest"] = np.where(in_ramus, np.interp(abs_s, [r0, r0 + 14.0, r1], [crest_mol, zh - 4.0, zh - 4.0]), crest_teeth)
        gonial = np.interp(abs_s, [r0, r1 - 10.0, r1], [bottom_mol, bottom_mol + 5.0, bottom_mol + 14.0])
        f["bottom"] = np.where(in_ramus, gonial, crest_teeth - height)
        ramus_w = np.clip((abs_s - r0) / 10.0, 0.0, 1.0)  # the ramus is upright and thinner
        f["tan"] = f["tan"] * (1.0 - ramus_w)
        f["tc"] = f["tc"] + (3.5 - f["tc"]) * ramus_w
        f["tb"] = f["tb"] + (4.5 - f["tb"]) * ramus_w
        f["c_side"] = np.where(in_ramus, 1.2, 1.8)
        f["end"] = _p4(np.maximum(abs_s - (r1 - 8.0), 0) / 8.0)
        # mandibular canal: from the ramus to the mental foramen below the second premolar
        frac = np.interp(abs_s, [pm2_s, m1_s, r0, r0 + 10.0], [0.45, 0.3, 0.3, 0.5])
        f["canal_z"] = f["bottom"] + frac * (f["crest"] - f["bottom"])
        f["canal"] = (abs_s >= pm2_s) & (abs_s <= r0 + 10.0)
        return {key: (v if v.dtype == bool else v.astype(np.float32)) for key, v in f.items()}

    def _face(self) -> np.ndarray:
        """(ny, nx) soft-tissue outline: an elliptic cylinder from the lips back, kept inside a grid about the origin."""
        a = self.a
        half_x, y_front = a.face[0], a.y_front - a.face[1]
        y_back = y_front + 2 * 95.0
        if self.x[0] < 0 < self.x[-1]:
            half_x = min(half_x, 0.985 * self.x[-1], -0.985 * self.x[0])
        if self.y[0] < 0 < self.y[-1]:
            y_front, y_back = max(y_front, 0.985 * self.y[0]), min(y_back, 0.985 * self.y[-1])
        cy, ry = (y_front + y_back) / 2, (y_back - y_front) / 2
        return (self.x[None, :] / half_x) ** 2 + ((self.y[:, None] - cy) / ry) ** 2 <= 1.0

    def _mouth(self) -> dict[str, np.ndarray]:
        """(ny, nx) limits of the oral air: below the palate's mucosa (or the upper teeth), above the tongue (or the
        lower teeth), inside the upper arch and in front of the soft palate."""
        a, up = self.a, self.up
        Y = self.y[:, None]
        roof = np.where(up["d_in"] > 4.0, up["pal_low"] - 2.0, 0.5)  # the tongue touches the teeth and gums
        yh, zh = a.hinge
        lower_plane = zh + (self.sin * (Y - yh) - zh) / self.cos  # the mandible's occlusal plane
        tongue = np.maximum(lower_plane + 0.3, roof - a.tongue_gap)
        s_end = max(abs(t.s) + t.md / 2 for t in self.upper)
        where = (self.n_up <= 2.5) & (np.abs(self.s_up) <= s_end) & (Y <= a.y_palate_back) & self.face
        return {"roof": roof.astype(np.float32), "tongue": tongue.astype(np.float32), "where": where}

    def _index_box(self, t: _Tooth) -> tuple[slice, slice, slice]:
        lo, hi = _tooth_bbox(t, self.a.arch)
        if not t.upper:  # rotate the box's corners into the grid's frame
            corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
            yh, zh = self.a.hinge
            yw = self.cos * (corners[:, 1] - yh) - self.sin * (corners[:, 2] - zh) + yh
            zw = self.sin * (corners[:, 1] - yh) + self.cos * (corners[:, 2] - zh) + zh
            corners = np.stack([corners[:, 0], yw, zw], axis=1)
            lo, hi = corners.min(axis=0), corners.max(axis=0)
        return _range(self.z, lo[2], hi[2]), _range(self.y, lo[1], hi[1]), _range(self.x, lo[0], hi[0])

    def lower_coords(self, z0: int, z1: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Mandible fields of slab ``z0:z1`` (each (nzc, ny, nx)), its frame's height z' and y' ((nzc, ny, 1))."""
        yh, zh = self.a.hinge
        zz = self.z[z0:z1, None]
        yy = self.y[None, :]
        yp = self.cos * (yy - yh) + self.sin * (zz - zh) + yh
        zp = -self.sin * (yy - yh) + self.cos * (zz - zh) + zh
        rows = np.clip(np.rint((yp - self.yf0) / self.fine).astype(np.int64), 0, self.lo["s"].shape[0] - 1)
        fields = {key: v[rows] for key, v in self.lo.items()}  # nearest fine sample (spacing <= 0.25 mm)
        return fields, zp[..., None].astype(np.float32), yp[..., None].astype(np.float32)

    # -- painting
    def paint(self, lab: np.ndarray, z0: int, z1: int, with_metal: bool) -> None:
        a = self.a
        Z = self.z[z0:z1, None, None].astype(np.float32)
        lab[...] = np.where(self.face, _SOFT, _AIR)
        m = self.mouth
        lab[m["where"] & (Z > m["tongue"]) & (Z < m["roof"])] = _AIR
        # pharyngeal airway up to the nasal cavity
        py, pax, pay = a.pharynx
        airway = ((self.x[None, :] / pax) ** 2 + ((self.y[:, None] - py) / pay) ** 2 <= 1.0) & self.face
        lab[airway & (Z <= self._nasal_top())] = _AIR
        self._paint_maxilla(lab, Z)
        lower = None
        if self.z[z0:z1].min() <= a.hinge[1] + 5.0:
            lower = self.lower_coords(z0, z1)
            self._paint_mandible(lab, *lower)
        self._paint_teeth(lab, z0, z1, lower, with_metal)

    def _nasal_top(self) -> float:
        return float(max(t.z_cej for t in self.upper)) + 45.0

    def _paint_maxilla(self, lab, Z) -> None:
        a, f = self.a, self.up
        if Z.max() < float(f["crest"].min()) - 3.0:
            return
        N = self.n_up
        hz = Z - f["cej"]
        nb = f["n_t"] - hz * f["tan"]  # the bone follows the roots' inclination
        t = f["tc"] + (f["tb"] - f["tc"]) * np.clip(hz / 12.0, 0.0, 1.0)
        r, c = 3.0, 1.5
        below_top = Z <= f["top"]
        alveolar = _p4((N - nb) / t) + _p4(np.maximum(f["crest"] + r - Z, 0) / r) + f["end"] <= 1.0
        bone = (alveolar | (f["inside"] & (Z >= f["pal_low"]))) & below_top
        crest_in = _p4(np.maximum(f["crest"] + c + r - Z, 0) / r)
        alveolar_in = _p4((N - nb) / np.maximum(t - c, 0.5)) + crest_in + 1.6 * f["end"] <= 1.0
        body_in = f["inside"] & (self.y[:, None] <= a.y_palate_back - c) & (Z >= f["pal_low"] + 1.2)
        inner = (alveolar_in | body_in) & (Z <= f["top"] - c)
        lab[bone] = _CORT
        lab[inner & bone] = _TRAB
        # maxillary sinuses: air in a thin cortical wall
        for cx, cy, cz, rx, ry, rz in a.sinuses:
            w = 1.2
            zs = _range(Z.ravel(), cz - rz - w, cz + rz + w)
            ys, xs = _range(self.y, cy - ry - w, cy + ry + w), _range(self.x, cx - rx - w, cx + rx + w)
            if zs.start >= zs.stop or ys.start >= ys.stop or xs.start >= xs.stop:
                continue
            X = self.x[None, None, xs] - cx
            Y = self.y[None, ys, None] - cy
            Zs = Z[zs] - cz
            view = lab[zs, ys, xs]
            wall = (X / (rx + w)) ** 2 + (Y / (ry + w)) ** 2 + (Zs / (rz + w)) ** 2 <= 1.0
            view[wall & (view == _TRAB)] = _CORT
            view[(X / rx) ** 2 + (Y / ry) ** 2 + (Zs / rz) ** 2 <= 1.0] = _AIR
        # nasal cavity above the palate, with a cortical lining and septum
        w_n = a.nasal_half_width
        floor = f["nasal_floor"]  # (ny, nx)
        xs = _range(self.x, -w_n - 1.0, w_n + 1.0)
        ys = _range(self.y, a.y_front + 10.0, a.pharynx[0])
        if xs.start >= xs.stop or ys.start >= ys.stop:
            return
        X = self.x[None, None, xs]
        Y = self.y[None, ys, None]
        fl = floor[ys, xs]
        zt = self._nasal_top()
        view = lab[:, ys, xs]
        wall = (np.abs(X) <= w_n + 1.0) & (Z >= fl - 1.0) & (Z <= zt)
        view[wall & (view == _TRAB)] = _CORT
        cavity = (Y >= a.y_front + 11.0) & (np.abs(X) <= w_n) & (Z >= fl) & (Z <= zt)
        view[cavity] = _AIR
        view[cavity & (np.abs(X) <= 0.8) & (Y <= a.y_palate_back - 5.0)] = _CORT

    def _paint_mandible(self, lab, f, Zp, yp) -> None:
        a = self.a
        hz = f["cej"] - Zp
        nb = f["n_t"] - np.minimum(hz, f["root"]) * f["tan"]  # the bone follows the roots' inclination
        t = f["tc"] + (f["tb"] - f["tc"]) * np.clip(hz / 12.0, 0.0, 1.0)
        zm, hzb = (f["crest"] + f["bottom"]) / 2, (f["crest"] - f["bottom"]) / 2
        dn = f["n"] - nb
        bone = _p4(dn / t) + _p4((Zp - zm) / hzb) + f["end"] <= 1.0
        c_bot, c_top = 3.0, 0.8
        zm_in, hz_in = zm + (c_bot - c_top) / 2, hzb - (c_bot + c_top) / 2
        inner = _p4(dn / np.maximum(t - f["c_side"], 0.5)) + _p4((Zp - zm_in) / hz_in) + 1.6 * f["end"] <= 1.0
        lab[bone] = _CORT
        lab[bone & inner] = _TRAB
        dist2 = (dn + 0.5) ** 2 + (Zp - f["canal_z"]) ** 2
        canal = f["canal"] & (dist2 <= 1.6**2)
        lab[canal & (lab == _TRAB)] = _CORT
        lab[canal & (dist2 <= 1.2**2) & inner] = _SOFT
        # air under the chin, in front of the neck
        chin_z = float(np.interp(0.0, [t_.s for t_ in self.lower], [t_.z_cej for t_ in self.lower])) - 1.5 - a.body_height[0]
        below = (Zp < chin_z - 8.0) & (yp < a.y_front + 28.0)
        lab[below & (lab == _SOFT)] = _AIR

    def _paint_teeth(self, lab, z0, z1, lower, with_metal: bool) -> None:
        for t, (zs, ys, xs) in zip(self.a.teeth, self.bboxes, strict=True):
            lo_, hi_ = max(zs.start, z0), min(zs.stop, z1)
            if lo_ >= hi_ or ys.start >= ys.stop or xs.start >= xs.stop:
                continue
            if not t.present and not (with_metal and t.restoration == "implant"):
                continue
            sub = (slice(lo_ - z0, hi_ - z0), ys, xs)
            if t.upper:
                S, N = self.s_up[None, ys, xs], self.n_up[None, ys, xs]
                h = t.z_cej - self.z[lo_:hi_, None, None].astype(np.float32)
            else:
                fields, Zp, _ = lower
                S, N = fields["s"][sub], fields["n"][sub]
                h = Zp[sub[0], sub[1]] - t.z_cej
            w = (N - t.n) - h * t.tan_tilt
            u = t.side * (S - t.s) - h * t.tan_tip
            u, w, h = np.broadcast_arrays(u, w, h)
            view = lab[sub]
            if not t.present:  # an implant (only reached when metal is asked for)
                titanium, crown = _implant_masks(t, u, w, h)
                view[titanium] = _TI
                view[crown] = _ALLOY
                continue
            m = _tooth_masks(t, u, w, h)
            view[m["tooth"]] = _DENTIN
            view[m["enamel"]] = _ENAMEL
            view[m["pulp"]] = _PULP
            if with_metal and t.restoration in ("amalgam", "crown"):
                metal, label = _restoration_masks(t, u, w, h, m)
                view[metal] = label


def _texture_field(rng: np.random.Generator, spacing: float = 1.5, half: tuple[float, float, float] = (70.0, 70.0, 70.0)):
    """A smooth, unit-variance random field on a coarse grid over the anatomy frame: (values, origin, spacing)."""
    shape = tuple(int(2 * h / spacing) + 1 for h in half)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=1.2, mode="wrap")
    field /= field.std()
    origin = np.array([-h for h in half])
    return field.astype(np.float32), origin, spacing


# ---------------------------------------------------------------------------------------------------------- public
def dental_phantom_with_labels(
    grid: VolumeGrid,
    *,
    rng: np.random.Generator | int | None = 0,
    metal: bool = False,
    n_teeth: int | None = None,
    jaw_opening: float | None = None,
    missing_probability: float = 0.06,
    texture: float = 0.1,
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The dental phantom and its tissue labels on ``grid``; see :func:`dental_phantom` for the arguments.

    Returns:
        ``(volume, labels)``: (nz, ny, nx) float32 attenuation in mm⁻¹ and (nz, ny, nx) uint8 tissue labels
        (``Tissue.label`` of :data:`TISSUES`).
    """
    if not isinstance(grid, VolumeGrid):
        raise TypeError(f"grid must be a cbct.VolumeGrid, got {type(grid).__name__}")
    if not isinstance(metal, (bool, np.bool_)):
        raise TypeError(f"metal must be True or False, got {metal!r}")
    if n_teeth is not None:
        if isinstance(n_teeth, bool) or not isinstance(n_teeth, (int, np.integer)):
            raise TypeError(f"n_teeth must be an int (teeth per quadrant, 1 to 8) or None, got {n_teeth!r}")
        if not 1 <= n_teeth <= 8:
            raise ValueError(f"n_teeth must be between 1 and 8 teeth per quadrant, got {n_teeth}")
    if jaw_opening is not None and not (isinstance(jaw_opening, (int, float, np.floating)) and 0.0 <= jaw_opening <= 25.0):
        raise ValueError(f"jaw_opening must be an angle in degrees between 0 and 25, or None, got {jaw_opening!r}")
    if not (isinstance(missing_probability, (int, float, np.floating)) and 0.0 <= missing_probability < 1.0):
        raise ValueError(f"missing_probability must be in [0, 1), got {missing_probability!r}")
    if not (isinstance(texture, (int, float, np.floating)) and 0.0 <= texture <= 0.3):
        raise ValueError(f"texture must be a relative standard deviation in [0, 0.3], got {texture!r}")
    if scale is not None and not (isinstance(scale, (int, float, np.floating)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number or None, got {scale!r}")
    gen = as_generator(rng)
    started = time.perf_counter()
    seeds = gen.integers(0, 2**63 - 1, size=4)
    anatomy = _draw_anatomy(np.random.default_rng(seeds[0]), None if n_teeth is None else int(n_teeth),
                            float(missing_probability), None if jaw_opening is None else float(jaw_opening))
    if metal:
        anatomy = dataclasses.replace(anatomy, teeth=_draw_metal(np.random.default_rng(seeds[2]), anatomy.teeth))
    if scale is None:
        half = (grid.size[2] / 2, grid.size[1] / 2)
        scale = min(1.0, 0.96 * half[0] / _ADULT_HALF_EXTENT_XY[0], 0.96 * half[1] / _ADULT_HALF_EXTENT_XY[1])
    raster = _Raster(grid, anatomy, float(scale))
    labels = np.empty(grid.shape, np.uint8)
    volume = np.empty(grid.shape, np.float32)
    lut = np.array([t.mu for t in TISSUES], np.float32)
    if texture > 0:
        field, origin, spacing = _texture_field(np.random.default_rng(seeds[1]))
    nz, ny, nx = grid.shape
    chunk = max(1, (1 << 21) // (ny * nx))
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        raster.paint(labels[z0:z1], z0, z1, bool(metal))
        volume[z0:z1] = lut[labels[z0:z1]]
        if texture > 0:  # smooth multiplicative texture of trabecular bone, fixed in the anatomy frame
            k, j, i = np.nonzero(labels[z0:z1] == _TRAB)
            coords = np.stack([(raster.x[i] - origin[0]) / spacing, (raster.y[j] - origin[1]) / spacing,
                               (raster.z[z0 + k] - origin[2]) / spacing])
            noise = ndimage.map_coordinates(field, coords, order=1, mode="nearest")
            volume[z0 + k, j, i] *= 1.0 + float(texture) * np.clip(noise, -2.5, 2.5).astype(np.float32)
    logger.debug("dental phantom %s: scale %.3f, %.2f s", grid.shape, scale, time.perf_counter() - started)
    return volume, labels


def dental_phantom(
    grid: VolumeGrid,
    *,
    rng: np.random.Generator | int | None = 0,
    metal: bool = False,
    n_teeth: int | None = None,
    jaw_opening: float | None = None,
    missing_probability: float = 0.06,
    texture: float = 0.1,
    scale: float | None = None,
) -> np.ndarray:
    """A procedural dental phantom: (nz, ny, nx) float32 linear attenuation in mm⁻¹ on ``grid``.

    Args:
        grid: the voxel grid (any shape, voxel size and offset; the anatomy sits at the world origin).
        rng: seed or generator; the same seed gives the same phantom (``None``: fresh entropy).
        metal: add metal restorations (amalgam fillings, metal crowns, implants in gaps), at least one.
        n_teeth: teeth per quadrant counted from the midline (1 to 8; 8 includes the third molar). ``None``: seven,
            plus each third molar with probability 0.35. Teeth may also be missing at random.
        jaw_opening: mandible rotation about the condyles in degrees (0 = teeth in occlusion); ``None`` draws 0–7°.
        missing_probability: chance that each tooth is missing (its socket healed into bone).
        texture: relative standard deviation of the smooth texture of trabecular bone (0 for uniform bone).
        scale: size of the anatomy relative to an adult (``None``: 1, or smaller to fit a grid narrower than
            about 80 × 72 mm in ``(x, y)``).

    The tissue values are in :data:`TISSUES` (``MU`` by name); the module notes describe the anatomy and frame.
    """
    return dental_phantom_with_labels(
        grid, rng=rng, metal=metal, n_teeth=n_teeth, jaw_opening=jaw_opening,
        missing_probability=missing_probability, texture=texture, scale=scale,
    )[0]


def dental_phantom_grid(size: int = 256, fov: float = 90.0) -> VolumeGrid:
    """A typical dental CBCT field of view: a cube of ``fov`` mm (default 90) with ``size``³ voxels at the origin."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int (voxels per side), got {size!r}")
    if not (isinstance(fov, (int, float, np.floating)) and math.isfinite(fov) and fov > 0):
        raise ValueError(f"fov must be a positive length in mm, got {fov!r}")
    return VolumeGrid((int(size),) * 3, float(fov) / int(size))
