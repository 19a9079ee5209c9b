"""Random generators from seeds: the one place that turns a user's ``rng`` argument into a NumPy ``Generator``."""

from __future__ import annotations

import numpy as np

__all__ = ["as_generator"]

SeedLike = np.random.Generator | np.random.SeedSequence | int | np.integer | None


def as_generator(rng: SeedLike, name: str = "rng") -> np.random.Generator:
    """``rng`` itself when it is a ``numpy.random.Generator``; else a new generator seeded by it (a non-negative
    integer, a ``SeedSequence``, or ``None`` for fresh entropy). Anything else is refused, naming ``name``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not (rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence))):
        raise TypeError(f"{name} must be an integer seed, a numpy.random.Generator or None, got {type(rng).__name__}")
    if isinstance(rng, (int, np.integer)) and rng < 0:
        raise ValueError(f"{name} must be a non-negative seed, a numpy.random.Generator or None, got {rng}")
    return np.random.default_rng(rng)
