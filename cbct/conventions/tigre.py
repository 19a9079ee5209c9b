"""TIGRE's circular geometry (``geo`` attributes and an ``angles`` array) to and from :class:`ConeGeometry`.

TIGRE's Python order is used: ``nDetector``/``dDetector``/``offDetector`` are ``(v, u)``; ``nVoxel``/``dVoxel``/
``offOrigin`` are ``(z, y, x)``; distances in mm, angles in radians. Only circular orbits without detector
rotation or centre-of-rotation shift convert; anything else raises ``ValueError``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from cbct.geometry import ConeGeometry

_REQUIRED = ("DSD", "DSO", "nDetector", "dDetector", "nVoxel", "dVoxel")


def _get(geo: Any, name: str, default=None):
    value = geo.get(name, default) if isinstance(geo, dict) else getattr(geo, name, default)
    if value is None:
        raise ValueError(f"TIGRE geometry lacks the attribute {name!r}")
    return value


def from_tigre(geo: Any, angles: np.ndarray) -> ConeGeometry:
    """A :class:`ConeGeometry` from a TIGRE ``geo`` (object with TIGRE's attributes, or a dict) and ``angles``."""
    for name in _REQUIRED:
        _get(geo, name)
    if str(_get(geo, "mode", "cone")) != "cone":
        raise ValueError(f"only TIGRE's 'cone' mode converts, got mode={_get(geo, 'mode')!r}")
    if np.any(np.asarray(_get(geo, "COR", 0.0)) != 0) or np.any(np.asarray(_get(geo, "rotDetector", (0, 0, 0))) != 0):
        raise ValueError("TIGRE geometries with COR or rotDetector are not supported")
    return ConeGeometry.circular(
        dso=float(_get(geo, "DSO")),
        dsd=float(_get(geo, "DSD")),
        detector_shape=tuple(int(n) for n in np.asarray(_get(geo, "nDetector"))),
        detector_pixel_size=tuple(float(d) for d in np.asarray(_get(geo, "dDetector"))),
        volume_shape=tuple(int(n) for n in np.asarray(_get(geo, "nVoxel"))),
        voxel_size=tuple(float(d) for d in np.asarray(_get(geo, "dVoxel"))),
        angles=np.asarray(angles, dtype=np.float64),
        detector_offset=tuple(float(o) for o in np.asarray(_get(geo, "offDetector", (0.0, 0.0)))),
        volume_offset=tuple(float(o) for o in np.asarray(_get(geo, "offOrigin", (0.0, 0.0, 0.0)))),
    )


def circular_parameters(geom: ConeGeometry) -> dict[str, Any]:
    """The keyword arguments of :meth:`ConeGeometry.circular` that reproduce ``geom``; ``ValueError`` if none do."""
    pitch = geom.pixel_sizes()[0]
    u_hat = geom.u_vectors[0] / pitch[1]
    v_hat = geom.v_vectors[0] / pitch[0]
    src0 = geom.sources[0]
    dso = float(np.hypot(src0[0], src0[1]))
    ang0 = geom.angles[0]
    radial = np.array([np.cos(ang0), np.sin(ang0), 0.0])
    det_rel = geom.detector_centres[0] + (geom.source_detector_distances()[0] - dso) * radial
    params = dict(
        dso=dso,
        dsd=float(geom.source_detector_distances()[0]),
        detector_shape=geom.detector_shape,
        detector_pixel_size=(float(pitch[0]), float(pitch[1])),
        volume_shape=geom.volume.shape,
        voxel_size=geom.volume.voxel_size,
        angles=geom.angles,
        detector_offset=(float(det_rel @ v_hat), float(det_rel @ u_hat)),
        volume_offset=geom.volume.offset,
    )
    rebuilt = ConeGeometry.circular(**params)
    scale = max(1.0, float(np.abs(geom.vectors).max()))
    if not np.allclose(rebuilt.vectors, geom.vectors, rtol=0, atol=1e-9 * scale):
        worst = int(np.argmax(np.abs(rebuilt.vectors - geom.vectors).max(axis=1)))
        raise ValueError(f"geometry is not a circular orbit about z with fixed DSO/DSD/offsets (view {worst} differs)")
    return params


def to_tigre(geom: ConeGeometry) -> tuple[SimpleNamespace, np.ndarray]:
    """TIGRE's ``geo`` (as a namespace with TIGRE's attribute names) and ``angles`` for a circular ``geom``."""
    p = circular_parameters(geom)
    n_det = np.array(p["detector_shape"])
    d_det = np.array(p["detector_pixel_size"])
    n_vox = np.array(p["volume_shape"])
    d_vox = np.array(p["voxel_size"])
    geo = SimpleNamespace(
        mode="cone",
        DSD=p["dsd"],
        DSO=p["dso"],
        nDetector=n_det,
        dDetector=d_det,
        sDetector=n_det * d_det,
        nVoxel=n_vox,
        dVoxel=d_vox,
        sVoxel=n_vox * d_vox,
        offOrigin=np.array(p["volume_offset"]),
        offDetector=np.array(p["detector_offset"]),
        accuracy=0.5,
        COR=0.0,
        rotDetector=np.zeros(3),
    )
    return geo, np.array(p["angles"])
