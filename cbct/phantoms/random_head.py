"""The random ellipsoid dental head: fast, varied training anatomy for the learned stages (BBC, SBP-MAC).

A head of ~150 ellipsoids and elliptic cylinders (world mm, ``z`` up): soft tissue, sinus / nasal cavity,
airway, cervical spine with its canal, rami and zygoma, the mandible and maxilla arches (cortical bone with
marrow) and up to 28 teeth along them (crown, root, pulp; some missing; metal fillings in some molars), optionally
random inclusions (lesions, cavities, bone islands). Densities add (mm⁻¹). Every seed gives another size, shape,
turn about the axis, shift and height. :func:`random_head_ellipsoids` returns the ellipsoids (for exact line
integrals, :func:`cbct.phantoms.ellipsoids.line_integrals`), :func:`random_head_volume` voxelises them on a grid.

How it relates to :mod:`cbct.phantoms.dental`: that is the *detailed anatomical jaw* (mandible with its canal and
cortical shell, maxilla, sinuses, teeth per type with cusps and roots, textured trabecular bone, implants), built
on the grid of a dental field of view; it is the CLI's and the demos' phantom and the tests check it bit for bit.
This one is the *fast random head* for training variety: a whole head of any radius (≈20-95 mm), wider or narrower
than the field of view, in any turn and shift, with exact line integrals available. The learned stages' shipped
configs train on both (BBC data kinds ``"dental"`` and ``"dental_ellipsoids"``, SBP-MAC sources ``"dental"`` and
``"ellipsoids"``).
"""

from __future__ import annotations

import numpy as np

from cbct.constants import MU_WATER
from cbct.geometry import VolumeGrid
from cbct.phantoms.ellipsoids import Ellipsoid, voxelize
from cbct.rng import as_generator

__all__ = ["ADULT_RADIUS_MM", "random_head_ellipsoids", "random_head_volume"]

ADULT_RADIUS_MM = 85.0  # the radius the head's sizes are given for; height_scale=radius/this scales it uniformly

_Part = tuple[float, tuple[float, float, float], tuple[float, float, float], float, bool]


def random_head_ellipsoids(
    rng: np.random.Generator | int, radius_mm: float = ADULT_RADIUS_MM, *, height_scale: float = 1.0,
    inclusions: bool = False,
) -> list[Ellipsoid]:
    """A random dental head of ellipsoids (world mm, ``z`` up, anterior towards ``+y`` before a random turn).

    Args:
        rng: generator or seed (:func:`cbct.rng.as_generator`); an int seed and ``default_rng`` of it agree.
        radius_mm: the head (x, y) is ``radius_mm / 85`` times an adult's, times a random 0.85-1; it lies within
            ``1.055 * radius_mm`` of the axis (semi-axes up to ``0.99 * radius_mm``, shift up to ``0.067 * radius_mm``).
        height_scale: factor on every z position and z semi-axis (1: adult heights whatever the radius, the jaw
            spans z ≈ -50..45 mm; ``radius_mm / ADULT_RADIUS_MM``: a uniformly scaled head, for small grids).
        inclusions: add 3-8 random ellipsoids of -0.5..0.8 times water (lesions, cavities, bone islands) inside
            the head, drawn after everything else (``False`` draws nothing: the same head as without the option).

    Densities add (mm⁻¹): soft tissue ~0.02, cortical bone +0.02..0.03 above it, enamel/dentine +0.03..0.05,
    metal fillings (probability 0.3 per arch) +0.15..0.3.
    """
    g = as_generator(rng)
    s = radius_mm / ADULT_RADIUS_MM * g.uniform(0.85, 1.0)  # overall size
    turn = g.uniform(0, 2 * np.pi)
    shift = g.uniform(-4, 4, size=2) * s
    z0 = g.uniform(-10, 10)
    parts: list[_Part] = []
    mu = MU_WATER * g.uniform(0.95, 1.05)
    # head and soft tissue
    head_a, head_b = g.uniform(68, 76) * s, g.uniform(78, 84) * s
    parts.append((mu, (0, 0, 0), (head_a, head_b, 110), 0.0, True))
    parts.append((-0.3 * mu, (0, -8 * s, 35), (g.uniform(50, 58) * s, g.uniform(58, 66) * s, 25), 0.0, False))  # sinus / nasal cavity
    parts.append((-mu, (0, g.uniform(-22, -14) * s, 0), (g.uniform(7, 11) * s, g.uniform(6, 9) * s, 60), g.uniform(-0.3, 0.3), True))  # airway
    # cervical spine with its canal
    parts.append((0.6 * mu, (0, -50 * s, -10), (12 * s, 11 * s, 80), 0.0, True))
    parts.append((-0.5 * mu, (0, -56 * s, -10), (5 * s, 5 * s, 80), 0.0, True))
    # lateral bones (rami, zygoma)
    for side in (-1, 1):
        parts.append((0.9 * mu, (side * 52 * s, -18 * s, -10), (5 * s, 14 * s, 28), side * g.uniform(0.15, 0.35), False))
        parts.append((0.7 * mu, (side * 55 * s, 10 * s, 38), (6 * s, 18 * s, 7), side * 0.3, False))
    for zb, zt, tooth_dir in ((-30.0, -12.0, 1.0), (28.0, 10.0, -1.0)):
        parts += _arch(g, s, mu, zb + z0 * 0.2, zt + z0 * 0.2, tooth_dir)
    if inclusions:
        for _ in range(int(g.integers(3, 9))):
            r, t = np.sqrt(g.uniform(0, 1)) * 0.6, g.uniform(0, 2 * np.pi)
            parts.append((mu * g.uniform(-0.5, 0.8), (r * head_a * np.cos(t), r * head_b * np.sin(t), g.uniform(-45, 45)),
                          (g.uniform(2, 8) * s, g.uniform(2, 8) * s, g.uniform(2, 10)), g.uniform(0, np.pi), False))
    c, sn = np.cos(turn), np.sin(turn)
    out = []
    for dens, (x, y, z), (ax, ay, az), phi, cyl in parts:
        xr, yr = c * x - sn * y + shift[0], sn * x + c * y + shift[1]
        centre = (float(xr), float(yr), float((z + z0) * height_scale))
        out.append(Ellipsoid(float(dens), centre, (float(ax), float(ay), float(az * height_scale)), float(phi + turn), cyl))
    return out


