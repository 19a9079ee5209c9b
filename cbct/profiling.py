"""Profiling of pipeline stages: wall time, GPU time, GUPS, host and GPU memory, PyTorch traces and NVTX ranges.

What is measured, per stage:

- ``wall_s``: ``time.perf_counter`` around the stage; on a GPU device the stage is synchronised first, so queued
  kernels count where they ran.
- ``gpu_s``: CUDA events recorded on CuPy's current stream before and after the stage (CuPy and a GPU needed).
- ``gups``: 10⁹ voxel updates per second for stages that report ``voxel_updates`` (backprojections:
  voxels × views), over ``gpu_s`` when measured, else ``wall_s``.
- ``peak_traced_bytes``: peak of host memory traced by ``tracemalloc`` during the stage (NumPy arrays and Python
  objects; not memory that compiled code allocates outside Python's allocators).
- ``max_rss_bytes``: the process's peak resident set size so far (``resource``), a whole-process high-water mark.
- ``gpu_used_bytes`` (device memory in use after the stage, ``cudaMemGetInfo``) and ``torch_peak_bytes``
  (``torch.cuda.max_memory_allocated`` over the stage) when a GPU is present.

``trace_path`` records a PyTorch profiler trace (Chrome trace JSON, open in ``chrome://tracing`` or Perfetto) with one
``record_function`` range per stage. Each stage is also an NVTX range (``cupy.cuda.nvtx`` or ``torch.cuda.nvtx``)
that Nsight Systems shows: ``nsys profile -t cuda,nvtx cbct profile ...``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import sys
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

from cbct.io.atomic import atomic_path
from cbct.version import __version__

log = logging.getLogger(__name__)

__all__ = ["Profiler", "StageRecord", "ProfileReport", "nvtx_range", "cupy_gpu_available", "max_rss_bytes", "device_info"]


def cupy_gpu_available() -> bool:
    """Whether CuPy is installed and sees a CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # not installed, no driver, no device
        return False


def _torch_cuda() -> Any | None:
    """The torch module if it is already imported and has CUDA (never imports torch just to ask)."""
    torch = sys.modules.get("torch")
    try:
        return torch if torch is not None and torch.cuda.is_available() else None
    except Exception:
        return None


def max_rss_bytes() -> int | None:
    """Peak resident set size of this process in bytes (``None`` where ``resource`` is unavailable)."""
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


@contextlib.contextmanager
def nvtx_range(name: str, *, enabled: bool = True) -> Iterator[None]:
    """An NVTX range (CuPy's, else torch's when CUDA is there); a no-op without a GPU."""
    pushed = None
    if enabled:
        try:
            if cupy_gpu_available():
                from cupy.cuda import nvtx

                nvtx.RangePush(name)
                pushed = nvtx.RangePop
            elif (torch := _torch_cuda()) is not None:
                torch.cuda.nvtx.range_push(name)
                pushed = torch.cuda.nvtx.range_pop
        except Exception as exc:  # NVTX missing from the CUDA install: profiling goes on without ranges
            log.debug("NVTX unavailable: %s", exc)
            pushed = None
    try:
        yield
    finally:
        if pushed is not None:
            pushed()


@dataclasses.dataclass
class StageRecord:
    """Measurements of one stage (``None``: not measured here)."""

    name: str
    wall_s: float = 0.0
    gpu_s: float | None = None
    voxel_updates: int | None = None
    peak_traced_bytes: int | None = None
    max_rss_bytes: int | None = None
    gpu_used_bytes: int | None = None
    torch_peak_bytes: int | None = None

    @property
    def gups(self) -> float | None:
        if not self.voxel_updates:
            return None
        seconds = self.gpu_s if self.gpu_s else self.wall_s
        return self.voxel_updates / seconds / 1e9 if seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "gups": self.gups}


