"""Ramp filters with apodisation windows for filtered backprojection.

The ramp is built from its band-limited spatial kernel (Kak & Slaney, eq. 3.61) sampled at the detector pitch
and zero padded, which keeps the DC term right and makes the convolution linear rather than circular.
Windows are functions of ``w = 2 pi f`` with ``f`` in cycles per pixel (``w = pi`` at Nyquist); ``cutoff``
(0 < cutoff <= 1) scales them and zeroes frequencies above ``cutoff * Nyquist``, as in TIGRE.
"""

from __future__ import annotations

import numpy as np

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")


def padded_length(n: int) -> int:
    """FFT length for rows of ``n`` samples: the next power of two at or above ``2 n`` (linear convolution)."""
    return int(2 ** int(np.ceil(np.log2(max(2 * n, 2)))))


def ramp_response(n_fft: int, pixel_size: float, filter: str = "ram-lak", cutoff: float = 1.0) -> np.ndarray:
    """Real frequency response, shape ``(n_fft // 2 + 1,)`` float64, of the windowed ramp for ``rfft`` rows.

    Convolving a row (sampled at ``pixel_size`` mm) with it and multiplying by ``pixel_size`` approximates the
    ramp-filtered row (``|nu|`` in cycles/mm); the response includes the ``1 / pixel_size**2`` of the kernel.
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    if not 0 < cutoff <= 1:
        raise ValueError(f"cutoff must be in (0, 1], got {cutoff}")
    if pixel_size <= 0:
        raise ValueError(f"pixel_size must be positive, got {pixel_size}")
    n = np.concatenate([np.arange(0, n_fft // 2 + 1), np.arange(-(n_fft // 2) + 1, 0)])
    kernel = np.zeros(n_fft)
    kernel[0] = 0.25
    odd = n % 2 == 1
    kernel[odd] = -1.0 / (np.pi * n[odd]) ** 2
    response = np.real(np.fft.rfft(kernel)) / pixel_size**2
    w = 2 * np.pi * np.fft.rfftfreq(n_fft)  # 0 .. pi
    d = cutoff
    if filter == "shepp-logan":
        x = w / (2 * d)
        response[1:] *= np.sin(x[1:]) / x[1:]
    elif filter == "cosine":
        response *= np.cos(w / (2 * d))
    elif filter == "hamming":
        response *= 0.54 + 0.46 * np.cos(w / d)
    elif filter == "hann":
        response *= 0.5 * (1 + np.cos(w / d))
    response[w > np.pi * d] = 0.0
    return response


def ramp_filter_rows(rows, response, xp=np):
    """Filter the last axis of ``rows`` (…, n) with ``response`` (rfft of length ``n_fft``): zero padded linear
    convolution, cropped back to n samples. ``xp`` is the array module (NumPy or CuPy)."""
    n = rows.shape[-1]
    n_fft = 2 * (response.shape[0] - 1)
    spectrum = xp.fft.rfft(rows, n=n_fft, axis=-1)
    spectrum *= xp.asarray(response, dtype=spectrum.real.dtype)
    return xp.fft.irfft(spectrum, n=n_fft, axis=-1)[..., :n].astype(rows.dtype, copy=False)
