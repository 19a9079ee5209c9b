"""One-call device check: the GPU tests, GPU against the CPU harness and the Numba twin, and timings, in one JSON.

    python benchmarks/device_check.py --out benchmarks/results/       # on a GPU machine: under 8 minutes
    python benchmarks/device_check.py --out /tmp/x --dry-run          # anywhere: the plan, nothing run

Parts, each in its own process under a hard time limit (a kernel fault in one cannot take the others down):
``tests`` runs ``pytest -q -m gpu tests`` (counts, failures and their short messages from JUnit XML); ``compare``
runs every kernel specialisation on the GPU, the CPU harness and the twin (:mod:`device_compare`); ``timing``
(:mod:`device_timing`, through :mod:`gpu_benchmark`: CUDA events after warm-up, medians) times the FDK
backprojection (GUPS), the forward projection (ray samples/s), FDK end to end on the device and the segmented
(K = 8) backprojection at 512³ × 360 views of 512², then 256³ × 256 views of 256².

Time: ``--budget`` seconds in all (default 450). A part runs at most its own budget, and never so long that a
later part loses its minimum (timing keeps 150 s: the 512³ runs fit); one with less than its minimum left is
skipped, with the reason in the JSON. Without a GPU every part is recorded as skipped ("no GPU"); exit 0.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import pathlib
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

log = logging.getLogger("benchmarks.device_check")

TIMED_ENTRIES = ("fdk_backprojection[exact,float32]", "forward_projection[exact,float32]",
                 "fdk_end_to_end[device]", "segmented_backprojection[K=8]")
PACKAGES = ("numpy", "scipy", "numba", "llvmlite", "cupy-cuda13x", "cupy-cuda12x", "h5py", "nibabel", "pydicom",
            "torch", "pytest", "pytest-timeout")
CHILD_MARGIN_S = 5.0  # a child part stops starting work this long before its limit
KILL_GRACE_S = 5.0  # after its limit, a part's process gets this long before it is killed


class Part(NamedTuple):
    """A part of the check: it may run ``budget_s`` seconds at most and is skipped with under ``minimum_s``."""

    name: str
    budget_s: float
    minimum_s: float


PARTS = (Part("tests", 150.0, 30.0), Part("compare", 120.0, 30.0), Part("timing", 300.0, 150.0))


# ----------------------------------------------------------------------------------------- time budget
def part_limit(part: Part, later: Sequence[Part], remaining_s: float) -> float | None:
    """Seconds ``part`` may run: its budget, less whatever the ``later`` parts' minimums need of the
    ``remaining_s``; None when that is under its own minimum (skip it)."""
    limit = min(part.budget_s, remaining_s - sum(p.minimum_s for p in later))
    return limit if limit >= part.minimum_s else None


def run_parts(
    parts: Sequence[Part], runners: Mapping[str, Callable[[float], dict[str, Any]]], *, total_s: float,
    started: float, clock: Callable[[], float] = time.monotonic, after: Callable[[dict], None] = lambda records: None,
) -> dict[str, dict[str, Any]]:
    """Run each part's runner with its limit (s) in order, within ``total_s`` seconds of ``started`` (``clock``
    time); each record gets ``limit_s`` and ``wall_s``, or status "skipped" with the reason. ``after(records)``
    follows each part."""
    records: dict[str, dict[str, Any]] = {}
    for index, part in enumerate(parts):
        remaining = total_s - (clock() - started)
        later = parts[index + 1:]
        limit = part_limit(part, later, remaining)
        if limit is None:
            records[part.name] = {"status": "skipped", "reason": (
                f"time budget: {remaining:.0f} s left of {total_s:.0f} s; {part.name} needs at least {part.minimum_s:.0f} s"
                f" and the parts after it keep {sum(p.minimum_s for p in later):.0f} s")}
            log.warning("skipping %s: %s", part.name, records[part.name]["reason"])
            continue
        log.info("== part %s: up to %.0f s", part.name, limit)
        start = clock()
        try:
            record = runners[part.name](limit)
        except Exception as exc:  # recorded; the later parts still run
            log.exception("part %s failed", part.name)
            record = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        records[part.name] = {**record, "limit_s": limit, "wall_s": clock() - start}
        after(records)
    return records


# ----------------------------------------------------------------------------------------- processes
def run_with_limit(cmd: Sequence[str], limit_s: float, *, capture: bool) -> tuple[int | None, str]:
    """Run ``cmd`` in ``ROOT`` (first on ``PYTHONPATH``, unbuffered) in a new process group; kill the group after
    ``limit_s`` seconds. Returns (exit code, or None when killed; its output when ``capture``)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)
    env.setdefault("CBCT_EMULATOR_THREADS", str(os.cpu_count() or 1))  # the CPU harness's blocks on every core
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE if capture else None, stderr=subprocess.STDOUT if capture else None)
    try:
        output, _ = proc.communicate(timeout=limit_s)
        return proc.returncode, output or ""
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output or ""


