"""The batch engine: a plan of jobs from a manifest, executors that run them, a result store that cannot lie.

``run_batch(manifest, pipeline, out, executor="local" | "ray", ...)`` is the entry point (``cbct.run_batch``; the
``cbct run`` command is a thin layer over it). Modules: :mod:`~cbct.batch.plan` (jobs and their fingerprints),
:mod:`~cbct.batch.executors` (local worker processes, Ray tasks), :mod:`~cbct.batch.store` (locks, records,
``summary.json``), :mod:`~cbct.batch.worker` (one scan in a worker), :mod:`~cbct.batch.engine` (the orchestration).
"""

from cbct.batch.engine import BatchInterrupted, format_table, run_batch
from cbct.batch.executors import LocalExecutor, RayExecutor, make_executor
from cbct.batch.plan import Job, RunSettings, make_plan, shard
from cbct.batch.store import RESULT_FILE, SUMMARY_FILE, LockedError, ResultStore

__all__ = ["run_batch", "BatchInterrupted", "format_table", "LocalExecutor", "RayExecutor", "make_executor", "Job",
           "RunSettings", "make_plan", "shard", "ResultStore", "LockedError", "RESULT_FILE", "SUMMARY_FILE"]
