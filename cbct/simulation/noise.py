"""Detector noise: Poisson photon statistics plus Gaussian electronic noise, applied to line integrals."""

from __future__ import annotations

import numpy as np

from cbct.rng import as_generator


def add_noise(
    projections: np.ndarray,
    *,
    i0: float = 1e5,
    electronic_sigma: float = 0.0,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Noisy line integrals: counts ``~ Poisson(i0 * exp(-p)) + Normal(0, electronic_sigma)``, then ``-log(counts / i0)``.

    Args:
        projections: (..., view, v, u) line integrals (NumPy).
        i0: unattenuated photon count per detector pixel (larger: less noise).
        electronic_sigma: standard deviation of the additive electronic noise, in counts.
        rng: a ``numpy.random.Generator`` or a seed; every draw is reproducible.

    Returns:
        Array like ``projections`` (float32). Counts are clipped at 1 before the log (photon starvation).
    """
    if i0 <= 0:
        raise ValueError(f"i0 must be positive, got {i0}")
    if electronic_sigma < 0:
        raise ValueError(f"electronic_sigma must be >= 0, got {electronic_sigma}")
    gen = as_generator(rng)
    expected = i0 * np.exp(-np.asarray(projections, dtype=np.float64))
    counts = gen.poisson(expected).astype(np.float64)
    if electronic_sigma > 0:
        counts += gen.normal(0.0, electronic_sigma, size=counts.shape)
    return (-np.log(np.maximum(counts, 1.0) / i0)).astype(np.float32)
