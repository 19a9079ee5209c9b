"""Rasterisation of the anatomy onto a voxel grid (tissue labels at voxel centres) and the trabecular texture."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cbct.geometry import VolumeGrid
from cbct.phantoms.dental.anatomy import AIR, ALLOY, CORT, DENTIN, ENAMEL, PULP, SOFT, TI, TRAB, Anatomy, Tooth
from cbct.phantoms.dental.shapes import implant_masks, restoration_masks, tooth_bbox, tooth_masks


def _p4(x):
    """``x ** 4`` with two multiplications."""
    x2 = x * x
    return x2 * x2


def _range(coord: np.ndarray, lo: float, hi: float) -> slice:
    """Index range of the sorted coordinates ``coord`` within ``[lo, hi]``."""
    return slice(int(np.searchsorted(coord, lo, side="left")), int(np.searchsorted(coord, hi, side="right")))


class Raster:
    """Voxel coordinates of a grid in the anatomy frame, fields along the arches, and the painting of a slab."""

    def __init__(self, grid: VolumeGrid, anatomy: Anatomy, scale: float):
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
    def _knots(teeth: list[Tooth]) -> dict[str, np.ndarray]:
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

    def _index_box(self, t: Tooth) -> tuple[slice, slice, slice]:
        lo, hi = tooth_bbox(t, self.a.arch)
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
        lab[...] = np.where(self.face, SOFT, AIR)
        m = self.mouth
        lab[m["where"] & (Z > m["tongue"]) & (Z < m["roof"])] = AIR
        # pharyngeal airway up to the nasal cavity
        py, pax, pay = a.pharynx
        airway = ((self.x[None, :] / pax) ** 2 + ((self.y[:, None] - py) / pay) ** 2 <= 1.0) & self.face
        lab[airway & (Z <= self._nasal_top())] = AIR
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
        lab[bone] = CORT
        lab[inner & bone] = TRAB
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
            view[wall & (view == TRAB)] = CORT
            view[(X / rx) ** 2 + (Y / ry) ** 2 + (Zs / rz) ** 2 <= 1.0] = AIR
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
        view[wall & (view == TRAB)] = CORT
        cavity = (Y >= a.y_front + 11.0) & (np.abs(X) <= w_n) & (Z >= fl) & (Z <= zt)
        view[cavity] = AIR
        view[cavity & (np.abs(X) <= 0.8) & (Y <= a.y_palate_back - 5.0)] = CORT

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
        lab[bone] = CORT
        lab[bone & inner] = TRAB
        dist2 = (dn + 0.5) ** 2 + (Zp - f["canal_z"]) ** 2
        canal = f["canal"] & (dist2 <= 1.6**2)
        lab[canal & (lab == TRAB)] = CORT
        lab[canal & (dist2 <= 1.2**2) & inner] = SOFT
        # air under the chin, in front of the neck
        chin_z = float(np.interp(0.0, [t_.s for t_ in self.lower], [t_.z_cej for t_ in self.lower])) - 1.5 - a.body_height[0]
        below = (Zp < chin_z - 8.0) & (yp < a.y_front + 28.0)
        lab[below & (lab == SOFT)] = AIR

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
                titanium, crown = implant_masks(t, u, w, h)
                view[titanium] = TI
                view[crown] = ALLOY
                continue
            m = tooth_masks(t, u, w, h)
            view[m["tooth"]] = DENTIN
            view[m["enamel"]] = ENAMEL
            view[m["pulp"]] = PULP
            if with_metal and t.restoration in ("amalgam", "crown"):
                metal, label = restoration_masks(t, u, w, h, m)
                view[metal] = label


def texture_field(rng: np.random.Generator, spacing: float = 1.5, half: tuple[float, float, float] = (70.0, 70.0, 70.0)):
    """A smooth, unit-variance random field on a coarse grid over the anatomy frame: (values, origin, spacing)."""
    shape = tuple(int(2 * h / spacing) + 1 for h in half)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=1.2, mode="wrap")
    field /= field.std()
    origin = np.array([-h for h in half])
    return field.astype(np.float32), origin, spacing
