"""Loaders of the real head volumes: shapes, orientation, units, data folder resolution, checksums, errors."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
import scipy.io

from cbct import VolumeGrid
from cbct.phantoms.real import (
    ENV_VAR,
    HEAD_MHA_MU_PER_UNIT,
    TIGRE_HEAD_MU_PER_UNIT,
    data_dir as default_data_dir,
    load_head_mha,
    load_tigre_head,
)


@pytest.fixture(scope="module")
def head_mha():
    return load_head_mha()


@pytest.fixture(scope="module")
def tigre_head():
    return load_tigre_head()


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


def test_default_data_dir_is_the_shared_folder(monkeypatch, data_dir):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_data_dir().resolve() == pathlib.Path(data_dir).resolve()


def test_head_mha_shape_grid_units_orientation(head_mha, data_dir):
    vol, grid = head_mha
    assert isinstance(grid, VolumeGrid)
    assert vol.shape == grid.shape == (93, 64, 64)
    assert vol.dtype == np.float32 and vol.flags.c_contiguous
    assert grid.voxel_size == (1.5, 3.2, 3.2) and grid.offset == (0.0, 0.0, 0.0)
    # the file read independently: little-endian uint16 after the header, x fastest; flipped in z and y
    raw = (data_dir / "head.mha").read_bytes()
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


def test_tigre_head_shape_grid_units_orientation(tigre_head, data_dir):
    vol, grid = tigre_head
    assert vol.shape == grid.shape == (256, 256, 256)
    assert vol.dtype == np.float32 and vol.flags.c_contiguous
    assert grid.voxel_size == (0.9, 0.9, 0.9) and grid.offset == (0.0, 0.0, 0.0)
    stored = scipy.io.loadmat(data_dir / "head_phantom.mat")["img"].transpose(2, 1, 0)
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


def test_other_voxel_size_for_tigre_head(tmp_path):
    _, grid = load_tigre_head(voxel_size=1.0)
    assert grid.voxel_size == (1.0, 1.0, 1.0) and grid.size == (256.0, 256.0, 256.0)
    with pytest.raises(ValueError, match="voxel_size"):
        load_tigre_head(voxel_size=0.0)


def test_checksums_verify(tmp_path, data_dir):
    load_head_mha(verify=True)
    load_tigre_head(verify=True)
    bad = tmp_path / "head.mha"
    shutil.copyfile(data_dir / "head.mha", bad)
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 0xFF
    bad.write_bytes(bytes(raw))
    load_head_mha(bad)  # loads without verification
    with pytest.raises(ValueError, match="sha256"):
        load_head_mha(bad, verify=True)


def test_environment_variable_overrides_the_folder(monkeypatch, tmp_path, data_dir):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert default_data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "head.mha")):
        load_head_mha()
    with pytest.raises(FileNotFoundError, match="head_phantom.mat"):
        load_tigre_head()
    shutil.copyfile(data_dir / "head.mha", tmp_path / "head.mha")
    vol, _ = load_head_mha()
    assert vol.shape == (93, 64, 64)


def test_missing_explicit_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "head.mha"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_head_mha(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tigre_head(tmp_path / "nowhere" / "head.mat")
