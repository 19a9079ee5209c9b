"""One job in a worker: read the scan, run the pipeline into a temporary folder, record the result or the failure.

:func:`run_job` runs wherever an executor puts it (a local worker process, a Ray task on another node); it writes
straight into the output folder, which must therefore be on storage every worker sees. Everything appears under
``OUT/<id>/`` in one rename, with its fingerprint, or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from cbct.batch.plan import Job, RunSettings
from cbct.batch.store import RESULT_FILE, ResultStore, now
from cbct.io.atomic import atomic_directory, write_text_atomic
from cbct.pipeline import run_pipeline
from cbct.version import __version__

log = logging.getLogger(__name__)

__all__ = ["run_job", "WORKER_FILE", "error_text", "StageCallback"]

WORKER_FILE = ".cbct-worker.json"
"""Written into a scan's temporary folder while a worker computes it: which process (pid, host) does the work."""

StageCallback = Callable[[str, int, int, str], None]


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 2000 else text[:2000] + " ..."


def _replace_reason(store: ResultStore, job: Job, force: bool) -> str:
    previous = store.result(job.id)
    if previous is None:
        return "new"
    if force:
        return "forced (--force)"
    old = previous.get("fingerprint") or {}
    changed = [key for key in ("input", "entry", "pipeline", "weights", "cbct_version")
               if old.get(key) != job.fingerprint.get(key)]
    return f"recomputed: {', '.join(changed) or 'fingerprint'} changed" if changed else "recomputed"


def run_job(job: Job, settings: RunSettings, *, force: bool = False, on_stage: StageCallback | None = None,
            attempt: int = 1) -> dict[str, Any]:
    """Process one scan and return a small outcome record (``status`` ``ok`` or ``failed``); never raises for a
    failure of the scan itself (it is recorded in the store instead)."""
    store = ResultStore(settings.out)
    for leftover in store.temporaries([job.id]):  # a worker that died on this scan earlier in this run
        try:
            died = json.loads((leftover / WORKER_FILE).read_text())
            attempt = max(attempt, int(died.get("attempt", 1)) + 1)
            log.warning("scan %s: attempt %s (pid %s on %s) died; this is attempt %d", job.id, died.get("attempt"),
                        died.get("pid"), died.get("host"), attempt)
        except (OSError, ValueError, AttributeError, TypeError):
            pass
    store.remove_temporaries([job.id])  # the run holds the lock on this scan: they are stale
    t0 = time.perf_counter()
    reason = _replace_reason(store, job, force)
    worker = {"pid": os.getpid(), "host": socket.gethostname(), "attempt": attempt}
    try:
        with atomic_directory(settings.out / job.id, overwrite=True) as tmp:
            (tmp / WORKER_FILE).write_text(json.dumps(worker))
            scan = job.entry.load()
            callback = (lambda i, n, label: on_stage(job.id, i, n, label)) if on_stage is not None else None
            result = run_pipeline(settings.pipeline, scan, device=settings.device, profile=settings.profile or settings.trace,
                                  out_dir=tmp, trace=(tmp / "trace.json") if settings.trace else None,
                                  allow_any_stage=settings.allow_any_stage, on_stage=callback)
            if not result.outputs:
                raise RuntimeError(f"pipeline {settings.pipeline.name!r} wrote no output for scan '{job.id}' (its export "
                                   "stages produced no files)")
            outputs = {fmt: str(pathlib.Path(p).relative_to(tmp)) for fmt, p in result.outputs.items()}
            seconds = round(time.perf_counter() - t0, 3)
            record = {
                "id": job.id, "status": "ok", "run_id": settings.run_id, "reason": reason,
                "pipeline": settings.pipeline.name, "pipeline_digest": settings.pipeline.digest(),
                "manifest": settings.manifest, "input": job.entry.describe(), "sha256": job.entry.sha256,
                "provenance": dict(job.entry.provenance), "device": settings.device, "worker": worker,
                "finished": now(), "seconds": seconds, "timings_s": result.timings, "outputs": outputs,
                "volume": {"shape": list(result.grid.shape), "voxel_size_mm": list(result.voxel_size),
                           "origin_mm": list(result.origin), "axes": "z, y, x", "units": "mm^-1"},
                "cbct_version": __version__, "fingerprint": job.fingerprint, "fingerprint_digest": job.digest,
            }
            if "motion_correction" in result.metadata:  # the gate's decision, per-view motion and declared pose
                record["motion_correction"] = result.metadata["motion_correction"]
            if result.profile is not None:
                record["profile"] = result.profile.to_dict()
                if settings.trace:
                    record["profile"]["trace_path"] = "trace.json"
            (tmp / WORKER_FILE).unlink()
            write_text_atomic(tmp / RESULT_FILE, json.dumps(record, indent=2, default=str))
    except Exception as exc:  # per-scan isolation: record it and let the batch go on
        log.debug("scan %s failed", job.id, exc_info=True)
        seconds = round(time.perf_counter() - t0, 3)
        error = error_text(exc)
        store.record_failure(job.id, {"id": job.id, "status": "failed", "run_id": settings.run_id, "error": error,
                                      "fingerprint_digest": job.digest, "finished": now(), "seconds": seconds,
                                      "worker": worker, "traceback": traceback.format_exc(limit=20)})
        return {"id": job.id, "status": "failed", "error": error, "seconds": seconds, "worker": worker}
    store.clear_failure(job.id)
    return {"id": job.id, "status": "ok", "seconds": seconds, "reason": reason, "worker": worker}


def refuse_foreign(store: ResultStore, job: Job, run_id: str) -> dict[str, Any] | None:
    """A failure outcome when ``OUT/<id>`` exists but is not a cbct result (never replaced without ``--force``)."""
    folder = store.out / job.id
    if folder.exists() and store.result(job.id) is None:
        error = (f"{folder} exists but holds no finished cbct result ({RESULT_FILE} missing or not 'ok'); it is not "
                 "replaced: remove it, or pass --force")
        store.record_failure(job.id, {"id": job.id, "status": "failed", "run_id": run_id, "error": error,
                                      "fingerprint_digest": job.digest, "finished": now(), "seconds": 0.0})
        return {"id": job.id, "status": "failed", "error": error, "seconds": 0.0}
    return None
