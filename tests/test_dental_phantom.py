"""The procedural dental phantom: reproducibility, tissue values, tooth structure, metal, grids, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cbct import VolumeGrid
from cbct.phantoms import dental_phantom
from cbct.phantoms.dental import LABEL, MU, TISSUES, dental_phantom_grid, dental_phantom_with_labels

METAL = [LABEL["amalgam"], LABEL["crown_alloy"], LABEL["titanium"]]


@pytest.fixture(scope="module")
def small_grid() -> VolumeGrid:
    return dental_phantom_grid(64)


@pytest.fixture(scope="module")
def seed3(small_grid):
    return dental_phantom_with_labels(small_grid, rng=3)


def test_grid_is_a_dental_field_of_view():
    grid = dental_phantom_grid(128)
    assert grid.shape == (128, 128, 128)
    assert grid.size == pytest.approx((90.0, 90.0, 90.0))
    assert grid.offset == (0.0, 0.0, 0.0)
    assert dental_phantom_grid(100, fov=80.0).voxel_size == pytest.approx((0.8, 0.8, 0.8))


def test_reproducible_for_a_seed_and_different_across_seeds(small_grid, seed3):
    vol, _ = seed3
    again = dental_phantom(small_grid, rng=3)
    np.testing.assert_array_equal(vol, again)
    np.testing.assert_array_equal(vol, dental_phantom(small_grid, rng=np.random.default_rng(3)))
    other = dental_phantom(small_grid, rng=4)
    assert np.mean(vol != other) > 0.01
    assert vol.dtype == np.float32 and vol.flags.c_contiguous and vol.shape == small_grid.shape


def test_tissue_classes_present_with_documented_values():
    grid = dental_phantom_grid(96)
    vol, lab = dental_phantom_with_labels(grid, rng=1, texture=0.0)
    present = set(np.unique(lab).tolist())
    for name in ("air", "soft_tissue", "trabecular_bone", "cortical_bone", "pulp", "dentin", "enamel"):
        assert LABEL[name] in present, name
    assert not present & set(METAL)
    lut = np.array([t.mu for t in TISSUES], np.float32)
    np.testing.assert_array_equal(vol, lut[lab])
    assert MU["soft_tissue"] == pytest.approx(0.019) and MU["air"] == 0.0
    assert 0.08 <= MU["enamel"] <= 0.09 and 0.05 <= MU["dentin"] <= 0.06 and MU["pulp"] == pytest.approx(0.02)
    assert MU["cortical_bone"] == pytest.approx(0.05) and MU["trabecular_bone"] == pytest.approx(0.03)
    # soft tissue and air dominate; teeth are a small but real part of a dental field of view
    frac = np.bincount(lab.ravel(), minlength=len(TISSUES)) / lab.size
    assert frac[LABEL["soft_tissue"]] > 0.3 and frac[LABEL["air"]] > 0.05
    assert 0.005 < frac[LABEL["enamel"]] + frac[LABEL["dentin"]] < 0.1


def test_texture_only_modulates_trabecular_bone(seed3):
    vol, lab = seed3  # default texture 0.1
    lut = np.array([t.mu for t in TISSUES], np.float32)
    trab = lab == LABEL["trabecular_bone"]
    np.testing.assert_array_equal(vol[~trab], lut[lab][~trab])
    rel = vol[trab] / MU["trabecular_bone"] - 1
    assert rel.std() > 0.02 and np.abs(rel).max() <= 0.25 + 1e-6


def test_enamel_outside_dentin_outside_pulp():
    # a fine grid (0.25 mm) over the left molars and premolars of both jaws, anatomy at full size
    grid = VolumeGrid((200, 64, 64), 0.25, (2.0, 10.0, 22.0))
    _, lab = dental_phantom_with_labels(grid, rng=5, scale=1.0, missing_probability=0.0)
    pulp, dentin, enamel = (lab == LABEL[k] for k in ("pulp", "dentin", "enamel"))
    assert pulp.sum() > 200 and dentin.sum() > 5000 and enamel.sum() > 2000
    six = ndimage.generate_binary_structure(3, 1)
    around_pulp = ndimage.binary_dilation(pulp, six) & ~pulp
    # pulp is enclosed by dentin: none of its neighbours is enamel, bone, soft tissue or air
    assert set(np.unique(lab[around_pulp]).tolist()) <= {LABEL["dentin"]}
    around_enamel = ndimage.binary_dilation(enamel, six) & ~enamel
    neighbours = np.bincount(lab[around_enamel], minlength=len(TISSUES))
    assert neighbours[LABEL["pulp"]] == 0
    assert neighbours[LABEL["dentin"]] > 500  # enamel caps the dentin
    # enamel sits on the crowns: outside bone (roots are in bone, crowns are not)
    assert neighbours[LABEL["trabecular_bone"]] == 0
    # each crown: going from the occlusal surface towards the root, enamel comes before dentin before pulp
    z = np.arange(lab.shape[0])
    columns = np.argwhere(pulp.any(axis=0) & enamel.any(axis=0))
    assert len(columns) > 10
    for j, i in columns[:: max(1, len(columns) // 25)]:
        col = lab[:, j, i]
        lower = z < lab.shape[0] // 2 + 4  # lower jaw below the occlusal plane (world z ~ 2 mm)
        for part, occlusal_up in ((lower, True), (~lower, False)):
            e, d, p = (np.flatnonzero((col == LABEL[k]) & part) for k in ("enamel", "dentin", "pulp"))
            if len(e) and len(p):
                first = (lambda a: a.max()) if occlusal_up else (lambda a: a.min())
                assert (first(e) > first(d) > first(p)) if occlusal_up else (first(e) < first(d) < first(p))


def test_metal_only_when_asked_and_anatomy_unchanged(small_grid, seed3):
    vol, lab = seed3
    assert not np.isin(lab, METAL).any() and vol.max() < 0.1
    vol_m, lab_m = dental_phantom_with_labels(small_grid, rng=3, metal=True)
    metal = np.isin(lab_m, METAL)
    assert metal.sum() > 0
    assert vol_m.max() >= MU["titanium"]
    # same seed, same anatomy: the volumes differ only where metal is
    np.testing.assert_array_equal(vol_m[~metal], vol[~metal])


def test_metal_restorations_vary_with_the_seed():
    grid = dental_phantom_grid(48)
    counts = {s: np.isin(dental_phantom_with_labels(grid, rng=s, metal=True)[1], METAL).sum() for s in range(4)}
    assert all(c > 0 for c in counts.values())
    assert len(set(counts.values())) > 1


@pytest.mark.parametrize(
    "shape, voxel, offset",
    [
        ((40, 50, 60), (1.5, 1.2, 1.0), (0.0, 0.0, 0.0)),
        ((10, 32, 24), (3.0, 2.5, 3.5), (5.0, -3.0, 2.0)),
        ((3, 4, 5), 20.0, 0.0),
    ],
)
def test_any_grid_works(shape, voxel, offset):
    grid = VolumeGrid(shape, voxel, offset)
    vol = dental_phantom(grid, rng=0)
    assert vol.shape == shape and vol.dtype == np.float32 and np.all(np.isfinite(vol))
    assert vol.min() >= 0 and vol.max() <= 0.1


def test_same_anatomy_on_coarse_and_anisotropic_grids():
    # the anatomy is fixed in world coordinates: tissue fractions agree between grids of the same field of view
    iso = dental_phantom_with_labels(VolumeGrid((72, 72, 72), 1.25), rng=2, texture=0.0)[1]
    aniso = dental_phantom_with_labels(VolumeGrid((45, 90, 75), (2.0, 1.0, 1.2)), rng=2, texture=0.0)[1]
    f_iso = np.bincount(iso.ravel(), minlength=len(TISSUES)) / iso.size
    f_aniso = np.bincount(aniso.ravel(), minlength=len(TISSUES)) / aniso.size
    for name in ("soft_tissue", "air", "trabecular_bone", "cortical_bone", "dentin"):
        assert f_aniso[LABEL[name]] == pytest.approx(f_iso[LABEL[name]], rel=0.2), name


def test_small_grids_get_a_scaled_anatomy():
    # both fields of view are narrower than an adult jaw: half the field of view, half the anatomy, the same picture
    full = dental_phantom_with_labels(dental_phantom_grid(64, fov=70.0), rng=0, texture=0.0)[1]
    small = dental_phantom_with_labels(dental_phantom_grid(64, fov=35.0), rng=0, texture=0.0)[1]
    assert np.mean(full != small) < 0.02
    teeth = [LABEL["enamel"], LABEL["dentin"]]
    assert np.isin(small, teeth).sum() == pytest.approx(np.isin(full, teeth).sum(), rel=0.05)


def test_n_teeth_and_jaw_opening():
    grid = dental_phantom_grid(64)
    teeth = [LABEL["enamel"], LABEL["dentin"], LABEL["pulp"]]
    few = np.isin(dental_phantom_with_labels(grid, rng=0, n_teeth=3)[1], teeth).sum()
    many = np.isin(dental_phantom_with_labels(grid, rng=0, n_teeth=8)[1], teeth).sum()
    assert 0 < few < 0.5 * many
    closed = dental_phantom_with_labels(grid, rng=0, jaw_opening=0.0)[1]
    open_ = dental_phantom_with_labels(grid, rng=0, jaw_opening=12.0)[1]
    z_world = (np.arange(64) - 31.5) * grid.voxel_size[0]
    top = z_world > 20.0  # the maxilla and above do not move with the mandible
    np.testing.assert_array_equal(closed[top], open_[top])
    assert np.mean(closed[z_world < 0] != open_[z_world < 0]) > 0.02


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(grid=(64, 64, 64)), TypeError, "grid must be a cbct.VolumeGrid"),
        (dict(n_teeth=0), ValueError, "n_teeth"),
        (dict(n_teeth=9), ValueError, "n_teeth"),
        (dict(n_teeth=2.5), TypeError, "n_teeth"),
        (dict(metal="yes"), TypeError, "metal"),
        (dict(rng="seed"), TypeError, "rng"),
        (dict(rng=-1), ValueError, "rng"),
        (dict(jaw_opening=-2.0), ValueError, "jaw_opening"),
        (dict(missing_probability=1.0), ValueError, "missing_probability"),
        (dict(texture=0.9), ValueError, "texture"),
        (dict(scale=0.0), ValueError, "scale"),
    ],
)
def test_bad_arguments_raise(kwargs, exc, words):
    args = dict(grid=VolumeGrid((4, 4, 4), 20.0))
    args.update(kwargs)
    grid = args.pop("grid")
    with pytest.raises(exc, match=words):
        dental_phantom(grid, **args)


def test_bad_grid_sizes_raise():
    with pytest.raises(ValueError, match="size"):
        dental_phantom_grid(0)
    with pytest.raises(ValueError, match="fov"):
        dental_phantom_grid(64, fov=-1.0)


def test_roots_and_implants_sit_in_bone():
    _, lab = dental_phantom_with_labels(dental_phantom_grid(128), rng=7, metal=True)
    bone = [LABEL["trabecular_bone"], LABEL["cortical_bone"]]
    outside = [LABEL["soft_tissue"], LABEL["air"]]
    for name in ("dentin", "titanium"):
        part = lab == LABEL[name]
        assert part.sum() > 50, name
        ring = lab[ndimage.binary_dilation(part) & ~part]
        in_bone, exposed = np.isin(ring, bone).sum(), np.isin(ring, outside).sum()
        assert in_bone > 2.5 * exposed, name  # roots in the jaw; crowns covered by enamel, the abutment by gingiva
    # the maxillary sinuses and the nasal cavity are air inside the maxilla, above the occlusal plane
    z_world = (np.arange(128) - 63.5) * 90 / 128
    air = lab == LABEL["air"]
    assert air[z_world > 25].mean() > air[(z_world > -20) & (z_world < -5)].mean()
