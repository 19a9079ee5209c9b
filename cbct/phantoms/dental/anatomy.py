"""The dental phantom's anatomy: tissues and their attenuation, the tooth tables, and the random draw of the
arches, the teeth and the metal restorations (in mm, in the anatomy's own frame)."""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
from scipy.spatial import cKDTree


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

AIR, SOFT, TRAB, CORT, PULP, DENTIN, ENAMEL, AMALGAM, ALLOY, TI = range(10)

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
ROOTS = {
    "single": (1.0, ((0.0, 0.0, 1.0, 1.0),)),
    "bucco_palatal": (0.45, ((0.0, 0.45, 0.85, 0.45), (0.0, -0.45, 0.85, 0.45))),
    "mesio_distal": (0.3, ((-0.5, 0.0, 0.42, 0.85), (0.5, 0.0, 0.42, 0.85))),
    "three": (0.3, ((-0.45, 0.45, 0.45, 0.45), (0.45, 0.45, 0.42, 0.42), (0.0, -0.5, 0.5, 0.45))),
}
ADULT_HALF_EXTENT_XY = (40.0, 36.0)  # (x, y) half-extent in mm the anatomy needs, before scaling to small grids


# ---------------------------------------------------------------------------------------------------------- layout
@dataclasses.dataclass(frozen=True)
class Tooth:
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
class Arch:
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
class Anatomy:
    """Every random draw of one phantom, in the anatomy's own frame (mm)."""

    arch: Arch
    teeth: tuple[Tooth, ...]  # all 32 positions, present or not
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

    def jaw_teeth(self, upper: bool) -> list[Tooth]:
        return sorted((t for t in self.teeth if t.upper == upper), key=lambda t: t.s)


def draw_anatomy(
    rng: np.random.Generator, n_teeth: int | None, missing_probability: float, opening_deg: float | None
) -> Anatomy:
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

    arch = Arch.build(half_width, depth, power, 0.0)
    teeth: list[Tooth] = []
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
                    Tooth(
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
    arch = Arch.build(half_width, depth, power, y0)
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
    return Anatomy(
        arch=arch, teeth=tuple(teeth), opening=math.radians(opening), hinge=hinge, z_shift=z_shift,
        palate_vault=palate_vault, palate_thickness=palate_thickness, tongue_gap=tongue_gap, body_height=body_height,
        face=(half_width + cheek + 12.0, lip), pharynx=pharynx, nasal_half_width=nasal_half_width,
        sinuses=tuple(sinuses), y_palate_back=y_palate_back, y_front=float(y0 - 3.5), ramus=ramus,
    )


def draw_metal(rng: np.random.Generator, teeth: tuple[Tooth, ...]) -> tuple[Tooth, ...]:
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