@dataclasses.dataclass
class ProfileReport:
    """All stage records of one run, the device, and the trace file if one was written."""

    stages: list[StageRecord]
    device: str
    total_wall_s: float
    trace_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "total_wall_s": self.total_wall_s, "trace_path": self.trace_path,
                "stages": [s.to_dict() for s in self.stages]}

    def format_table(self) -> str:
        """A plain-text table of the stages."""
        def mb(x: int | None) -> str:
            return "-" if x is None else f"{x / 2**20:.1f}"

        def num(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        header = f"{'stage':<18}{'wall s':>10}{'gpu s':>10}{'GUPS':>9}{'peak traced MiB':>17}{'max RSS MiB':>13}{'GPU used MiB':>14}"
        lines = [header, "-" * len(header)]
        for s in self.stages:
            lines.append(f"{s.name:<18}{s.wall_s:>10.4f}{num(s.gpu_s, '.4f'):>10}{num(s.gups, '.3f'):>9}"
                         f"{mb(s.peak_traced_bytes):>17}{mb(s.max_rss_bytes):>13}{mb(s.gpu_used_bytes):>14}")
        lines.append(f"{'total':<18}{self.total_wall_s:>10.4f}   device: {self.device}")
        if self.trace_path:
            lines.append(f"trace: {self.trace_path}")
        return "\n".join(lines)


class Profiler:
    """Measures stages; use as a context manager around a run and :meth:`stage` around each stage.

    Args:
        device: ``"cpu"`` or ``"cuda[:N]"``: GPU timing and memory are measured on a CUDA device with CuPy.
        enabled: ``False`` keeps only wall times (no tracemalloc, events or traces).
        trace_path: write a PyTorch profiler Chrome trace here (needs PyTorch; works on CPU).
        nvtx: emit NVTX ranges when a GPU is present.
    """

    def __init__(self, *, device: str = "cpu", enabled: bool = True, trace_path: str | os.PathLike | None = None,
                 nvtx: bool = True) -> None:
        self.device = device
        self.enabled = enabled
        self.trace_path = pathlib.Path(trace_path) if trace_path else None
        self.nvtx = nvtx
        self.records: list[StageRecord] = []
        self._gpu = enabled and device.startswith("cuda") and cupy_gpu_available()
        self._started_tracemalloc = False
        self._torch_prof = None
        self._t0 = 0.0
        self._total = 0.0

    def __enter__(self) -> Profiler:
        self._t0 = time.perf_counter()
        if self.trace_path is not None:
            try:
                import torch
                from torch.profiler import ProfilerActivity, profile
            except ImportError:
                raise RuntimeError("a profiler trace needs PyTorch (pip install torch)") from None
            activities = [ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(ProfilerActivity.CUDA)
            self._torch_prof = profile(activities=activities)
            self._torch_prof.__enter__()
        if self.enabled and not tracemalloc.is_tracing():  # after the imports above: tracing slows imports down
            tracemalloc.start()
            self._started_tracemalloc = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._total = time.perf_counter() - self._t0
        if self._torch_prof is not None:
            self._torch_prof.__exit__(*exc_info)
            with atomic_path(self.trace_path) as tmp:
                self._torch_prof.export_chrome_trace(str(tmp))
            log.info("profiler trace written to %s", self.trace_path)
        if self._started_tracemalloc:
            tracemalloc.stop()
            self._started_tracemalloc = False

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            if "cupy" in sys.modules:
                sys.modules["cupy"].cuda.Device().synchronize()
            if (torch := _torch_cuda()) is not None:
                torch.cuda.synchronize()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        """Measure the enclosed stage; set ``record.voxel_updates`` inside for GUPS."""
        record = StageRecord(name)
        torch = _torch_cuda() if self.enabled and self.device.startswith("cuda") else None
        if self.enabled and tracemalloc.is_tracing():
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        start = end = None
        if self._gpu:
            import cupy

            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        record_fn = None
        if self._torch_prof is not None:
            from torch.profiler import record_function

            record_fn = record_function(name)
            record_fn.__enter__()
        t0 = time.perf_counter()
        try:
            with nvtx_range(name, enabled=self.nvtx and self.enabled):
                yield record
            self._sync()
        finally:
            record.wall_s = time.perf_counter() - t0
            if record_fn is not None:
                record_fn.__exit__(None, None, None)
            if start is not None:
                import cupy

                end.record()
                end.synchronize()
                record.gpu_s = cupy.cuda.get_elapsed_time(start, end) / 1e3
                free, total = cupy.cuda.runtime.memGetInfo()
                record.gpu_used_bytes = int(total - free)
            if torch is not None:
                record.torch_peak_bytes = int(torch.cuda.max_memory_allocated())
            if self.enabled:
                if tracemalloc.is_tracing():
                    record.peak_traced_bytes = int(tracemalloc.get_traced_memory()[1] - base)
                record.max_rss_bytes = max_rss_bytes()
            self.records.append(record)

    def report(self) -> ProfileReport:
        total = self._total or (time.perf_counter() - self._t0)
        return ProfileReport(list(self.records), self.device, total, str(self.trace_path) if self.trace_path else None)

    def timings(self) -> dict[str, float]:
        return {r.name: r.wall_s for r in self.records}


def device_info() -> dict[str, Any]:
    """Backends and devices: CPU (Numba threads), CuPy/CUDA devices, torch and its CUDA, library versions."""
    import importlib.metadata
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(), "versions": {}}
    for dist in ("cbct", "numpy", "scipy", "numba", "h5py", "pyyaml", "tqdm", "pillow", "tifffile", "nibabel",
                 "pydicom", "torch", "cupy-cuda12x", "cupy-cuda11x", "cupy"):
        try:
            info["versions"][dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            if dist == "cbct":  # running from a source checkout
                info["versions"]["cbct"] = f"{__version__} (source checkout)"
    try:
        import numba

        info["cpu_backend"] = {"numba_threads": int(numba.config.NUMBA_NUM_THREADS),
                               "threading_layer": str(numba.config.THREADING_LAYER)}
    except Exception as exc:
        info["cpu_backend"] = {"error": str(exc)}
    cuda: dict[str, Any] = {"cupy": False, "devices": []}
    try:
        import cupy

        cuda["cupy"] = True
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            cuda["devices"].append({"index": i, "name": name, "memory_bytes": int(props["totalGlobalMem"]),
                                    "compute_capability": f"{props['major']}.{props['minor']}"})
        cuda["runtime_version"] = int(cupy.cuda.runtime.runtimeGetVersion())
    except ImportError:
        cuda["note"] = "CuPy is not installed (pip install 'cbct[gpu]' for the CUDA backend)"
    except Exception as exc:  # installed but no driver or device
        cuda["note"] = f"CuPy cannot use a GPU here: {exc}"
    info["cuda"] = cuda
    try:
        import torch

        info["torch"] = {"version": torch.__version__, "cuda_available": bool(torch.cuda.is_available()),
                         "cuda_version": torch.version.cuda}
    except ImportError:
        info["torch"] = None
    return info

