"""PNG preview: three orthogonal central slices (axial, coronal, sagittal) side by side, 8-bit grey."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from cbct.io.atomic import atomic_path
from cbct.volume import Volume

__all__ = ["write_png_preview", "preview_image"]


def _resize(img: np.ndarray, height_mm: float, width_mm: float, pixel_mm: float) -> np.ndarray:
    from PIL import Image

    h = max(1, int(round(height_mm / pixel_mm)))
    w = max(1, int(round(width_mm / pixel_mm)))
    if (h, w) == img.shape:
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def preview_image(volume: Volume, *, window: tuple[float, float] | None = None, gap: int = 4) -> np.ndarray:
    """(H, W) uint8: axial slice (z mid, y down), coronal (y mid, z up) and sagittal (x mid, z up), scaled to
    square physical pixels. ``window`` = (low, high) grey levels; default the 1st and 99.5th percentiles."""
    data = np.asarray(volume.data, dtype=np.float32)
    nz, ny, nx = data.shape
    dz, dy, dx = volume.grid.voxel_size
    if window is None:
        lo, hi = (float(v) for v in np.percentile(data, [1.0, 99.5]))
    else:
        lo, hi = (float(v) for v in window)
    if hi <= lo:
        hi = lo + 1e-12

    def grey(img: np.ndarray) -> np.ndarray:
        return np.round(255 * np.clip((img - lo) / (hi - lo), 0, 1)).astype(np.uint8)

    pixel = min(dz, dy, dx)
    axial = _resize(grey(data[nz // 2]), ny * dy, nx * dx, pixel)
    coronal = _resize(grey(data[::-1, ny // 2, :]), nz * dz, nx * dx, pixel)
    sagittal = _resize(grey(data[::-1, :, nx // 2]), nz * dz, ny * dy, pixel)
    height = max(p.shape[0] for p in (axial, coronal, sagittal))
    width = sum(p.shape[1] for p in (axial, coronal, sagittal)) + 2 * gap
    canvas = np.zeros((height, width), dtype=np.uint8)
    x = 0
    for panel in (axial, coronal, sagittal):
        canvas[: panel.shape[0], x: x + panel.shape[1]] = panel
        x += panel.shape[1] + gap
    return canvas


def write_png_preview(volume: Volume, path: str | os.PathLike, *, window: tuple[float, float] | None = None,
                      overwrite: bool = True) -> pathlib.Path:
    """Write :func:`preview_image` of ``volume`` to ``path`` (atomically)."""
    from PIL import Image

    path = pathlib.Path(path)
    img = preview_image(volume, window=window)
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return path
