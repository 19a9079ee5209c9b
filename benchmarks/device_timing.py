"""Part 3 of the device check: timings through :mod:`gpu_benchmark` (its scan, entries and measurement: random
device-resident inputs, CUDA events after warm-up, the median of the repeats) at each size, largest first.

A size is skipped when the time the previous size took, scaled by the voxel updates, would pass the deadline; an
entry, when 1.5 times the previous entry's time would. Rates: GUPS (10⁹ voxel updates/s) for backprojection and
FDK, ray samples/s for the forward projection; bytes and floors as :func:`gpu_benchmark.measure` records them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("benchmarks.device_timing")


def timing(
    sizes: Sequence[tuple[int, int, int]], entries: Sequence[str], *, warmup: int, repeats: int, seed: int,
    deadline: float, record: dict[str, Any], progress: Callable[[], None] = lambda: None,
) -> str:
    """Time ``entries`` (names of :func:`gpu_benchmark.entries`) at each (volume edge, views, detector edge) of
    ``sizes`` into ``record``, before the ``time.monotonic()`` ``deadline``. Returns the part's status: "ok",
    "incomplete" (something skipped for time) or "failed" (an entry raised)."""
    import cupy as cp
    import gpu_benchmark as gb

    bandwidth = gb.copy_bandwidth()
    record.update(copy_bandwidth_bytes_per_s=bandwidth, runs={}, method={
        "timer": "CUDA events on the current stream", "warmup": warmup, "repeats": repeats, "statistic": "median",
        "inputs": f"random on the device, seed {seed}", "entries": list(entries)})
    previous: tuple[int, float] | None = None
    for size, views, detector in sizes:
        key = f"{size}^3 x {views} views of {detector}^2"
        updates = size ** 3 * views
        estimate = previous[1] * updates / previous[0] if previous else 0.0
        left = deadline - time.monotonic()
        if left < estimate:
            record["runs"][key] = {"skipped": f"time budget: ~{estimate:.0f} s needed, {left:.0f} s left"}
            log.warning("skipping %s: %s", key, record["runs"][key]["skipped"])
            continue
        start = time.monotonic()
        run = record["runs"][key] = {"results": {}}
        time_size((size, views, detector), entries, warmup=warmup, repeats=repeats, seed=seed, bandwidth=bandwidth,
                  deadline=deadline, run=run, progress=progress)
        cp.get_default_memory_pool().free_all_blocks()
        run["wall_s"] = time.monotonic() - start
        previous = (updates, run["wall_s"])
        progress()
    results = [r for run in record["runs"].values() for r in [run, *run.get("results", {}).values()]]
    if any("error" in r for r in results):
        return "failed"
    return "incomplete" if any("skipped" in r for r in results) else "ok"


def time_size(
    shape: tuple[int, int, int], entries: Sequence[str], *, warmup: int, repeats: int, seed: int, bandwidth: float,
    deadline: float, run: dict[str, Any], progress: Callable[[], None],
) -> None:
    """Time ``entries`` at one (volume edge, views, detector edge) into ``run``; its device arrays die with it."""
    import gpu_benchmark as gb

    start = time.monotonic()
    scan = gb.device_scan(*shape, seed)
    run["sizes"] = gb.scan_sizes(scan)
    run["ray_samples"] = gb.ray_samples(scan.geom)
    run["setup_s"] = time.monotonic() - start
    last = 0.0
    for name, entry in gb.entries(scan, run["ray_samples"], entries).items():
        if deadline - time.monotonic() < 1.5 * last:
            run["results"][name] = {"skipped": "time budget: the part's deadline is too near"}
            continue
        t0 = time.monotonic()
        try:
            run["results"][name] = gb.measure(name, entry, bandwidth=bandwidth, warmup=warmup, repeats=repeats)
        except Exception as exc:  # out of memory, a launch failure: recorded, the next entry still runs
            log.exception("%s failed", name)
            run["results"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        last = time.monotonic() - t0
        progress()
