"""TIGRE's ``plotimg`` and ``plotproj``: slices of a volume or projections, shown or written.

TIGRE animates through slices with matplotlib. Here the slices are tiled into one grey image (TIGRE's orientation:
``origin="lower"``), or animated into a GIF with ``savegif``. With matplotlib and an interactive backend the image is
shown; otherwise it is written as a PNG into ``$CBCT_TIGRE_PLOT_DIR`` (default ``./tigre-plots``) and its path
logged and returned, so TIGRE's demos run headless.
"""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np

__all__ = ["plotimg", "plotImg", "plotproj", "plotProj", "PLOT_DIR_VAR"]

log = logging.getLogger("cbct.tigre")
PLOT_DIR_VAR = "CBCT_TIGRE_PLOT_DIR"
MAX_TILES = 64


def _host(x) -> np.ndarray:
    return np.asarray(x.get() if hasattr(x, "get") and type(x).__module__.startswith("cupy") else x, dtype=np.float32)


def _frames(cube: np.ndarray, axis: int, index, step: int) -> tuple[list[np.ndarray], list[int]]:
    n = cube.shape[axis]
    if index is not None:
        if not -n <= int(index) < n:
            raise ValueError(f"slice must be an index along the chosen axis (0..{n - 1}), got {index}")
        picks = [int(index) % n]
    else:
        step = max(1, int(step or 1), int(np.ceil(n / MAX_TILES)))
        picks = list(range(0, n, step))
    return [np.take(cube, i, axis=axis)[::-1] for i in picks], picks  # row 0 at the bottom (origin="lower")


def _grey(frames: list[np.ndarray], clims) -> list[np.ndarray]:
    lo, hi = (float(min(f.min() for f in frames)), float(max(f.max() for f in frames))) if clims is None else map(float, clims)
    hi = hi if hi > lo else lo + 1e-12
    return [np.round(255 * np.clip((f - lo) / (hi - lo), 0, 1)).astype(np.uint8) for f in frames]


def _tile(frames: list[np.ndarray], gap: int = 2) -> np.ndarray:
    cols = int(np.ceil(np.sqrt(len(frames))))
    rows = int(np.ceil(len(frames) / cols))
    h, w = frames[0].shape
    sheet = np.zeros((rows * (h + gap) - gap, cols * (w + gap) - gap), dtype=np.uint8)
    for k, f in enumerate(frames):
        r, c = divmod(k, cols)
        sheet[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = f
    return sheet


def _output(frames: list[np.ndarray], kind: str, savegif, savefig):
    from PIL import Image

    if savegif:
        path = pathlib.Path(savegif)
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
        log.info("%s: wrote %s", kind, path)
        return path
    sheet = _tile(frames)
    if savefig is None:
        try:
            import matplotlib

            if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo", "template"):
                import matplotlib.pyplot as plt

                plt.imshow(sheet, cmap="gray")
                plt.axis("off")
                plt.show()
                return None
        except ImportError:
            pass
        folder = pathlib.Path(os.environ.get(PLOT_DIR_VAR, "tigre-plots"))
        folder.mkdir(parents=True, exist_ok=True)
        savefig = next(folder / f"{kind}_{k:03d}.png" for k in range(1, 10**6) if not (folder / f"{kind}_{k:03d}.png").exists())
    path = pathlib.Path(savefig)
    Image.fromarray(sheet).save(path)
    log.info("%s: wrote %s", kind, path)
    return path


def plotimg(cube, dim=None, slice=None, step: int = 1, savegif=None, clims=None, savefig=None):  # noqa: A002
    """Slices of a volume ``(z, y, x)`` (NumPy or CuPy) across ``dim`` (``"X"`` default, ``"Y"``, ``"Z"``, any case):
    every ``step``-th slice tiled (at most 64), or the one ``slice``. ``clims``: ``(low, high)`` grey range; ``savegif``:
    animate into that file; ``savefig``: write the PNG there. Returns the written path, or None when shown."""
    cube = _host(cube)
    if cube.ndim != 3:
        raise ValueError(f"cube must be a 3-D volume (z, y, x), got shape {cube.shape}")
    axes = {None: 2, "x": 2, "y": 1, "z": 0}
    key = dim.lower() if isinstance(dim, str) else dim
    if key not in axes:
        raise ValueError(f"dim must be 'X', 'Y' or 'Z', got {dim!r}")
    frames, _ = _frames(cube, axes[key], slice, step)
    return _output(_grey(frames, clims), "plotimg", savegif, savefig)


def plotproj(proj, angles=None, slice=None, step: int = 1, savegif=None, clims=None, savefig=None):  # noqa: A002
    """Projections ``(angles, v, u)`` (NumPy or CuPy), every ``step``-th view tiled (at most 64) or the one ``slice``;
    ``angles`` is accepted for TIGRE's signature. Other arguments as :func:`plotimg`."""
    proj = _host(proj)
    if proj.ndim != 3:
        raise ValueError(f"proj must be (angles, v, u), got shape {proj.shape}")
    frames, _ = _frames(proj, 0, slice, step)
    return _output(_grey(frames, clims), "plotproj", savegif, savefig)


plotImg = plotimg  # noqa: N816 (TIGRE's other spelling)
plotProj = plotproj  # noqa: N816