def _arch(g: np.random.Generator, s: float, mu: float, z_bone: float, z_crown: float, tooth_dir: float) -> list[_Part]:
    """One jaw: 16 bone segments with marrow along a U-shaped arch and 14 teeth (crown at ``z_crown``, root
    towards ``-tooth_dir``), about 8 % missing; with probability 0.3 metal fillings in about half the molars."""
    parts: list[_Part] = []
    width = g.uniform(40, 48) * s
    depth = g.uniform(42, 50) * s
    y_front = g.uniform(38, 46) * s
    for a in np.linspace(-np.pi / 2 * 0.95, np.pi / 2 * 0.95, 16):
        x, y = width * np.sin(a), y_front - depth * (1 - np.cos(a))
        phi = np.arctan2(depth * np.sin(a), width * np.cos(a))  # tangent direction of the arch
        parts.append((1.1 * mu, (x, y, z_bone), (7.0 * s, 5.5 * s, 12.0), phi, False))
        parts.append((-0.5 * mu, (x, y, z_bone), (4.0 * s, 3.0 * s, 8.0), phi, False))  # marrow
    metal = g.random() < 0.3
    for a in np.linspace(-np.pi / 2 * 0.9, np.pi / 2 * 0.9, 14):
        if g.random() < 0.08:
            continue  # missing tooth
        x, y = width * np.sin(a), y_front - depth * (1 - np.cos(a))
        phi = np.arctan2(depth * np.sin(a), width * np.cos(a))
        molar = abs(a) > 0.9
        cw = (4.5 if molar else 3.2) * s * g.uniform(0.9, 1.1)
        ch = (5.0 if molar else 3.0) * s * g.uniform(0.9, 1.1)
        d_t = mu * g.uniform(1.6, 2.4)
        parts.append((d_t, (x, y, z_crown), (cw, ch, 5.0), phi, False))  # crown
        parts.append((0.8 * d_t, (x, y, z_crown - tooth_dir * 11), (0.5 * cw, 0.55 * ch, 8.0), phi, False))  # root
        parts.append((-0.6 * d_t, (x, y, z_crown - tooth_dir * 3), (0.3 * cw, 0.3 * ch, 5.0), phi, False))  # pulp
        if metal and molar and g.random() < 0.5:
            parts.append((g.uniform(0.15, 0.3), (x, y, z_crown + tooth_dir * 2.5), (0.5 * cw, 0.5 * ch, 1.8), phi, False))
    return parts


def random_head_volume(
    grid: VolumeGrid, rng: np.random.Generator | int, radius_mm: float = ADULT_RADIUS_MM, *, height_scale: float = 1.0,
    inclusions: bool = False, supersample: int = 1, clip_at_zero: bool = False,
) -> np.ndarray:
    """:func:`random_head_ellipsoids` (same arguments) voxelised on ``grid``: (z, y, x) float32 in mm⁻¹.

    ``supersample``: sub-points per voxel edge (partial volumes at the edges of teeth on coarse grids).
    ``clip_at_zero``: set negative voxels to 0. The densities add, and where the airway crosses the sinus they sum
    to -0.3 times water (about 0.1 % of the head's voxels); BBC's training data keep that (its numbers depend on it).
    """
    ellipsoids = random_head_ellipsoids(rng, radius_mm, height_scale=height_scale, inclusions=inclusions)
    vol = voxelize(ellipsoids, grid, supersample=supersample)
    return np.maximum(vol, np.float32(0.0)) if clip_at_zero else vol
