"""Running the completion network over a scan: acquired views copied, missing ones synthesised pair by pair.

Also the throughput measurement (synthesised views per second) used by ``cbct eval bbc --throughput`` and
``benchmarks/bbc_throughput.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from cbct.angles import CompletionPlan, plan_completion
from cbct.bbc.model import FlowCompletionNet
from cbct.geometry import ConeGeometry
from cbct.learned.device import as_tensor, model_device

__all__ = ["complete_views", "measure_throughput"]


def complete_views(
    model: FlowCompletionNet,
    projections,
    plan: CompletionPlan,
    *,
    pairs_per_batch: int = 8,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    as_numpy: bool = True,
):
    """Dense projections for ``plan``: acquired views copied, missing ones synthesised by ``model``.

    Args:
        model: the completion network.
        projections: (n_acquired, nv, nu) float32 sparse projections (NumPy, CuPy or torch).
        plan: from :func:`cbct.angles.plan_completion` for the sparse geometry.
        pairs_per_batch: acquired-view pairs processed together (flows once per pair, then all its missing views).
        device: torch device (default: the model's).
        amp: half-precision autocast (default: on CUDA only).

    Returns:
        (n_dense, nv, nu) float32 NumPy array, or with ``as_numpy=False`` a torch tensor on the device (CuPy input
        on CUDA: no host round trip; hand it to CuPy with ``cupy.from_dlpack``).
    """
    if pairs_per_batch < 1:
        raise ValueError(f"pairs_per_batch must be positive, got {pairs_per_batch}")
    dev = model_device(model, device)
    model = model.to(dev).eval()
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    p = as_tensor(projections, dev)
    if p.ndim != 3:
        raise ValueError(f"projections must be (n_views, nv, nu), got shape {tuple(p.shape)}")
    n_acq = int(max(plan.prev.max(), plan.next.max())) + 1
    if p.shape[0] < n_acq:
        raise ValueError(f"projections has {p.shape[0]} views but the plan refers to view {n_acq - 1}")
    out = torch.empty((plan.t.size, *p.shape[1:]), dtype=torch.float32, device=dev)
    acq = np.flatnonzero(plan.acquired)
    out[torch.as_tensor(acq, device=dev)] = p[torch.as_tensor(plan.prev[acq], device=dev)]
    missing = plan.missing
    pairs, inverse = np.unique(np.stack([plan.prev[missing], plan.next[missing]], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16, enabled=use_amp):
        for start in range(0, len(pairs), pairs_per_batch):
            sel_pairs = np.arange(start, min(start + pairs_per_batch, len(pairs)))
            views = np.flatnonzero((inverse >= sel_pairs[0]) & (inverse <= sel_pairs[-1]))
            pa = torch.as_tensor(pairs[sel_pairs, 0], device=dev)
            pb = torch.as_tensor(pairs[sel_pairs, 1], device=dev)
            pair_of = torch.as_tensor(inverse[views] - sel_pairs[0], device=dev)
            t = torch.as_tensor(plan.t[missing[views]], device=dev, dtype=torch.float32)
            synth = model.complete_pairs(p[pa][:, None], p[pb][:, None], pair_of, t)
            out[torch.as_tensor(missing[views], device=dev)] = synth[:, 0].float()
    return out.cpu().numpy() if as_numpy else out


def measure_throughput(
    model: FlowCompletionNet,
    *,
    detector_shape: tuple[int, int] = (128, 128),
    n_acquired: int = 45,
    factor: int = 8,
    pairs_per_batch: int = 8,
    device: str | torch.device = "cpu",
    amp: bool | None = None,
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Synthesised views per second for a full-circle scan of ``n_acquired`` views completed ``factor`` times.

    Times :func:`complete_views` (host-to-device copy and result back to the host included) after one warm-up
    run; on CUDA the device is synchronised. Returns ``{"views_per_s", "seconds", "views", "pixels"}`` with the
    median time of ``repeats`` runs.
    """
    nv, nu = detector_shape
    geom = ConeGeometry.circular(dso=500.0, dsd=750.0, detector_shape=(nv, nu), detector_pixel_size=1.0,
                                 volume_shape=8, voxel_size=1.0, n_views=n_acquired)
    plan = plan_completion(geom, factor=factor)
    gen = np.random.default_rng(0)
    proj = gen.random((n_acquired, nv, nu), dtype=np.float32) + 1.0
    dev = torch.device(device)
    complete_views(model, proj, plan, pairs_per_batch=pairs_per_batch, device=dev, amp=amp)
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = clock()
        complete_views(model, proj, plan, pairs_per_batch=pairs_per_batch, device=dev, amp=amp)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(clock() - t0)
    sec = float(np.median(times))
    n = int(plan.missing.size)
    return {"views_per_s": n / sec, "seconds": sec, "views": float(n), "pixels": float(nv * nu)}
