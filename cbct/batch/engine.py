"""``run_batch``: a manifest through a pipeline on an executor, into a result store that cannot lie.

Order of work: everything that can be refused is refused first (manifest and pipeline validation, stage imports, a
pipeline that saves nothing, executor options), then the output folder is locked, temporaries of interrupted runs are
removed, finished scans whose fingerprint still matches are skipped, and the rest go to the executor. ``summary.json``
is rebuilt from the records on disk after every scan and at the end (also on Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import secrets
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from cbct.batch.executors import Executor, Outcome, make_executor
from cbct.batch.plan import Job, RunSettings, make_plan, shard
from cbct.batch.store import ResultStore, holder_info, now
from cbct.batch.worker import refuse_foreign
from cbct.io.atomic import write_text_atomic
from cbct.io.manifest import load_manifest
from cbct.pipeline import load_pipeline
from cbct.pipeline.engine import check_device
from cbct.schema import SchemaError

log = logging.getLogger(__name__)

__all__ = ["run_batch", "BatchInterrupted", "check_writes_outputs", "format_table"]


class BatchInterrupted(KeyboardInterrupt):
    """The batch process received SIGTERM (handled like Ctrl-C: workers stopped, records and summary written)."""


def check_writes_outputs(pipeline: Any, steps: Sequence[tuple[Any, Any]]) -> None:
    """Refuse a batch pipeline none of whose stages saves anything (a stage function marks itself with
    ``writes_outputs = True``, as ``export`` does)."""
    if not any(getattr(fn, "writes_outputs", False) for _, fn in steps):
        where = pipeline.source or f"pipeline {pipeline.name!r}"
        names = ", ".join(s.name for s, _ in steps)
        raise SchemaError(f"{where}: stages: no stage writes an output (stages: {names}); a batch would compute every "
                          "scan and keep nothing: add an export stage, e.g. '- stage: export' with "
                          "'params: {formats: [hdf5, nifti]}'", "stages")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise BatchInterrupted(f"signal {signum}")


class _Progress:
    """The progress bar over scans (ETA; the running scan's current stage) and one line per finished scan."""

    def __init__(self, total: int, label: str, mode: bool | str) -> None:
        from tqdm import tqdm

        self.enabled = bool(mode)
        self.bar = tqdm(total=total, desc=label, unit="scan", file=sys.stderr, dynamic_ncols=True,
                        disable=mode is not True or not sys.stderr.isatty())

    @property
    def shows_bar(self) -> bool:
        return not self.bar.disable

    def stage(self, scan_id: str, i: int, n: int, label: str) -> None:
        self.bar.set_postfix_str(f"{scan_id}: {label} ({i + 1}/{n})", refresh=True)

    def done(self, outcome: Outcome) -> None:
        self.bar.update(1)
        if self.enabled:
            line = f"{outcome['status']:>7}  {outcome['id']}"
            if outcome["status"] == "failed":
                line += f": {outcome.get('error')}"
            elif outcome.get("seconds") is not None:
                line += f"  ({outcome['seconds']:.1f} s)"
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def run_batch(
    manifest: str | os.PathLike,
    pipeline: Any,
    out: str | os.PathLike,
    *,
    executor: str | Executor = "local",
    workers: int | None = None,
    address: str | None = None,
    gpus_per_scan: float | None = None,
    device: str | None = None,
    force: bool = False,
    only: Sequence[str] | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    root: str | os.PathLike | None = None,
    wait: float | None = 0.0,
    profile: bool = False,
    trace: bool = False,
    allow_any_stage: bool = False,
    max_retries: int = 2,
    progress: bool | str = False,
) -> dict[str, Any]:
    """Process every scan of ``manifest`` with ``pipeline`` into ``out`` (one folder per scan); returns the summary
    (also ``out/summary.json``).

    Args:
        manifest: a manifest file or built-in name; pipeline: a :class:`cbct.Pipeline`, file or built-in name.
        executor: ``"local"``, ``"ray"`` or an executor object (:mod:`cbct.batch.executors`).
        workers: local worker processes (default: one per visible GPU with a CUDA device, else 1); with ``ray`` and no
            ``address``, the CPUs of the local cluster.
        address: Ray cluster to join; gpus_per_scan: Ray GPU share per scan (fractions allowed).
        device: ``cpu`` (default), ``cuda`` or ``cuda:N``.
        force: recompute finished scans (and replace folders that are not cbct results).
        only: process only these ids; num_parts, part_id: this run's share of the scans (Slurm job arrays).
        root: confine the manifest's files to this folder.
        wait: seconds to wait when another run holds ``out`` (``None``: wait as long as it takes; 0: refuse).
        profile, trace: record per-stage measurements (and a Chrome trace) in each ``result.json``.
        allow_any_stage: let the pipeline name arbitrary ``module:function`` stages.
        max_retries: retries of a scan whose worker died.
        progress: ``True``: a progress bar with ETA (on a terminal) and a line per scan on stderr; ``"lines"``: the
            lines only; ``False``: nothing.

    Raises:
        SchemaError, FileNotFoundError, ImportError, ValueError: invalid manifest, pipeline or options (nothing ran).
        LockedError: another run holds ``out`` after ``wait``.
        KeyboardInterrupt: Ctrl-C or SIGTERM (:class:`BatchInterrupted`); the summary says ``interrupted``.
    """
    manifest_obj = load_manifest(manifest, root=root)
    pipe = load_pipeline(pipeline)
    check_writes_outputs(pipe, pipe.resolve(allow_any_stage=allow_any_stage))
    kind = executor if isinstance(executor, str) else executor.name
    device = check_device(device) if kind == "local" else (device or "cpu")
    jobs_all = make_plan(manifest_obj, pipe, only=only)
    part = set(shard([j.id for j in jobs_all], num_parts, part_id))
    jobs = [j for j in jobs_all if j.id in part]
    runner = make_executor(executor, device=device, workers=workers, address=address, gpus_per_scan=gpus_per_scan,
                           max_retries=max_retries) if isinstance(executor, str) else executor

    runner.start()  # join a cluster before the output folder is touched
    try:
        return _run(runner, kind, manifest_obj, pipe, jobs_all, jobs, pathlib.Path(out).absolute(), device=device,
                    force=force, part=(part_id, num_parts), wait=wait, profile=profile, trace=trace,
                    allow_any_stage=allow_any_stage, progress=progress)
    finally:
        runner.close()


def _run(runner: Executor, kind: str, manifest_obj: Any, pipe: Any, jobs_all: list[Job], jobs: list[Job],
         out: pathlib.Path, *, device: str, force: bool, part: tuple[int, int], wait: float | None, profile: bool,
         trace: bool, allow_any_stage: bool, progress: bool | str) -> dict[str, Any]:
    """Lock ``out``, skip what is done, execute the rest and keep the records and the summary true."""
    part_id, num_parts = part
    out.mkdir(parents=True, exist_ok=True)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"
    store = ResultStore(out)
    store.lock(part=part, wait=wait, info=holder_info(run_id=run_id))
    settings = RunSettings(out=out, pipeline=pipe, run_id=run_id, manifest=str(manifest_obj.path), device=device,
                           profile=profile or trace, trace=trace, allow_any_stage=allow_any_stage)
    run: dict[str, Any] = {**holder_info(), "id": run_id, "executor": kind, "part": [part_id, num_parts],
                           "finished": None, "status": "running"}
    header = {"manifest": str(manifest_obj.path), "pipeline": pipe.name, "pipeline_digest": pipe.digest(), "out": str(out),
              "device": device, "executor": kind, "run": run}
    plan = [(j.id, j.digest) for j in jobs_all]
    bar = _Progress(len(jobs), f"cbct run {pipe.name}", progress)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        removed = store.remove_temporaries(None if num_parts == 1 else [j.id for j in jobs])
        if removed:
            log.warning("%s: removed %d temporaries left by an interrupted run", out, len(removed))
        write_text_atomic(out / "pipeline.json", json.dumps(pipe.to_dict(), indent=2))
        todo: list[Job] = []
        for job in jobs:
            done = store.result(job.id)
            if not force and done is not None and done.get("fingerprint_digest") == job.digest:
                bar.done({"id": job.id, "status": "skipped", "seconds": None})
                continue
            refused = None if force else refuse_foreign(store, job, run_id)
            if refused is not None:
                bar.done(refused)
                continue
            todo.append(job)
        store.write_run(run_id, {**run, "planned": [j.id for j in jobs], "computing": [j.id for j in todo]})
        store.write_summary(header, plan, run_id)
        log.info("%s: %d scans, %d to compute on %s", out, len(jobs), len(todo), kind)

        def on_outcome(outcome: Outcome) -> None:
            bar.done(outcome)
            store.write_summary(header, plan, run_id)

        runner.execute(todo, settings, force=force, on_outcome=on_outcome,
                       on_stage=bar.stage if bar.shows_bar else None)
        failed = any(store.scan_status(j.id, j.digest, run_id)["status"] == "failed" for j in jobs)
        run["status"] = "failed" if failed else "ok"
    except BaseException:
        run["status"] = "interrupted"
        raise
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if run["status"] == "interrupted":
            store.remove_temporaries([j.id for j in jobs])
        run["finished"] = now()
        store.write_run(run_id, {**run, "planned": [j.id for j in jobs]})
        summary = store.write_summary(header, plan, run_id)
        store.unlock()
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """The final table: every scan with its status, time and reason (one line each) and the counts."""
    rows = [("scan", "status", "seconds", "detail")]
    for item in summary["scans"]:
        seconds = item.get("seconds")
        detail = item.get("error") or item.get("reason") or ""
        rows.append((item["id"], item["status"], f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "-",
                     detail if len(detail) <= 160 else detail[:157] + "..."))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows]
    c = summary["counts"]
    lines.append(f"{c['ok']} finished, {c['skipped']} skipped, {c['failed']} failed, {c['pending']} pending "
                 f"(run {summary['run']['status']}; summary: {pathlib.Path(summary['out']) / 'summary.json'})")
    return "\n".join(lines)
