"""Running a pipeline on a scan: :func:`run_pipeline` and its :class:`PipelineResult`."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cbct.backend import to_host
from cbct.geometry import VolumeGrid
from cbct.io import read_scan
from cbct.volume import Volume
from cbct.pipeline.spec import Pipeline, load_pipeline
from cbct.pipeline.state import PipelineState
from cbct.profiling import ProfileReport, Profiler
from cbct.scan import Scan

log = logging.getLogger(__name__)

__all__ = ["run_pipeline", "PipelineResult", "PipelineError", "check_device"]


class PipelineError(RuntimeError):
    """A stage failed; the message names the scan, the stage and the cause (kept as ``__cause__``)."""

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


@dataclasses.dataclass(frozen=True, eq=False)
class PipelineResult:
    """What a run produced.

    Attributes:
        volume: (nz, ny, nx) float32 NumPy array, mm⁻¹.
        grid: its voxel grid (voxel size ``(dz, dy, dx)`` and centre offset, mm).
        timings: wall seconds per stage label, in run order.
        outputs: files written by export stages, format → path.
        metadata: the scan's metadata as the stages left it.
        profile: detailed measurements when ``profile=True``.
        state: the final pipeline state.
    """

    volume: np.ndarray
    grid: VolumeGrid
    timings: dict[str, float]
    outputs: dict[str, pathlib.Path]
    metadata: dict[str, Any]
    profile: ProfileReport | None
    state: PipelineState

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """``(dz, dy, dx)`` in mm."""
        return self.grid.voxel_size

    @property
    def origin(self) -> tuple[float, float, float]:
        """World ``(z, y, x)`` position in mm of the centre of voxel ``(0, 0, 0)``."""
        g = self.grid
        return tuple(float(o - (n - 1) / 2 * d) for o, n, d in zip(g.offset, g.shape, g.voxel_size))

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel ``(i, j, k)`` = (x, y, z) index → world ``(x, y, z)`` mm."""
        return self.grid.index_to_world()

    def to_volume(self):
        """The result as a :class:`cbct.io.Volume` (for :func:`cbct.io.write_volume`)."""
        return Volume(self.volume, self.grid, {"units": "mm^-1", "scan_id": self.metadata.get("id")})


def check_device(device: str | None) -> str:
    """Normalise ``device`` (``None`` → ``"cpu"``); a CUDA device without CuPy or a GPU is a clear error."""
    if device is None or device == "cpu":
        return "cpu"
    if not isinstance(device, str) or not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    try:
        import cupy
    except ImportError:
        raise RuntimeError(f"device {device!r} needs CuPy (pip install 'cbct[gpu]'); use device='cpu'") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise RuntimeError(f"device {device!r}: CuPy finds no usable GPU ({exc})") from None
    index = int(device[5:]) if ":" in device else 0
    if index >= count:
        raise RuntimeError(f"device {device!r}: only {count} GPU(s) present")
    return device


def run_pipeline(
    pipeline: Pipeline | Mapping[str, Any] | str | os.PathLike,
    scan: Any,
    device: str | None = None,
    profile: bool = False,
    *,
    out_dir: str | os.PathLike | None = None,
    trace: str | os.PathLike | None = None,
    allow_any_stage: bool = False,
    on_stage: Callable[[int, int, str], None] | None = None,
) -> PipelineResult:
    """Run ``pipeline`` on ``scan``.

    Args:
        pipeline: a :class:`Pipeline`, a pipeline document, a YAML path or a built-in name (``"fdk"``).
        scan: a :class:`cbct.Scan`, a path to one (read with :func:`cbct.read_scan`) or a :class:`PipelineState`.
        device: ``"cpu"`` (default) or ``"cuda"``/``"cuda:N"`` (CuPy).
        profile: measure GPU time, GUPS and memory per stage (``result.profile``); wall times are always kept.
        out_dir: folder for export stages.
        trace: write a PyTorch profiler Chrome trace to this file (implies ``profile``).
        allow_any_stage: let stages be arbitrary ``module:function`` references (not only registered or installed
            ones; see :mod:`cbct.pipeline.registry`).
        on_stage: called as ``on_stage(index, count, label)`` before each stage (progress reporting).

    Raises:
        SchemaError / ImportError: the pipeline is invalid or a stage cannot be imported (before any stage runs).
        PipelineError: a stage failed (message names the scan and the stage).
    """
    pipe = load_pipeline(pipeline)
    steps = pipe.resolve(allow_any_stage=allow_any_stage)
    device = check_device(device)
    if isinstance(scan, (str, os.PathLike)):
        scan = read_scan(scan)
    if isinstance(scan, Scan):
        state = PipelineState.from_scan(scan)
    elif isinstance(scan, PipelineState):
        state = scan
    else:
        raise TypeError(f"scan must be a cbct.Scan, a path to one or a PipelineState, got {type(scan).__name__}")
    scan_id = state.metadata.get("id", "scan")
    state = state.replace(extras={**state.extras, "device": device, "pipeline": pipe.name,
                                  "out_dir": pathlib.Path(out_dir) if out_dir is not None else None})
    profiler = Profiler(device=device, enabled=bool(profile or trace), trace_path=trace)
    with profiler:
        for i, (stage, fn) in enumerate(steps):
            label = stage.name
            log.info("scan %s: stage %d/%d %s", scan_id, i + 1, len(steps), label)
            if on_stage is not None:
                on_stage(i, len(steps), label)
            try:
                with profiler.stage(label) as record:
                    new_state = fn(state, **stage.params)
                    if not isinstance(new_state, PipelineState):
                        raise TypeError(f"stage returned {type(new_state).__name__}, expected a PipelineState")
                    work = new_state.extras.get("voxel_updates")
                    if work is not None:
                        record.voxel_updates = int(work)
                        new_state = new_state.replace(extras={k: v for k, v in new_state.extras.items() if k != "voxel_updates"})
            except Exception as exc:
                raise PipelineError(f"scan '{scan_id}': stage {i + 1}/{len(steps)} '{label}' failed: "
                                    f"{type(exc).__name__}: {exc}", stage=label) from exc
            state = new_state
    if state.volume is None:
        raise PipelineError(f"scan '{scan_id}': pipeline {pipe.name!r} ended without a volume (no reconstruction stage?)")
    volume = np.ascontiguousarray(to_host(state.volume), dtype=np.float32)
    if volume.shape != state.geometry.volume.shape:
        raise PipelineError(f"scan '{scan_id}': the final volume has shape {volume.shape} but the geometry's grid is "
                            f"{state.geometry.volume.shape}")
    outputs = {k: pathlib.Path(v) for k, v in state.extras.get("outputs", {}).items()}
    return PipelineResult(volume=volume, grid=state.geometry.volume, timings=profiler.timings(), outputs=outputs,
                          metadata=dict(state.metadata), profile=profiler.report() if (profile or trace) else None,
                          state=state)
