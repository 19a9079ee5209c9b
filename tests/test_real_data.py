"""Loaders of the real head volumes: shapes, orientation, units, data folder resolution, checksums, errors; and the
checksums and licenses of the real files vendored in ``tests/data``."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
import scipy.io

from cbct import VolumeGrid
from cbct.io.manifest import load_manifest, sha256_file
from cbct.phantoms.real import (
    ENV_VAR,
    HEAD_MHA_MU_PER_UNIT,
    SHA256,
    TIGRE_HEAD_MU_PER_UNIT,
    data_dir as default_data_dir,
    load_head_mha,
    load_tigre_head,
)

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
VENDORED = REPO_DIR / "tests" / "data"


@pytest.fixture(scope="module")
def head_mha(data_file):
    return load_head_mha(data_file("head.mha"))


@pytest.fixture(scope="module")
def tigre_head(data_file):
    return load_tigre_head(data_file("head_phantom.mat"))


def _soft_tissue_mode(vol: np.ndarray) -> float:
    soft = vol[(vol > 0.01) & (vol < 0.03)]
    counts, edges = np.histogram(soft, bins=40)
    return float(edges[counts.argmax()] + (edges[1] - edges[0]) / 2)  # centre of the fullest bin


def _anterior_bone(vol: np.ndarray, z: int) -> bool:
    """At jaw / face level the bone's y-centroid lies in front (lower y) of the head's."""
    y = np.arange(vol.shape[1])
    bone = (vol[z] > 0.035).sum(axis=1)
    head = (vol[z] > 0.01).sum(axis=1)
    return (bone * y).sum() / bone.sum() < (head * y).sum() / head.sum() - 5


def test_vendored_files_match_their_manifest_and_carry_their_licenses():
    manifest = load_manifest(REPO_DIR / "data_manifests" / "test_data.yaml")
    vendored = {p.name for p in VENDORED.iterdir() if not p.name.startswith("LICENSE")}
    assert vendored == {e.checksum_target().name for e in manifest}  # every file in tests/data is recorded
    for entry in manifest:
        target = entry.checksum_target().resolve()
        assert target.parent == VENDORED
        assert sha256_file(target) == entry.sha256 == SHA256[target.name]
        entry.verify()
        license_file = entry.base_dir / entry.provenance["license_file"]
        assert license_file.parent.resolve() == VENDORED and license_file.stat().st_size > 500
        assert entry.provenance["source"] and entry.provenance["license"]


def test_default_data_dir_is_the_shared_folder(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_data_dir().resolve() == (REPO_DIR.parent / "shared" / "data").resolve()


def test_head_mha_shape_grid_units_orientation(head_mha, data_file):
    vol, grid = head_mha
    assert isinstance(grid, VolumeGrid)
    assert vol.shape == grid.shape == (93, 64, 64)
    assert vol.dtype == np.float32 and vol.flags.c_contiguous
    assert grid.voxel_size == (1.5, 3.2, 3.2) and grid.offset == (0.0, 0.0, 0.0)
    # the file read independently: little-endian uint16 after the header, x fastest; flipped in z and y
    raw = data_file("head.mha").read_bytes()
    assert b"ElementDataFile = LOCAL" in raw
    stored = np.frombuffer(raw[-93 * 64 * 64 * 2 :], dtype="<u2").reshape(93, 64, 64)
    np.testing.assert_allclose(vol, stored[::-1, ::-1, :] * HEAD_MHA_MU_PER_UNIT, rtol=1e-6)
    # units: air ~0, soft tissue ~0.019 mm⁻¹, bone above
    assert vol.min() == 0.0 and vol.max() == pytest.approx(3926 * 0.019 / 1000, rel=1e-5)
    assert _soft_tissue_mode(vol) == pytest.approx(0.019, rel=0.12)
    # orientation: the head widens from the neck (z index 0) up to the cranium; the jaw lies at low y
    area = (vol > 0.01).sum(axis=(1, 2))
    assert area[-10:].mean() > 1.4 * area[:10].mean()
    assert _anterior_bone(vol, 18)


def test_tigre_head_shape_grid_units_orientation(tigre_head, data_file):
    vol, grid = tigre_head
    assert vol.shape == grid.shape == (256, 256, 256)
    assert vol.dtype == np.float32 and vol.flags.c_contiguous
    assert grid.voxel_size == (0.9, 0.9, 0.9) and grid.offset == (0.0, 0.0, 0.0)
    stored = scipy.io.loadmat(data_file("head_phantom.mat"))["img"].transpose(2, 1, 0)
    np.testing.assert_allclose(vol, stored * TIGRE_HEAD_MU_PER_UNIT, rtol=1e-6)
    assert vol.min() == 0.0 and vol.max() == pytest.approx(0.0475, rel=1e-5)
    assert _soft_tissue_mode(vol) == pytest.approx(0.019, rel=0.05)
    # orientation: the top of the skull at high z (nothing in the last slices), the face at low y
    area = (vol > 0.01).sum(axis=(1, 2))
    assert area[-20:].max() == 0 and area[205] < 0.3 * area[100]
    assert _anterior_bone(vol, 50)
    # a head-sized field: about 150 mm broad
    breadth = np.ptp(np.flatnonzero((vol > 0.01).any(axis=(0, 1)))) * grid.voxel_size[2]
    assert 130.0 < breadth < 170.0


def test_other_voxel_size_for_tigre_head(data_file):
    _, grid = load_tigre_head(data_file("head_phantom.mat"), voxel_size=1.0)
    assert grid.voxel_size == (1.0, 1.0, 1.0) and grid.size == (256.0, 256.0, 256.0)


def test_bad_voxel_size_for_tigre_head():
    with pytest.raises(ValueError, match="voxel_size"):
        load_tigre_head(voxel_size=0.0)


def test_checksums_verify(tmp_path, data_file):
    load_head_mha(data_file("head.mha"), verify=True)
    bad = tmp_path / "head.mha"
    shutil.copyfile(data_file("head.mha"), bad)
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 0xFF
    bad.write_bytes(bytes(raw))
    load_head_mha(bad)  # loads without verification
    with pytest.raises(ValueError, match="sha256"):
        load_head_mha(bad, verify=True)


def test_tigre_head_checksum_verifies(data_file):
    load_tigre_head(data_file("head_phantom.mat"), verify=True)


def test_environment_variable_overrides_the_folder(monkeypatch, tmp_path, data_file):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert default_data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "head.mha")):
        load_head_mha()
    with pytest.raises(FileNotFoundError, match="head_phantom.mat"):
        load_tigre_head()
    shutil.copyfile(data_file("head.mha"), tmp_path / "head.mha")
    vol, _ = load_head_mha()
    assert vol.shape == (93, 64, 64)


def test_missing_explicit_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "head.mha"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_head_mha(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tigre_head(tmp_path / "nowhere" / "head.mat")
