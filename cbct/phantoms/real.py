"""Loaders for the real head volumes in the shared data folder, as attenuation in mm⁻¹ on a centred grid.

Both volumes come back in the project's frame: ``(z, y, x)`` float32, C-contiguous, ``+z`` towards the top of the head
and the face towards ``-y`` (an axial slice shows the face at its top row), the grid centred on the world origin (the
rotation axis of a scan), as the dental phantom (:mod:`cbct.phantoms.dental`).

The data folder is ``$CBCT_DATA_DIR`` when that variable is set, else ``<repository>/../shared/data`` (see
``../shared/data/README.md`` for the files, their sources and licenses).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib

import numpy as np

from cbct.geometry import VolumeGrid
from cbct.io.matlab import read_mat_volume
from cbct.io.metaimage import read_metaimage

__all__ = [
    "REAL_HEADS",
    "load_real_head",
    "data_dir", "load_head_mha", "load_tigre_head", "HEAD_MHA_MU_PER_UNIT", "TIGRE_HEAD_MU_PER_UNIT",
    "TIGRE_HEAD_VOXEL_SIZE", "SHA256",
]

logger = logging.getLogger(__name__)

ENV_VAR = "CBCT_DATA_DIR"
HEAD_MHA_MU_PER_UNIT = 0.019 / 1000.0
"""mm⁻¹ per stored unit of ``head.mha``: 0 is air, ~1000 soft tissue → 0.019 mm⁻¹ (water at ~70 keV); bone 1500–2600
→ 0.029–0.049 mm⁻¹; the maximum 3926 → 0.075 mm⁻¹."""
TIGRE_HEAD_MU_PER_UNIT = 0.019 / 0.40
"""mm⁻¹ per unit of TIGRE's head phantom: its soft tissue (the mode, 0.40) → 0.019 mm⁻¹; its densest bone (1.0) →
0.0475 mm⁻¹, about cortical bone."""
TIGRE_HEAD_VOXEL_SIZE = 0.9
"""Default voxel edge (mm) for TIGRE's head phantom, which stores none: the head spans about 167 × 228 voxels
(breadth × length, nose included), so 0.9 mm gives a 150 mm broad, 205 mm long adult head in a 230 mm cube. (TIGRE's
own demos use 1 mm.)"""
SHA256 = {
    "head.mha": "653962f580c22759c619c890f0374d35f49c0913da376fb337793324774d711d",
    "head_phantom.mat": "cb53501c9a6d15bad30a12bbfd63791f6623435d17d62a575330e7e804abae24",
    "tooth.h5": "ab1d9bd073b7fb1beae4defa991c2a2626605c5cf1f4be0d0203656bc47b6489",
}
"""Checksums of the shared data files, from the data folder's README."""


def data_dir() -> pathlib.Path:
    """The shared data folder: ``$CBCT_DATA_DIR`` if set, else ``<repository>/../shared/data``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _resolve(path: str | os.PathLike | None, name: str) -> pathlib.Path:
    p = data_dir() / name if path is None else pathlib.Path(path).expanduser()
    if not p.is_file():
        hint = f" (set {ENV_VAR} to the folder holding {name})" if path is None else ""
        raise FileNotFoundError(f"{name} not found at {p}{hint}")
    return p


def _verify(p: pathlib.Path, name: str) -> None:
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != SHA256[name]:
        raise ValueError(f"{p}: sha256 {digest} does not match the expected {SHA256[name]} for {name}")


def load_head_mha(path: str | os.PathLike | None = None, *, verify: bool = False) -> tuple[np.ndarray, VolumeGrid]:
    """VTK's ``headsq/quarter`` head CT (``head.mha``) as linear attenuation.

    Args:
        path: the ``.mha`` file; default ``head.mha`` in :func:`data_dir`.
        verify: check the file's sha256 against :data:`SHA256` first (``ValueError`` on a mismatch).

    Returns:
        ``(volume, grid)``: (93, 64, 64) float32 in mm⁻¹ (``stored value × HEAD_MHA_MU_PER_UNIT``, linear: 0 → air,
        1000 → 0.019 mm⁻¹), from the neck (``z`` index 0) to above the orbits, and its grid: voxels
        ``(dz, dy, dx) = (1.5, 3.2, 3.2)`` mm (a 139.5 × 204.8 × 204.8 mm field), centred on the origin. The file
        stores slices from the top down and the face towards ``+y``; both axes are flipped (a rotation by 180° about
        ``x``, so handedness is kept).
    """
    p = _resolve(path, "head.mha")
    if verify:
        _verify(p, "head.mha")
    vol = read_metaimage(p)
    data = np.ascontiguousarray(vol.data[::-1, ::-1, :] * np.float32(HEAD_MHA_MU_PER_UNIT), dtype=np.float32)
    spacing = tuple(round(float(s), 6) for s in vol.grid.voxel_size)  # the header holds float32 spacings (3.2000000477)
    grid = VolumeGrid(data.shape, spacing)
    logger.debug("loaded %s: %s, voxel %s mm", p, data.shape, spacing)
    return data, grid


def load_tigre_head(
    path: str | os.PathLike | None = None, *, voxel_size: float = TIGRE_HEAD_VOXEL_SIZE, verify: bool = False
) -> tuple[np.ndarray, VolumeGrid]:
    """TIGRE's head phantom (``head_phantom.mat``, a digital phantom derived from MRI) as linear attenuation.

    Args:
        path: the ``.mat`` file; default ``head_phantom.mat`` in :func:`data_dir`.
        voxel_size: isotropic voxel edge in mm (the file stores none); default :data:`TIGRE_HEAD_VOXEL_SIZE`.
        verify: check the file's sha256 against :data:`SHA256` first (``ValueError`` on a mismatch).

    Returns:
        ``(volume, grid)``: (256, 256, 256) float32 in mm⁻¹ (``value × TIGRE_HEAD_MU_PER_UNIT``: 0 → air, soft tissue
        0.40 → 0.019, bone up to 1.0 → 0.0475), ``z`` from the neck up, face towards ``-y`` as stored
        (``loadmat(p)["img"].transpose(2, 1, 0)``), on an isotropic grid centred on the origin.
    """
    if not (isinstance(voxel_size, (int, float, np.floating)) and np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive length in mm, got {voxel_size!r}")
    p = _resolve(path, "head_phantom.mat")
    if verify:
        _verify(p, "head_phantom.mat")
    vol = read_mat_volume(p, variable="img", voxel_size=float(voxel_size), scale=TIGRE_HEAD_MU_PER_UNIT)
    data = np.ascontiguousarray(vol.data, dtype=np.float32)
    grid = VolumeGrid(data.shape, float(voxel_size))
    logger.debug("loaded %s: %s, voxel %s mm", p, data.shape, voxel_size)
    return data, grid


REAL_HEADS = ("head_mha", "tigre_head")
"""Names of the real head volumes: ``head_mha`` (:func:`load_head_mha`) and ``tigre_head`` (:func:`load_tigre_head`)."""


def load_real_head(name: str, path: str | os.PathLike | None = None) -> tuple[np.ndarray, VolumeGrid]:
    """``(volume, grid)`` of the real head called ``name`` (one of :data:`REAL_HEADS`), from ``path`` or the shared
    data folder, as :func:`load_head_mha` / :func:`load_tigre_head` give them."""
    if name == "head_mha":
        return load_head_mha(path)
    if name == "tigre_head":
        return load_tigre_head(path)
    raise ValueError(f"unknown real head {name!r}; known: {', '.join(REAL_HEADS)}")
