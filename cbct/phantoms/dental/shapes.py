"""Implicit shapes of one tooth (crown, dentin, pulp, roots, restorations, implants) as masks over local
coordinates: ``u`` along the arch, ``w`` across it, ``h`` up (mm)."""

from __future__ import annotations

import numpy as np

from cbct.phantoms.dental.anatomy import ALLOY, AMALGAM, ROOTS, Arch, Tooth


def _se(u, a, w, b, q: float):
    """Superellipse level ``|u/a|^q + |w/b|^q`` (inside where <= 1)."""
    return np.abs(u / np.maximum(a, 1e-3)) ** q + np.abs(w / np.maximum(b, 1e-3)) ** q


def _taper(t):
    """Root half-width profile along the root, 1 at the cervix (t = 0), 0 at the apex (t = 1)."""
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(1.0 - t**1.5) * (1.0 - 0.5 * t)


def _crown_profile(t: Tooth, h):
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


def _crown_top(t: Tooth, u, w):
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


def tooth_masks(t: Tooth, u, w, h) -> dict[str, np.ndarray]:
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
    trunk_frac, layout = ROOTS[t.roots]
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


def restoration_masks(t: Tooth, u, w, h, m: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
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
        return m["crown"] & box & (h >= bottom), AMALGAM
    # full metal crown over a prepared stump 1.5 mm inside the outer surface
    ah, bh, q = _crown_profile(t, h)
    stump = (h <= m["top"] - 2.0) & (_se(u, ah - 1.5, w, bh - 1.5, q) <= 1.0)
    return m["crown"] & ~stump, ALLOY


def implant_masks(t: Tooth, u, w, h) -> tuple[np.ndarray, np.ndarray]:
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


def tooth_bbox(t: Tooth, arch: Arch) -> tuple[np.ndarray, np.ndarray]:
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
