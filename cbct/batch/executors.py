"""Executors: where the jobs of a batch run.

- :class:`LocalExecutor`: worker processes on this machine, one per visible GPU (``CUDA_VISIBLE_DEVICES`` set per
  worker) or a chosen number of CPU workers; a worker that dies is replaced and its scan retried.
- :class:`RayExecutor`: one Ray task per scan (``pip install 'cbct[ray]'``), with a CPU and GPU share (fractions
  allowed), retried by Ray when its worker dies; joins a cluster (``address``) or starts a local one.

Both call :func:`cbct.batch.worker.run_job` in the worker, so the results are the same, bit for bit.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cbct.batch.plan import Job, RunSettings
from cbct.batch.store import ResultStore, now
from cbct.batch.worker import StageCallback, error_text, run_job

log = logging.getLogger(__name__)

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor", "visible_gpus", "Outcome"]

Outcome = dict[str, Any]
OutcomeCallback = Callable[[Outcome], None]


class Executor(Protocol):
    name: str

    def start(self) -> None:
        """Acquire what the executor needs (join a cluster); called before the output folder is touched."""

    def close(self) -> None:
        """Release what :meth:`start` acquired."""

    def execute(self, jobs: Sequence[Job], settings: RunSettings, *, force: bool, on_outcome: OutcomeCallback,
                on_stage: StageCallback | None = None) -> None:
        """Run every job, calling ``on_outcome`` as each finishes; returns when all did (or raises on interrupt)."""


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else those CuPy counts (none without)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import cupy

        return [str(i) for i in range(cupy.cuda.runtime.getDeviceCount())]
    except Exception:
        return []


def _died(job: Job, attempts: int, detail: str) -> Outcome:
    return {"id": job.id, "status": "failed", "seconds": None,
            "error": f"the worker computing scan '{job.id}' died ({detail}) on each of {attempts} attempt(s); "
                     "a crash in native code or the kernel's out-of-memory killer are the usual causes"}


def _record_failure(settings: RunSettings, job: Job, outcome: Outcome) -> None:
    ResultStore(settings.out).record_failure(job.id, {**outcome, "run_id": settings.run_id,
                                                      "fingerprint_digest": job.digest, "finished": now()})


# ---------------------------------------------------------------------------------------------------- local
_WORKER: dict[str, Any] = {}


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the batch process dies (even by SIGKILL), so no orphan computes on."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_local(slots: Any, events: Any, threads: int, level: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the batch process's to handle
    slot = slots.get(timeout=60)
    os.environ.update(slot["env"])
    _WORKER.update(device=slot["device"], events=events)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if threads:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _local_job(job: Job, settings: RunSettings, force: bool, attempt: int) -> Outcome:
    events = _WORKER.get("events")

    def on_stage(scan_id: str, i: int, n: int, label: str) -> None:
        if events is not None:
            events.put((scan_id, i, n, label))

    settings = dataclasses.replace(settings, device=_WORKER.get("device", settings.device))
    return run_job(job, settings, force=force, on_stage=on_stage, attempt=attempt)


class LocalExecutor:
    """Worker processes on this machine.

    Args:
        workers: CPU worker processes (default 1); with a CUDA device, default one per visible GPU.
        device: ``"cpu"``, ``"cuda"`` (every visible GPU, one worker each) or ``"cuda:N"`` (GPU N).
        max_retries: how often a scan whose worker died is tried again.
        threads_per_worker: Numba threads per worker (default: the CPU cores shared out among the workers).
    """

    name = "local"

    def __init__(self, workers: int | None = None, *, device: str = "cpu", max_retries: int = 2,
                 threads_per_worker: int | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
        if device.startswith("cuda"):
            gpus = visible_gpus() if device == "cuda" else [device.split(":")[1]]
            if not gpus:
                raise RuntimeError(f"device {device!r}: no visible GPU (CUDA_VISIBLE_DEVICES, CuPy)")
            n = workers or len(gpus)
            self.slots = [{"env": {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}, "device": "cuda:0"} for i in range(n)]
        else:
            n = workers or 1
            self.slots = [{"env": {}, "device": "cpu"} for _ in range(n)]
        self.workers = n
        self.max_retries = max_retries
        self.threads = threads_per_worker or max(1, (os.cpu_count() or 1) // n)

    def start(self) -> None:
        """Nothing to acquire: worker processes start with the first job."""

    def close(self) -> None:
        """Nothing to release: :meth:`execute` stops its workers."""

    def _pool(self, ctx: Any, events: Any) -> cf.ProcessPoolExecutor:
        slots = ctx.Queue()
        for slot in self.slots:
            slots.put(slot)
        return cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_local,
                                      initargs=(slots, events, self.threads, logging.getLogger("cbct").getEffectiveLevel()))

    def execute(self, jobs: Sequence[Job], settings: RunSettings, *, force: bool, on_outcome: OutcomeCallback,
                on_stage: StageCallback | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")  # no inherited locks, CUDA state or threads
        events = ctx.Queue()
        pending = collections.deque((job, 1) for job in jobs)
        inflight: dict[cf.Future, tuple[Job, int]] = {}
        pool = self._pool(ctx, events)
        try:
            while pending or inflight:
                while pending and len(inflight) < self.workers:
                    job, attempt = pending.popleft()
                    inflight[pool.submit(_local_job, job, settings, force, attempt)] = (job, attempt)
                done, _ = cf.wait(inflight, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                self._drain(events, on_stage)
                broken = False
                for future in done:
                    job, attempt = inflight.pop(future)
                    try:
                        outcome = future.result()
                    except cf.process.BrokenProcessPool:
                        broken = True
                        self._retry_or_fail(job, attempt, settings, pending, on_outcome)
                        continue
                    except Exception as exc:  # the job could not be sent or its outcome not returned (pickling)
                        outcome = {"id": job.id, "status": "failed", "seconds": None,
                                   "error": f"could not run scan '{job.id}' in a worker process: {error_text(exc)}"}
                        _record_failure(settings, job, outcome)
                    on_outcome(outcome)
                if broken:  # every scan in flight lost its worker: a fresh pool takes them again
                    for job, attempt in inflight.values():
                        self._retry_or_fail(job, attempt, settings, pending, on_outcome)
                    inflight.clear()
                    _terminate(pool)
                    pool = self._pool(ctx, events)
            self._drain(events, on_stage)
        finally:
            _terminate(pool)

    def _retry_or_fail(self, job: Job, attempt: int, settings: RunSettings, pending: collections.deque,
                       on_outcome: OutcomeCallback) -> None:
        if attempt <= self.max_retries:
            log.warning("the worker computing scan %s died (attempt %d); trying again", job.id, attempt)
            pending.appendleft((job, attempt + 1))
        else:
            outcome = _died(job, attempt, "worker process ended abruptly")
            _record_failure(settings, job, outcome)
            on_outcome(outcome)

    @staticmethod
    def _drain(events: Any, on_stage: StageCallback | None) -> None:
        while True:
            try:
                event = events.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if on_stage is not None:
                on_stage(*event)


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool now: running scans are abandoned (their temporaries are removed by the next job or run)."""
    processes = list(getattr(pool, "_processes", {}).values())  # the executor offers no public kill
    for process in processes:
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------- ray
def _ray_job(job: Job, settings: RunSettings, force: bool, threads: int, events: Any = None) -> Outcome:
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))

    def on_stage(scan_id: str, i: int, n: int, label: str) -> None:
        try:
            events.put_nowait((scan_id, i, n, label))
        except Exception:  # progress is best effort: never fail a scan for it
            pass

    return run_job(job, settings, force=force, on_stage=on_stage if events is not None else None)


