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
from typing import Any

import numpy as np
from scipy import ndimage

from cbct.geometry import VolumeGrid
from cbct.phantoms.dental.anatomy import (
    ADULT_HALF_EXTENT_XY,
    LABEL,
    METAL_LABELS,
    MU,
    TISSUES,
    TRAB,
    Tissue,
    draw_anatomy,
    draw_metal,
)
from cbct.phantoms.dental.raster import Raster, texture_field
from cbct.rng import as_generator
from cbct.signatures import borrow_keywords

__all__ = [
    "Tissue", "TISSUES", "MU", "LABEL", "METAL_LABELS", "dental_phantom", "dental_phantom_with_labels",
    "dental_phantom_grid",
]

logger = logging.getLogger(__name__)


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
    anatomy = draw_anatomy(np.random.default_rng(seeds[0]), None if n_teeth is None else int(n_teeth),
                            float(missing_probability), None if jaw_opening is None else float(jaw_opening))
    if metal:
        anatomy = dataclasses.replace(anatomy, teeth=draw_metal(np.random.default_rng(seeds[2]), anatomy.teeth))
    if scale is None:
        half = (grid.size[2] / 2, grid.size[1] / 2)
        scale = min(1.0, 0.96 * half[0] / ADULT_HALF_EXTENT_XY[0], 0.96 * half[1] / ADULT_HALF_EXTENT_XY[1])
    raster = Raster(grid, anatomy, float(scale))
    labels = np.empty(grid.shape, np.uint8)
    volume = np.empty(grid.shape, np.float32)
    lut = np.array([t.mu for t in TISSUES], np.float32)
    if texture > 0:
        field, origin, spacing = texture_field(np.random.default_rng(seeds[1]))
    nz, ny, nx = grid.shape
    chunk = max(1, (1 << 21) // (ny * nx))
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        raster.paint(labels[z0:z1], z0, z1, bool(metal))
        volume[z0:z1] = lut[labels[z0:z1]]
        if texture > 0:  # smooth multiplicative texture of trabecular bone, fixed in the anatomy frame
            k, j, i = np.nonzero(labels[z0:z1] == TRAB)
            coords = np.stack([(raster.x[i] - origin[0]) / spacing, (raster.y[j] - origin[1]) / spacing,
                               (raster.z[z0 + k] - origin[2]) / spacing])
            noise = ndimage.map_coordinates(field, coords, order=1, mode="nearest")
            volume[z0 + k, j, i] *= 1.0 + float(texture) * np.clip(noise, -2.5, 2.5).astype(np.float32)
    logger.debug("dental phantom %s: scale %.3f, %.2f s", grid.shape, scale, time.perf_counter() - started)
    return volume, labels


@borrow_keywords(dental_phantom_with_labels)
def dental_phantom(grid: VolumeGrid, **options: Any) -> np.ndarray:
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
    return dental_phantom_with_labels(grid, **options)[0]


def dental_phantom_grid(size: int = 256, fov: float = 90.0) -> VolumeGrid:
    """A typical dental CBCT field of view: a cube of ``fov`` mm (default 90) with ``size``³ voxels at the origin."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int (voxels per side), got {size!r}")
    if not (isinstance(fov, (int, float, np.floating)) and math.isfinite(fov) and fov > 0):
        raise ValueError(f"fov must be a positive length in mm, got {fov!r}")
    return VolumeGrid((int(size),) * 3, float(fov) / int(size))