# ----------------------------------------------------------------------------------------- part 1: tests
def parse_junit(path: pathlib.Path) -> dict[str, Any]:
    """Counts, failures (name, short message) and collection errors from pytest's JUnit XML."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, collection, skips = [], [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}" if case.get("classname") else case.get("name", "?")
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None and problem.get("message") == "collection failure":
            lines = [line[4:] for line in (problem.text or "").splitlines() if line.startswith("E   ")]
            collection.append({"module": name, "message": (lines[-1] if lines else "")[:300]})
        elif problem is not None:
            counts["failed" if problem.tag == "failure" else "errors"] += 1
            failures.append({"name": name, "kind": problem.tag, "message": (problem.get("message") or "")[:300]})
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
            reason = (case.find("skipped").get("message") or "")[:200]
            skips[reason] = skips.get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures, "collection_errors": collection, "skip_reasons": skips}


def tests_part(limit_s: float, tests_path: pathlib.Path = ROOT / "tests") -> dict[str, Any]:
    """Part 1: the GPU-marked tests in a subprocess, killed after ``limit_s`` s (and each test after a third of
    that, where pytest-timeout is installed). Status "ok": no failure, at least one pass, and no collection
    error other than a missing optional package."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = pathlib.Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(tests_path), "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={junit}", "-rfE"]
        if importlib.util.find_spec("pytest_timeout") is not None:
            cmd.append(f"--timeout={max(10, int(limit_s / 3))}")
        code, output = run_with_limit(cmd, limit_s, capture=True)
        record: dict[str, Any] = {"command": " ".join(cmd[1:]).replace(str(junit), "<junit.xml>"), "exit_code": code}
        if junit.exists():
            record.update(parse_junit(junit))
    tail = output.strip().splitlines()[-15:]
    record["output_tail"] = "\n".join(tail)
    log.info("pytest:\n%s", record["output_tail"])
    if code is None or "passed" not in record:
        why = f"pytest killed after {limit_s:.0f} s" if code is None else "pytest wrote no JUnit report"
        return {**record, "status": "timed out" if code is None else "error", "reason": why}
    hard = [e for e in record["collection_errors"] if not e["message"].startswith("ModuleNotFoundError")]
    if record["failed"] == record["errors"] == 0 and record["passed"] > 0 and not hard:
        return {**record, "status": "ok"}
    why = f"{record['passed']} passed, {record['failed']} failed, {record['errors']} errors, {record['skipped']} skipped"
    return {**record, "status": "failed", "reason": why + (f", {len(hard)} modules not collected" if hard else "")}