class RayExecutor:
    """One Ray task per scan.

    Args:
        address: a running cluster (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``); ``None``: the cluster this
            process is already connected to, else a local one started for the batch and stopped after it.
        device: ``"cpu"`` or ``"cuda"`` (each task uses the GPU Ray assigns it).
        gpus_per_scan: GPU share per task (fractions let small scans share a GPU); default 1 with a CUDA device.
        cpus_per_scan: CPU share per task (also its Numba threads).
        max_retries: how often Ray retries a task whose worker died.
        init_options: more keyword arguments of ``ray.init`` (a local cluster's ``num_cpus``, ``num_gpus``, ...).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, device: str = "cpu", gpus_per_scan: float | None = None,
                 cpus_per_scan: float = 1, max_retries: int = 2, init_options: dict[str, Any] | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ImportError("the ray executor needs Ray: pip install 'cbct[ray]'") from None
        if gpus_per_scan is not None and not gpus_per_scan >= 0:
            raise ValueError(f"gpus_per_scan must be >= 0, got {gpus_per_scan!r}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"with the ray executor the device is 'cpu' or 'cuda' (Ray assigns the GPU), got {device!r}")
        self.address, self.device, self.max_retries = address, device, max_retries
        self.gpus = gpus_per_scan if gpus_per_scan is not None else (1.0 if device == "cuda" else 0.0)
        if device == "cuda" and self.gpus == 0:
            raise ValueError("device 'cuda' with the ray executor needs a GPU share per scan (gpus_per_scan > 0)")
        self.cpus = cpus_per_scan
        self.init_options = dict(init_options or {})

    def start(self) -> None:
        """Join the cluster (``address``), keep the one this process is connected to, or start a local one."""
        import ray

        self.owns = not ray.is_initialized()
        if self.owns:
            options = {"include_dashboard": False, "log_to_driver": False, **self.init_options}
            try:
                ray.init(address=self.address, **options)
            except ConnectionError as exc:
                raise ConnectionError(
                    f"cannot join the Ray cluster at {self.address}: {exc}. Is it running (`ray status` on the head "
                    "node)? Ray >= 2.59 authenticates with a token: set RAY_AUTH_MODE=token and give the cluster's "
                    "token (~/.ray/auth_token from the head node, or RAY_AUTH_TOKEN) where cbct run starts") from None
        resources = ray.cluster_resources()
        log.info("ray cluster: %s", resources)
        if self.gpus > 0 and resources.get("GPU", 0) < self.gpus:
            self.close()
            raise RuntimeError(f"each scan asks for {self.gpus:g} GPU but the Ray cluster has {resources.get('GPU', 0):g} "
                               "GPUs: start the nodes with GPUs, or lower --gpus-per-scan")

    def close(self) -> None:
        import ray

        if getattr(self, "owns", False) and ray.is_initialized():
            ray.shutdown()
        self.owns = False

    def execute(self, jobs: Sequence[Job], settings: RunSettings, *, force: bool, on_outcome: OutcomeCallback,
                on_stage: StageCallback | None = None) -> None:
        import ray

        if not ray.is_initialized():
            self.start()
        task = ray.remote(_ray_job).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries,
                                            retry_exceptions=False)
        settings = dataclasses.replace(settings, device="cuda:0" if self.device == "cuda" else "cpu")
        threads = max(1, int(self.cpus))
        events = None
        if on_stage is not None:  # stage progress through a small queue actor (only when someone watches)
            from ray.util.queue import Queue

            events = Queue(actor_options={"num_cpus": 0})
        refs = {task.remote(job, settings, force, threads, events): job for job in jobs}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                while events is not None and not events.empty():
                    on_stage(*events.get_nowait())
                for ref in ready:
                    job = refs.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        outcome = _died(job, self.max_retries + 1, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                        _record_failure(settings, job, outcome)
                    on_outcome(outcome)
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            if events is not None:
                events.shutdown()


def make_executor(kind: str, *, device: str = "cpu", workers: int | None = None, address: str | None = None,
                  gpus_per_scan: float | None = None, max_retries: int = 2) -> Executor:
    """An executor by name (``"local"`` or ``"ray"``) with the command line's options."""
    if kind == "local":
        if address is not None or gpus_per_scan is not None:
            raise ValueError("address and gpus_per_scan apply to the ray executor (--executor ray)")
        return LocalExecutor(workers, device=device, max_retries=max_retries)
    if kind == "ray":
        init = {"num_cpus": workers} if workers is not None and address is None else {}
        return RayExecutor(address, device="cuda" if device.startswith("cuda") else "cpu", gpus_per_scan=gpus_per_scan,
                           max_retries=max_retries, init_options=init)
    raise ValueError(f"executor must be 'local' or 'ray', got {kind!r}")
