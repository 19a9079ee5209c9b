"""The random ellipsoid dental head (cbct.phantoms.random_head): seeds, size, teeth on small grids, options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cbct.constants import MU_WATER
from cbct.geometry import VolumeGrid
from cbct.phantoms.random_head import ADULT_RADIUS_MM, random_head_ellipsoids, random_head_volume

SMALL = VolumeGrid((12, 32, 32), 2.0)  # 24 x 64 x 64 mm, as SBP-MAC's tiny test scans


def _params(ellipsoids):
    return [dataclasses.astuple(e) for e in ellipsoids]


def test_a_seed_gives_one_head_and_an_int_seed_equals_its_generator():
    a = random_head_ellipsoids(3, 60.0)
    assert _params(a) == _params(random_head_ellipsoids(3, 60.0))
    assert _params(a) == _params(random_head_ellipsoids(np.random.default_rng(3), 60.0))
    assert _params(a) != _params(random_head_ellipsoids(4, 60.0))
    np.testing.assert_array_equal(random_head_volume(SMALL, 3, 26.0), random_head_volume(SMALL, np.random.default_rng(3), 26.0))


@pytest.mark.parametrize("radius", [26.0, 44.0, 85.0, 95.0])
def test_the_head_fits_its_radius(radius):
    n = 96
    grid = VolumeGrid((4, n, n), 2 * 1.1 * radius / n)
    c = (np.arange(n) - (n - 1) / 2) * grid.voxel_size[1]
    r = np.hypot(c[None, :], c[:, None])
    for seed in range(4):
        vol = random_head_volume(grid, seed, radius, inclusions=True)
        r_max = r[np.abs(vol).max(axis=0) > 0].max()
        assert 0.7 * radius < r_max <= 1.055 * radius + grid.voxel_size[1]


@pytest.mark.parametrize("seed", range(4))
def test_a_small_head_has_its_teeth_inside_a_small_grid(seed):
    radius = 26.0
    vol = random_head_volume(SMALL, seed, radius, height_scale=radius / ADULT_RADIUS_MM, supersample=2)
    assert (vol > 1.5 * MU_WATER).sum() > 50  # bone and teeth
    assert (vol > 2.5 * MU_WATER).any()  # enamel/dentine above bone
    # an adult-height head on the same grid: the arches lie above and below it
    adult = random_head_volume(SMALL, seed, radius, supersample=2)
    assert (adult > 1.5 * MU_WATER).sum() < (vol > 1.5 * MU_WATER).sum()


def test_options_change_only_what_they_say():
    plain = random_head_ellipsoids(7, 50.0)
    with_inclusions = random_head_ellipsoids(7, 50.0, inclusions=True)
    assert _params(with_inclusions[: len(plain)]) == _params(plain) and 3 <= len(with_inclusions) - len(plain) <= 8
    half = random_head_ellipsoids(7, 50.0, height_scale=0.5)
    for p, h in zip(plain, half):
        assert p.centre[:2] == h.centre[:2] and p.semi_axes[:2] == h.semi_axes[:2] and p.density == h.density
        assert h.centre[2] == pytest.approx(0.5 * p.centre[2]) and h.semi_axes[2] == pytest.approx(0.5 * p.semi_axes[2])
    raw = random_head_volume(SMALL, 0, 26.0)
    clipped = random_head_volume(SMALL, 0, 26.0, clip_at_zero=True)
    assert clipped.dtype == np.float32 and clipped.shape == SMALL.shape and clipped.min() >= 0
    np.testing.assert_array_equal(clipped, np.maximum(raw, 0))