# ----------------------------------------------------------------------------------------- parts 2 and 3: children
def child_part(name: str, args: argparse.Namespace, limit_s: float) -> dict[str, Any]:
    """Run part ``name`` as ``device_check.py --part name`` under ``limit_s``; its JSON, partial when killed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / f"{name}.json"
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), *child_argv(args, name, out, limit_s)]
        code, _ = run_with_limit(cmd, limit_s + KILL_GRACE_S, capture=False)
        record = json.loads(out.read_text()) if out.exists() else {}
    if code is None:
        record.update(status="timed out", reason=f"killed after {limit_s + KILL_GRACE_S:.0f} s; results so far kept")
    elif code != 0 and record.get("status") in (None, "running"):
        record.update(status="error", reason=record.get("reason", f"exit code {code}"))
    return record


def child_argv(args: argparse.Namespace, part: str, out: pathlib.Path, limit_s: float) -> list[str]:
    sizes = ",".join(":".join(map(str, s)) for s in args.timing_sizes)
    return ["--part", part, "--part-out", str(out), "--part-limit", f"{limit_s:.1f}", "--seed", str(args.seed),
            "--compare-size", str(args.compare_size), "--compare-views", str(args.compare_views),
            "--timing-sizes", sizes, "--warmup", str(args.warmup), "--repeats", str(args.repeats)]


def compare_child(args: argparse.Namespace, deadline: float, record: dict[str, Any], progress: Callable[[], None]) -> str:
    import device_compare

    scan = device_compare.compare_scan(args.compare_size, args.compare_views, args.seed)
    device_compare.compare(scan, deadline=deadline, record=record, progress=progress)
    record["problems"] = device_compare.problems(record)
    if record["problems"] or not record["harness"]["available"]:
        problems = record["problems"]
        record["reason"] = f"{len(problems)} problems, first: {problems[0]}" if problems else record["harness"]["reason"]
    return "failed" if record["problems"] else "ok"


def timing_child(args: argparse.Namespace, deadline: float, record: dict[str, Any], progress: Callable[[], None]) -> str:
    import device_timing

    return device_timing.timing(args.timing_sizes, TIMED_ENTRIES, warmup=args.warmup, repeats=args.repeats,
                                seed=args.seed, deadline=deadline, record=record, progress=progress)


def child_main(args: argparse.Namespace) -> int:
    """Entry of a part's own process: fill a record, writing it to ``--part-out`` after each step."""
    deadline = time.monotonic() + args.part_limit - CHILD_MARGIN_S
    record: dict[str, Any] = {"status": "running"}

    def progress() -> None:
        write_json(args.part_out, record)

    try:
        record["status"] = {"compare": compare_child, "timing": timing_child}[args.part](args, deadline, record, progress)
    except Exception as exc:
        log.exception("part %s failed", args.part)
        record.update(status="error", reason=f"{type(exc).__name__}: {exc}")
    progress()
    return 0 if record["status"] == "ok" else 1


# ----------------------------------------------------------------------------------------- environment, output
def gpu_info() -> dict[str, Any]:
    """The GPU (name, compute capability, driver and runtime versions, CuPy, NVRTC), or why there is none."""
    from cbct.cuda import is_available

    if not is_available():
        return {"available": False, "reason": "no GPU: CuPy is missing or sees no CUDA device"}
    import cupy as cp
    import gpu_benchmark as gb

    info: dict[str, Any] = {"available": True}
    try:  # a CuPy that words a property otherwise must not stop the check
        info.update(gb.gpu_description())
        info["nvrtc_version"] = list(cp.cuda.nvrtc.getVersion())
    except Exception as exc:
        info["description_error"] = f"{type(exc).__name__}: {exc}"
    return info


def nvidia_smi() -> dict[str, str] | str:
    fields = "name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError) as exc:  # not installed (FileNotFoundError), hung
        return f"{type(exc).__name__}: {exc}"
    return dict(zip(fields.split(","), (v.strip() for v in out[0].split(",")))) if out else "no output"


def environment() -> dict[str, Any]:
    versions = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()
                if (d.metadata["Name"] or "").lower() in PACKAGES}
    return {"python": platform.python_version(), "executable": sys.executable, "machine": platform.machine(),
            "cpus": os.cpu_count(), "packages": versions, "nvidia_smi": nvidia_smi()}


