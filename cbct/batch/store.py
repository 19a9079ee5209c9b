"""The result store of a batch's output folder: results that cannot lie.

Layout of ``OUT/``::

    <id>/result.json         a finished scan: its outputs and the fingerprint of what made them
    summary.json             rebuilt (atomically) from the records on disk after every change
    pipeline.json            the pipeline of the latest run
    .cbct/lock               one run at a time (flock; the holder is written into it)
    .cbct/part-K-of-N.lock   one run per part of a sharded run (parts share .cbct/lock)
    .cbct/failed/<id>.json   the latest failure of a scan (removed when it finishes)
    .cbct/runs/<run>.json    what each run planned and how it ended

Locks are ``flock`` locks: the kernel releases them when their process dies (SIGKILL included), so a crashed run
never blocks the next; the next run removes the temporaries it left.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import pathlib
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cbct.io import read_volume
from cbct.io.atomic import TMP_MARKER, write_text_atomic

log = logging.getLogger(__name__)

__all__ = ["ResultStore", "LockedError", "RESULT_FILE", "SUMMARY_FILE", "now", "holder_info"]

RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.json"
STATE_DIR = ".cbct"
STATUSES = ("ok", "skipped", "failed", "pending")


class LockedError(RuntimeError):
    """Another run holds the output folder (the message names it)."""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def holder_info(**extra: Any) -> dict[str, Any]:
    """Who this process is: pid, host, start time and command line."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": now(), "command": " ".join(sys.argv), **extra}


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ResultStore:
    """The records of one output folder (see the module notes)."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = pathlib.Path(out).absolute()
        self.state = self.out / STATE_DIR
        self._fds: list[int] = []
        self._cache: dict[pathlib.Path, tuple[tuple[int, int], Any]] = {}

    # ------------------------------------------------------------------ locking
    def _open(self, name: str) -> int:
        self.state.mkdir(parents=True, exist_ok=True)
        return os.open(self.state / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _holders(self) -> str:
        found = []
        for path in [self.state / "lock", *sorted(self.state.glob("part-*.lock"))]:
            try:
                text = path.read_text().strip()
            except OSError:
                continue
            if text:
                info = _read_json_text(text)
                found.append(f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} "
                             f"({info.get('command', '')!s})" if isinstance(info, dict) else text)
        return "; ".join(found) or "another cbct run (holder not recorded)"

    def lock(self, *, part: tuple[int, int] = (0, 1), wait: float | None = 0.0, info: Mapping[str, Any] | None = None) -> None:
        """Take the folder for this run: exclusive for a whole run, shared plus the part's own lock for a part.

        Args:
            part: ``(part_id, num_parts)``.
            wait: seconds to wait for a busy folder (``None``: as long as it takes; 0: refuse at once).
            info: what to record as the holder.

        Raises:
            LockedError: the folder (or this part) is still held after ``wait``, naming the holder.
        """
        part_id, num_parts = part
        wanted = [("lock", fcntl.LOCK_EX if num_parts == 1 else fcntl.LOCK_SH)]
        if num_parts > 1:
            wanted.append((f"part-{part_id}-of-{num_parts}.lock", fcntl.LOCK_EX))
        deadline = None if wait is None else time.monotonic() + wait
        announced = False
        for name, mode in wanted:
            fd = self._open(name)
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        os.close(fd)
                        raise
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    self.unlock()
                    what = f"part {part_id} of {num_parts} of " if name.startswith("part") else ""
                    raise LockedError(f"{self.out}: {what}this output folder is in use by {self._holders()}; one run at a "
                                      "time per folder: wait for it (--wait SECONDS), or choose another --out")
                if not announced:
                    log.warning("%s is in use by %s; waiting", self.out, self._holders())
                    announced = True
                time.sleep(0.2)
            self._fds.append(fd)
            os.ftruncate(fd, 0)  # what it holds is stale: no one holds it exclusively now
            if mode == fcntl.LOCK_EX:
                os.pwrite(fd, json.dumps(dict(info or holder_info())).encode(), 0)

    def unlock(self) -> None:
        for fd in reversed(self._fds):
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing releases the flock
        self._fds.clear()

    # ------------------------------------------------------------------ temporaries
    def temporaries(self, ids: Iterable[str] | None = None) -> list[pathlib.Path]:
        """Temporary entries left in the folder (of the scans ``ids``; all when ``None``)."""
        if not self.out.is_dir():
            return []
        if ids is None:
            return sorted(p for p in self.out.glob(f".*{TMP_MARKER}*"))
        found = []
        for i in ids:
            found += self.out.glob(f".{i}{TMP_MARKER}*")
            found += self.out.glob(f".{i}.old{TMP_MARKER}*")
        return sorted(found)

    def remove_temporaries(self, ids: Iterable[str] | None = None) -> list[str]:
        """Delete the temporaries of interrupted runs (call with the lock held); returns their names."""
        removed = []
        for path in self.temporaries(ids):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
        if removed:
            log.info("%s: removed %d temporaries of interrupted runs: %s", self.out, len(removed), removed)
        return removed

    # ------------------------------------------------------------------ records
    def _cached(self, path: pathlib.Path) -> Any:
        try:
            st = path.stat()
        except OSError:
            self._cache.pop(path, None)
            return None
        key = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        doc = _read_json(path)
        self._cache[path] = (key, doc)
        return doc

    def result(self, scan_id: str) -> dict[str, Any] | None:
        """The finished record of ``scan_id`` (``OUT/<id>/result.json`` with status ok), or ``None``."""
        doc = self._cached(self.out / scan_id / RESULT_FILE)
        return doc if isinstance(doc, dict) and doc.get("status") == "ok" else None

    def volumes(self) -> dict[str, Any]:
        """Scan id → the (z, y, x) float32 volume of every finished scan that recorded an HDF5 output, read back
        from that output."""
        found = {}
        for record in sorted(self.out.glob(f"*/{RESULT_FILE}")):
            scan_id = record.parent.name
            result = self.result(scan_id)
            output = (result or {}).get("outputs", {}).get("hdf5")
            if output is not None:
                found[scan_id] = read_volume(record.parent / output, format="hdf5").data
        return found

    def failure(self, scan_id: str) -> dict[str, Any] | None:
        doc = self._cached(self.state / "failed" / f"{scan_id}.json")
        return doc if isinstance(doc, dict) else None

    def record_failure(self, scan_id: str, record: Mapping[str, Any]) -> None:
        (self.state / "failed").mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.state / "failed" / f"{scan_id}.json", json.dumps(dict(record), indent=2, default=str))

    def clear_failure(self, scan_id: str) -> None:
        (self.state / "failed" / f"{scan_id}.json").unlink(missing_ok=True)

    def write_run(self, run_id: str, record: Mapping[str, Any]) -> None:
        (self.state / "runs").mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.state / "runs" / f"{run_id}.json", json.dumps(dict(record), indent=2, default=str))

    # ------------------------------------------------------------------ summary
    def scan_status(self, scan_id: str, digest: str, run_id: str) -> dict[str, Any]:
        """What the disk says about ``scan_id`` for a plan whose fingerprint digest is ``digest``."""
        item: dict[str, Any] = {"id": scan_id, "dir": str(self.out / scan_id)}
        result = self.result(scan_id)
        if result is not None and result.get("fingerprint_digest") == digest:
            item.update(status="ok" if result.get("run_id") == run_id else "skipped", run_id=result.get("run_id"),
                        outputs=result.get("outputs", {}), seconds=result.get("seconds"),
                        timings_s=result.get("timings_s", {}), finished=result.get("finished"))
            if item["status"] == "ok" and result.get("reason"):
                item["reason"] = result["reason"]
            if item["status"] == "skipped":
                item["reason"] = "finished earlier with the same input, pipeline, weights and cbct version"
            return item
        failure = self.failure(scan_id)
        if failure is not None and failure.get("run_id") == run_id:
            item.update(status="failed", run_id=run_id, error=failure.get("error"), seconds=failure.get("seconds"))
            if result is not None:
                item["stale_result"] = (f"{item['dir']} still holds a result of {result.get('finished')} whose "
                                        "fingerprint no longer matches: it is out of date")
            return item
        item["status"] = "pending"
        if result is not None:
            item["reason"] = "result on disk is out of date (input, manifest entry, pipeline, weights or version changed)"
        return item

    def write_summary(self, header: Mapping[str, Any], plan: Sequence[tuple[str, str]], run_id: str) -> dict[str, Any]:
        """Rebuild ``summary.json`` from the records on disk for ``plan`` (``(id, digest)`` pairs); returns it."""
        scans = [self.scan_status(i, d, run_id) for i, d in plan]
        counts = {s: 0 for s in STATUSES}
        for item in scans:
            counts[item["status"]] += 1
        summary = {**header, "counts": counts, "scans": scans, "written": now()}
        write_text_atomic(self.out / SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
        return summary


def _read_json_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
