"""Simulated SBP-MAC samples and their HDF5 cache: one file per split, resumable, float16 arrays.

A split file holds ``fdk`` (N, z, y, x), ``segments`` (N, K, z, y, x), ``reference`` (N, z, y, x), optionally
``fdk_uncorrected`` (N, z, y, x), one JSON ``meta`` string and a ``done`` flag per sample, and the attribute ``key``
(a hash of everything that defines the split's content, see :func:`content_key`). Used by both kinds of training
data: :mod:`cbct.sbp_mac.data` (objects inside the grid) and :mod:`cbct.sbp_mac.truncated` (anatomy larger than the
field of view).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Sample", "SplitArrays", "content_key", "load_split", "write_split"]


@dataclasses.dataclass(frozen=True)
class Sample:
    """One simulated scan, reconstructed.

    Attributes:
        fdk: (z, y, x) float32 FDK of the motion-corrupted noisy scan, mm⁻¹ (motion-compensated when the scan
            config estimates motion).
        segments: (K, z, y, x) float32 segmented backprojection of the same filtered projections (sums to ``fdk``).
        reference: (z, y, x) float32 FDK of the noise-free motion-free scan, mm⁻¹.
        meta: spec, motion extent (max angle, max displacement), i0, timings.
        fdk_uncorrected: (z, y, x) float32 FDK with the nominal geometry (``fdk`` itself without motion estimation).
    """

    fdk: np.ndarray
    segments: np.ndarray
    reference: np.ndarray
    meta: dict[str, Any]
    fdk_uncorrected: np.ndarray


@dataclasses.dataclass(frozen=True)
class SplitArrays:
    """A cached split in memory: ``fdk`` (N, z, y, x), ``segments`` (N, K, z, y, x), ``reference`` (N, z, y, x),
    ``fdk_uncorrected`` (N, z, y, x; the same array as ``fdk`` when the file has none) (float16, mm⁻¹) and one
    meta dict per sample."""

    fdk: np.ndarray
    segments: np.ndarray
    reference: np.ndarray
    meta: list[dict[str, Any]]
    fdk_uncorrected: np.ndarray

    def __len__(self) -> int:
        return self.fdk.shape[0]


def content_key(description: dict[str, Any]) -> str:
    """A short hash (12 hex digits) of a JSON-serialisable description of a split."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:12]


def write_split(
    path: str | os.PathLike,
    key: str,
    specs: Sequence[Any],
    simulate: Callable[[Any], Sample],
    *,
    shape: tuple[int, int, int],
    n_segments: int,
    scan: dict[str, Any],
    with_uncorrected: bool,
) -> pathlib.Path:
    """Simulate every spec with ``simulate`` into the HDF5 file ``path`` (resumes a partly written file of the same
    ``key``; a complete one is only checked). ``shape`` (z, y, x) and ``n_segments`` give the array shapes."""
    import h5py

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, k = len(specs), int(n_segments)
    if path.is_file():  # complete already: only read (several runs may share the cache)
        with h5py.File(path, "r") as f:
            if f.attrs.get("key") == key and "done" in f and bool(np.all(f["done"][:])):
                return path
    with h5py.File(path, "a") as f:
        if f.attrs.get("key") not in (None, key):
            raise ValueError(f"{path} holds another split (key {f.attrs['key']}, expected {key}); remove it first")
        if "fdk" not in f:
            f.attrs["key"] = key
            f.attrs["scan"] = json.dumps(scan)
            f.create_dataset("fdk", (n, *shape), np.float16, chunks=(1, 1, *shape[1:]))
            f.create_dataset("segments", (n, k, *shape), np.float16, chunks=(1, k, 1, *shape[1:]))
            f.create_dataset("reference", (n, *shape), np.float16, chunks=(1, 1, *shape[1:]))
            if with_uncorrected:
                f.create_dataset("fdk_uncorrected", (n, *shape), np.float16, chunks=(1, 1, *shape[1:]))
            f.create_dataset("meta", (n,), h5py.string_dtype())
            f.create_dataset("done", (n,), bool)
        done = f["done"][:]
        for i, spec in enumerate(specs):
            if done[i]:
                continue
            s = simulate(spec)
            f["fdk"][i] = s.fdk
            f["segments"][i] = s.segments
            f["reference"][i] = s.reference
            if "fdk_uncorrected" in f:
                f["fdk_uncorrected"][i] = s.fdk_uncorrected
            f["meta"][i] = json.dumps(s.meta)
            f["done"][i] = True
            f.flush()
            log.info("sample %d/%d (%s) in %.1f s", i + 1, n, spec, s.meta.get("seconds", float("nan")))
    return path


def load_split(path: str | os.PathLike) -> SplitArrays:
    """Read a complete cached split into memory."""
    import h5py

    with h5py.File(path, "r") as f:
        if "done" not in f or not bool(np.all(f["done"][:])):
            raise ValueError(f"{path} is not a complete split; build it with build_split")
        meta = [json.loads(m) for m in f["meta"].asstr()[:]]
        fdk_images = f["fdk"][:]
        uncorrected = f["fdk_uncorrected"][:] if "fdk_uncorrected" in f else fdk_images
        return SplitArrays(fdk_images, f["segments"][:], f["reference"][:], meta, uncorrected)