def jsonable(x: Any) -> Any:
    """``x`` with NaN/inf as None and tuples/NumPy scalars as plain JSON values."""
    if isinstance(x, (dict, list, tuple)):
        return {str(k): jsonable(v) for k, v in x.items()} if isinstance(x, dict) else [jsonable(v) for v in x]
    x = x.item() if hasattr(x, "item") and not isinstance(x, (str, bytes)) else x
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_json(path: pathlib.Path, data: Mapping[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    from cbct.io.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------------------- command line
def timing_sizes(text: str) -> list[tuple[int, int, int]]:
    """``"512:360:512,256:256:256"`` → [(volume edge, views, detector edge), ...]."""
    try:
        sizes = [tuple(int(v) for v in item.split(":")) for item in text.split(",") if item]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 3 or min(s) < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected SIZE:VIEWS:DETECTOR[,...] of positive integers, got {text!r}")
    return sizes  # type: ignore[return-value]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, help="folder for device_check_<gpu>_<time>.json (required)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for everything (default 450)")
    parser.add_argument("--parts", default=",".join(p.name for p in PARTS), help="comma-separated subset of tests,compare,timing")
    parser.add_argument("--dry-run", action="store_true", help="write the plan only; run nothing")
    parser.add_argument("--compare-size", type=int, default=64, help="volume edge of the comparison scan (default 64)")
    parser.add_argument("--compare-views", type=int, default=72, help="views of the comparison scan (default 72)")
    parser.add_argument("--timing-sizes", type=timing_sizes, default=timing_sizes("512:360:512,256:256:256"),
                        help="SIZE:VIEWS:DETECTOR,... timed in this order (default 512:360:512,256:256:256)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=("compare", "timing"), help=argparse.SUPPRESS)
    parser.add_argument("--part-out", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--part-limit", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [p for p in args.parts.split(",") if p]
    unknown = set(names) - {p.name for p in PARTS}
    if unknown or not names:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from {[p.name for p in PARTS]}")
    args.parts = [p for p in PARTS if p.name in names]
    if args.budget <= 0 or args.repeats < 1 or args.warmup < 0 or args.compare_views < 8 or args.compare_size < 4:
        parser.error("--budget > 0, --repeats >= 1, --warmup >= 0, --compare-views >= 8 and --compare-size >= 4")
    if (args.part is None and args.out is None) or (args.part is not None and None in (args.part_out, args.part_limit)):
        parser.error("--out is required (and a part's own process needs --part-out and --part-limit)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.part is not None:
        return child_main(args)
    now = datetime.datetime.now(datetime.timezone.utc)
    report: dict[str, Any] = {
        "check": "device_check", "date": now.isoformat(timespec="seconds"), "command": " ".join(sys.argv),
        "budget": {"total_s": args.budget, "parts": {p.name: p._asdict() for p in args.parts}},
        "settings": {"compare": {"size": args.compare_size, "views": args.compare_views},
                     "timing": {"sizes": args.timing_sizes, "entries": TIMED_ENTRIES, "warmup": args.warmup,
                                "repeats": args.repeats}, "seed": args.seed},
        "host": environment(),
        "gpu": {"available": False, "reason": "dry run: not asked"} if args.dry_run else gpu_info(),
    }
    slug = re.sub(r"[^a-z0-9]+", "-", str(report["gpu"].get("name", "no-gpu")).lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"device_check_{slug}_{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    if args.dry_run or not report["gpu"]["available"]:
        reason = "dry run" if args.dry_run else "no GPU"
        report["parts"] = {p.name: {"status": "skipped", "reason": reason} for p in args.parts}
        report["status"] = reason
    else:
        def partial(records: dict) -> None:  # what is done so far survives a kill of the whole command
            write_json(path, {**report, "parts": records, "status": "running", "wall_s": time.monotonic() - started})

        runners = {"tests": tests_part, **{name: (lambda limit, n=name: child_part(n, args, limit)) for name in ("compare", "timing")}}
        report["parts"] = run_parts(args.parts, runners, total_s=args.budget, started=started, after=partial)
        bad = [name for name, part in report["parts"].items() if part.get("status") != "ok"]
        report["status"] = "ok" if not bad else "attention: " + ", ".join(f"{n} {report['parts'][n]['status']}" for n in bad)
    report["wall_s"] = time.monotonic() - started
    write_json(path, report)
    log.info("device check: %s in %.0f s; wrote %s", report["status"], report["wall_s"], path)
    for name, part in report["parts"].items():
        log.info("  %-8s %-10s %s", name, part.get("status"), part.get("reason", f"{part.get('wall_s', 0):.0f} s"))
    return 0 if report["status"] in ("ok", "no GPU", "dry run") else 1


if __name__ == "__main__":
    sys.exit(main())
