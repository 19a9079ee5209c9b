"""TIGRE's ``CTnoise.add``: Poisson photon noise and Gaussian electronic noise on line integrals, as TIGRE models them."""

from __future__ import annotations

import numpy as np

from cbct.backend import array_library
from cbct.rng import as_generator

__all__ = ["add"]


def add(projections, Gaussian=None, Poisson=None, rng: np.random.Generator | int | None = None):  # noqa: N803
    """Noisy projections, TIGRE's model: with ``m = max(projections)``, counts ``~ Poisson(I0 exp(-p / m))
    + Normal(mean, std)``, then ``-log(counts / I0) * m`` (float32, on the device of ``projections``; counts below 1e-3 are clipped where
    TIGRE's log gives NaN).

    Args:
        projections: (angles, v, u) line integrals, NumPy or CuPy (noise is drawn on the host).
        Gaussian: ``np.array([mean, std])`` of the electronic noise in counts; None: none.
        Poisson: ``I0``, photons per unattenuated pixel (a scalar); None: TIGRE's default ``2**ceil(log2(m))``.
        rng: a ``numpy.random.Generator`` or seed (cbct's addition: TIGRE draws from the global state).
    """
    on_gpu = array_library(projections) == "cupy"
    host = projections.get() if on_gpu else np.asarray(projections)
    host = host.astype(np.float64)
    m = float(np.max(host))
    if not m > 0:
        raise ValueError(f"projections: the maximum must be positive to scale the noise model, got {m}")
    if Poisson is None:
        Poisson = float(2.0 ** np.ceil(np.log2(np.max(np.abs(host)))))
    if not np.isscalar(Poisson) or not float(Poisson) > 0:
        raise ValueError(f"Poisson value should be a positive scalar, is {Poisson!r} instead.")
    if Gaussian is not None:
        Gaussian = np.asarray(Gaussian, dtype=np.float64)
        if Gaussian.shape != (2,) or Gaussian[1] < 0:
            raise ValueError(f"Gaussian should be [mean, std] with std >= 0, got {Gaussian.tolist()}")
    gen = as_generator(rng)
    i0 = float(Poisson)
    counts = gen.poisson(i0 * np.exp(-host / m)).astype(np.float64)
    if Gaussian is not None:
        counts += gen.normal(Gaussian[0], Gaussian[1], size=counts.shape)
    noisy = (-np.log(np.maximum(counts, 1e-3) / i0) * m).astype(np.float32)
    if on_gpu:
        import cupy

        return cupy.asarray(noisy)
    return noisy
