"""``cbct run``: process every scan of a data manifest with a pipeline, one output folder per scan.

Per scan: read (checksum verified) → pipeline → outputs and ``result.json``, all written into a temporary folder that is
renamed to ``OUT/<id>/`` only when everything succeeded. A failing scan is reported and the batch goes on; a finished
scan (``OUT/<id>/result.json`` from the same pipeline) is skipped on the next run unless ``--force``. ``OUT/summary.json``
is rewritten (atomically) after every scan.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import pathlib
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["add_parser", "run", "run_manifest", "RESULT_FILE", "SUMMARY_FILE"]

RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 2000 else text[:2000] + " ..."


def _finished(scan_dir: pathlib.Path) -> dict[str, Any] | None:
    try:
        record = json.loads((scan_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("status") == "ok" else None


def run_manifest(
    manifest_ref: str | pathlib.Path,
    pipeline_ref: str | pathlib.Path,
    out: pathlib.Path,
    *,
    force: bool = False,
    device: str | None = None,
    only: list[str] | None = None,
    profile: bool = False,
    trace: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the batch and return the summary (also written to ``out/summary.json``).

    Invalid manifests or pipelines, unimportable stages and unusable devices raise before any scan runs.
    """
    from tqdm import tqdm

    import cbct
    from cbct.io.atomic import TMP_MARKER, atomic_directory, write_text_atomic
    from cbct.io.manifest import load_manifest
    from cbct.pipeline import load_pipeline, run_pipeline
    from cbct.pipeline.engine import check_device

    manifest = load_manifest(manifest_ref)
    pipeline = load_pipeline(pipeline_ref)
    pipeline.resolve()
    device = check_device(device)
    entries = manifest.select(only)
    digest = pipeline.digest()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(p.name for p in out.glob(f".*{TMP_MARKER}*"))
    if stale:
        log.warning("%s holds temporary entries of interrupted runs (safe to delete when no run is active): %s", out, stale)
    write_text_atomic(out / "pipeline.json", json.dumps(pipeline.to_dict(), indent=2))
    summary: dict[str, Any] = {
        "manifest": str(manifest.path), "pipeline": pipeline.name, "pipeline_digest": digest, "out": str(out),
        "device": device, "started": _now(), "finished": None, "status": "running",
        "counts": {"ok": 0, "skipped": 0, "failed": 0}, "scans": [],
    }

    def save() -> None:
        write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2))

    save()
    bar = tqdm(entries, desc=f"cbct run {pipeline.name}", unit="scan", file=sys.stderr,
               disable=not progress or not sys.stderr.isatty())
    try:
        for entry in bar:
            bar.set_postfix_str(entry.id)
            scan_dir = out / entry.id
            t0 = time.perf_counter()
            item: dict[str, Any] = {"id": entry.id, "dir": str(scan_dir)}
            previous = _finished(scan_dir)
            if scan_dir.exists() and not force:
                if previous is not None and previous.get("pipeline_digest") == digest:
                    item.update(status="skipped", reason="finished earlier with the same pipeline (use --force to redo)",
                                outputs=previous.get("outputs", {}))
                elif previous is not None:
                    item.update(status="failed", error=f"{scan_dir} holds results of another pipeline "
                                f"({previous.get('pipeline')}, digest {previous.get('pipeline_digest')}); pass --force to "
                                "replace them or choose another --out")
                else:
                    item.update(status="failed", error=f"{scan_dir} exists but holds no finished cbct result; remove it "
                                "or pass --force")
            else:
                try:
                    with atomic_directory(scan_dir, overwrite=force) as tmp:
                        scan = entry.load()
                        result = run_pipeline(pipeline, scan, device=device, profile=profile, out_dir=tmp,
                                              trace=(tmp / "trace.json") if trace else None)
                        outputs = {fmt: str(pathlib.Path(p).relative_to(tmp)) for fmt, p in result.outputs.items()}
                        record = {
                            "id": entry.id, "status": "ok", "pipeline": pipeline.name, "pipeline_digest": digest,
                            "manifest": str(manifest.path), "input": entry.describe(), "sha256": entry.sha256,
                            "provenance": dict(entry.provenance), "device": device, "finished": _now(),
                            "timings_s": result.timings, "outputs": outputs,
                            "volume": {"shape": list(result.grid.shape), "voxel_size_mm": list(result.voxel_size),
                                       "origin_mm": list(result.origin), "axes": "z, y, x", "units": "mm^-1"},
                            "cbct_version": cbct.__version__,
                        }
                        if result.profile is not None:
                            record["profile"] = result.profile.to_dict()
                            if trace:
                                record["profile"]["trace_path"] = "trace.json"
                        write_text_atomic(tmp / RESULT_FILE, json.dumps(record, indent=2, default=str))
                    item.update(status="ok", outputs=outputs, timings_s=result.timings)
                except Exception as exc:  # per-scan isolation: report and go on
                    log.debug("scan %s failed", entry.id, exc_info=True)
                    item.update(status="failed", error=_error_text(exc))
            item["seconds"] = round(time.perf_counter() - t0, 3)
            summary["scans"].append(item)
            summary["counts"][item["status"]] += 1
            line = f"{item['status']:>7}  {entry.id}"
            if item["status"] == "failed":
                line += f": {item['error']}"
            elif item["status"] == "ok":
                line += f"  ({item['seconds']:.1f} s)"
            tqdm.write(line, file=sys.stderr)
            save()
        summary["status"] = "failed" if summary["counts"]["failed"] else "ok"
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
        raise
    finally:
        summary["finished"] = _now()
        save()
        bar.close()
    return summary


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run", help="reconstruct every scan of a data manifest with a pipeline",
        description="Run PIPELINE on every scan listed in MANIFEST and write one folder per scan under OUT "
                    "(OUT/<id>/: the pipeline's outputs and result.json). A scan that fails is reported and the "
                    "others go on; outputs appear only when a scan finished. Rerunning skips finished scans "
                    "(unless --force). OUT/summary.json lists every scan; the exit code is 1 when any scan failed.",
        epilog="examples:\n"
               "  cbct run demo --pipeline fdk --out demo-out           # built-in demo manifest, simulated scans\n"
               "  cbct run data_manifests/shared_data.yaml --pipeline fdk --out real-out --only tooth\n"
               "  cbct run my_scans.yaml --pipeline pipelines/fdk.yaml --out out --device cuda --profile\n"
               "MANIFEST and PIPELINE are files or names of built-in ones (see `cbct info`).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", help="data manifest (YAML file, or a built-in name such as 'demo')")
    p.add_argument("--pipeline", "-p", required=True, help="pipeline (YAML file, or a built-in name: fdk, motion, sparse_view)")
    p.add_argument("--out", "-o", type=pathlib.Path, required=True, help="output folder (one subfolder per scan)")
    p.add_argument("--force", action="store_true", help="redo scans that finished in an earlier run (replacing their outputs)")
    p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    p.add_argument("--only", nargs="+", metavar="ID", help="process only these scan ids")
    p.add_argument("--profile", action="store_true", help="record GPU time, GUPS and memory per stage in result.json")
    p.add_argument("--trace", action="store_true", help="also write a PyTorch profiler Chrome trace per scan (trace.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    summary = run_manifest(args.manifest, args.pipeline, args.out, force=args.force, device=args.device,
                           only=args.only, profile=args.profile or args.trace, trace=args.trace,
                           progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    counts = summary["counts"]
    print(f"cbct run: {counts['ok']} finished, {counts['skipped']} skipped, {counts['failed']} failed "
          f"(summary: {pathlib.Path(summary['out']) / SUMMARY_FILE})", file=sys.stderr)
    return 1 if counts["failed"] else 0
