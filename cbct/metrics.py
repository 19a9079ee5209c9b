"""Image quality metrics: RMSE, PSNR and SSIM, with an optional mask (e.g. the field of view).

Conventions (all three functions):

- ``x`` is the image under test (a reconstruction), ``ref`` the reference (ground truth). RMSE and PSNR are
  symmetric in them; SSIM is symmetric too, but the data range is the reference's scale and must be given.
- Arrays are NumPy arrays, or anything with ``.detach().cpu().numpy()`` (torch tensors) or ``.get()`` (CuPy arrays);
  they are compared in float64. ``x`` and ``ref`` must have the same shape and be finite.
- ``data_range`` is explicit and required for PSNR and SSIM: the width of the intensity scale, e.g.
  ``ref.max() - ref.min()`` or a fixed physical range such as 0.1 mm⁻¹. It is never guessed from the data, so figures
  from different volumes stay comparable.
- ``mask`` (optional, boolean, broadcastable to the image shape, e.g. a ``(y, x)`` field-of-view disc for a
  ``(z, y, x)`` volume) restricts the average to its true voxels. For SSIM the local statistics are still computed over
  the whole image; only the averaging of the SSIM map is restricted.

SSIM (Wang et al., IEEE TIP 2004) uses a Gaussian window of standard deviation ``sigma = 1.5`` voxels truncated at 3.5
sigma (an 11-tap window), constants ``C1 = (K1 L)²``, ``C2 = (K2 L)²`` with ``K1 = 0.01``, ``K2 = 0.03``,
``L = data_range``, population (not sample) covariances, and mirror (``reflect``) boundaries; the result is the mean of
the SSIM map over all voxels (or the mask), borders included. By default (``spatial_dims=2``) SSIM is computed in 2D on
each slice of the last two axes (axial ``(y, x)`` slices of a ``(z, y, x)`` volume) and averaged over all slices (the
common convention in CT papers); ``spatial_dims=3`` uses a 3D Gaussian window over the last three axes instead. Leading
axes beyond the spatial ones are treated as a batch and averaged over.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cbct.backend import to_host

__all__ = ["rmse", "psnr", "ssim", "ssim_map", "fov_disc"]

K1 = 0.01
K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5


def fov_disc(shape: tuple[int, ...], radius: float, voxel_size: float = 1.0) -> np.ndarray:
    """Boolean disc of ``radius`` (mm, or voxels with ``voxel_size=1``) about the centre of the axial slices of a
    ``(..., ny, nx)`` grid: shape ``(1, ..., 1, ny, nx)``, broadcasting over the leading axes (e.g. z)."""
    *lead, ny, nx = shape
    y = (np.arange(ny) - (ny - 1) / 2) * voxel_size
    x = (np.arange(nx) - (nx - 1) / 2) * voxel_size
    disc = (y[:, None] ** 2 + x[None, :] ** 2) <= radius**2
    return disc.reshape((1,) * len(lead) + disc.shape)


def _to_numpy(a, name: str) -> np.ndarray:
    """``a`` as a float64 NumPy array (from NumPy, torch or CuPy)."""
    a = to_host(a)
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array, got {type(a).__name__}") from exc
    return arr


def _prepare(x, ref, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    xa = _to_numpy(x, "x")
    ra = _to_numpy(ref, "ref")
    if xa.shape != ra.shape:
        raise ValueError(f"x and ref must have the same shape, got x {xa.shape} and ref {ra.shape}")
    if xa.size == 0:
        raise ValueError("x and ref must not be empty")
    for name, a in (("x", xa), ("ref", ra)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(a)))} NaN or infinite values")
    return xa, ra, _check_mask(mask, xa.shape)


def _check_mask(mask, shape: tuple[int, ...]) -> np.ndarray | None:
    """``mask`` broadcast to ``shape`` as a boolean array (``None`` stays ``None``)."""
    if mask is None:
        return None
    m_arr = np.asarray(to_host(mask))
    if m_arr.dtype != bool:
        raise TypeError(f"mask must be a boolean array, got dtype {m_arr.dtype}")
    try:
        m = np.broadcast_to(m_arr, shape)
    except ValueError as exc:
        raise ValueError(f"mask of shape {m_arr.shape} does not broadcast to the image shape {shape}") from exc
    if not m.any():
        raise ValueError("mask selects no voxels")
    return m


def _check_range(data_range) -> float:
    try:
        dr = float(data_range)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"data_range must be a positive number, got {data_range!r}") from exc
    if not math.isfinite(dr) or dr <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    return dr


def _mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    return float(values.mean() if mask is None else values[mask].mean())


def rmse(x, ref, *, mask=None) -> float:
    """Root mean squared error ``sqrt(mean((x - ref)²))`` over all voxels (or ``mask``), in the images' units."""
    xa, ra, m = _prepare(x, ref, mask)
    return math.sqrt(_mean((xa - ra) ** 2, m))


def psnr(x, ref, *, data_range: float, mask=None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range² / MSE)``; ``inf`` when the images are equal.

    Args:
        x: image under test.
        ref: reference image, same shape.
        data_range: width of the intensity scale (same units as the images), required.
        mask: optional boolean mask broadcastable to the image shape.
    """
    dr = _check_range(data_range)
    xa, ra, m = _prepare(x, ref, mask)
    mse = _mean((xa - ra) ** 2, m)
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(dr * dr / mse)


def ssim_map(x, ref, *, data_range: float, spatial_dims: int = 2, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The local SSIM index at every voxel (float64, the images' shape); see the module notes for the conventions."""
    dr = _check_range(data_range)
    xa, ra, _ = _prepare(x, ref, None)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 (per-slice SSIM) or 3 (volumetric SSIM), got {spatial_dims!r}")
    if xa.ndim < spatial_dims:
        raise ValueError(f"x must have at least {spatial_dims} dimensions for spatial_dims={spatial_dims}, "
                         f"got shape {xa.shape}")
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number of voxels, got {sigma!r}")
    sig = (0.0,) * (xa.ndim - spatial_dims) + (float(sigma),) * spatial_dims

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=sig, mode="reflect", truncate=SSIM_TRUNCATE)

    c1 = (K1 * dr) ** 2
    c2 = (K2 * dr) ** 2
    mu_x, mu_r = blur(xa), blur(ra)
    var_x = blur(xa * xa) - mu_x * mu_x
    var_r = blur(ra * ra) - mu_r * mu_r
    cov = blur(xa * ra) - mu_x * mu_r
    num = (2 * mu_x * mu_r + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_r * mu_r + c1) * (var_x + var_r + c2)
    return num / den


def ssim(x, ref, *, data_range: float, mask=None, spatial_dims: int = 2, sigma: float = SSIM_SIGMA) -> float:
    """Mean structural similarity (1 for identical images, lower is worse).

    Args:
        x: image under test, e.g. (z, y, x) or (y, x).
        ref: reference image, same shape.
        data_range: width of the intensity scale, required (sets ``C1``, ``C2``).
        mask: optional boolean mask broadcastable to the image shape; the SSIM map is averaged over it.
        spatial_dims: 2 for per-slice 2D SSIM over the last two axes averaged over slices (default), 3 for 3D SSIM.
        sigma: Gaussian window standard deviation in voxels (1.5).
    """
    m = _check_mask(mask, np.shape(x))
    smap = ssim_map(x, ref, data_range=data_range, spatial_dims=spatial_dims, sigma=sigma)
    return _mean(smap, m)
