"""``cbct run``: the command line of the batch engine (:func:`cbct.batch.run_batch`)."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

__all__ = ["add_parser", "run"]

EPILOG = """\
examples:
  cbct run demo --pipeline fdk --out demo-out           # built-in demo manifest, simulated scans
  cbct run my_scans.yaml -p fdk -o out --workers 2      # two CPU worker processes
  cbct run my_scans.yaml -p fdk -o out --device cuda    # one worker per visible GPU
  cbct run my_scans.yaml -p fdk -o /shared/out --executor ray --address auto --device cuda --gpus-per-scan 0.5
  cbct run my_scans.yaml -p fdk -o /shared/out --num-parts $SLURM_ARRAY_TASK_COUNT --part-id $SLURM_ARRAY_TASK_ID
MANIFEST and PIPELINE are files or names of built-in ones (see `cbct info`).
Exit code: 0 all finished or skipped, 1 a scan failed, 2 invalid input or the folder is busy, 130 interrupted."""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run", help="reconstruct every scan of a data manifest with a pipeline (locally or on a Ray cluster)",
        description="Run PIPELINE on every scan listed in MANIFEST and write one folder per scan under OUT "
                    "(OUT/<id>/: the pipeline's outputs and result.json). A scan that fails is reported and the "
                    "others go on; outputs appear only when a scan finished. A rerun skips a finished scan only when "
                    "its input, manifest entry, pipeline, weights and cbct version are unchanged (--force redoes "
                    "all). One run at a time per OUT. OUT/summary.json lists every scan, rebuilt from the results "
                    "on disk.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", help="data manifest (YAML file, or a built-in name such as 'demo')")
    p.add_argument("--pipeline", "-p", required=True, help="pipeline (YAML file, or a built-in name: fdk, motion, sparse_view)")
    p.add_argument("--out", "-o", type=pathlib.Path, required=True, help="output folder (one subfolder per scan)")
    p.add_argument("--force", action="store_true", help="recompute finished scans (replacing their outputs)")
    p.add_argument("--device", default=None, help="cpu (default), cuda (every visible GPU) or cuda:N")
    p.add_argument("--only", nargs="+", metavar="ID", help="process only these scan ids")
    g = p.add_argument_group("executors")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local worker processes (default) or Ray tasks (pip install 'cbct[ray]')")
    g.add_argument("--workers", type=int, metavar="N",
                   help="local: CPU worker processes (default 1; one per GPU with --device cuda); "
                        "ray without --address: CPUs of the local cluster")
    g.add_argument("--address", help="ray: the cluster to join ('auto', or HEAD_IP:6379); default: a local cluster")
    g.add_argument("--gpus-per-scan", type=float, metavar="F",
                   help="ray: GPU share of each scan (default 1 with --device cuda; 0.25 lets four small scans share one)")
    g.add_argument("--max-retries", type=int, default=2, help="retries of a scan whose worker died (default 2)")
    g.add_argument("--num-parts", type=int, default=1, metavar="N", help="split the manifest into N parts (job arrays)")
    g.add_argument("--part-id", type=int, default=0, metavar="K", help="process part K (0 <= K < N)")
    g.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="when another run holds OUT, wait up to SECONDS for it (default: refuse at once; -1: forever)")
    s = p.add_argument_group("inputs")
    s.add_argument("--root", type=pathlib.Path, help="refuse manifest files outside this folder")
    s.add_argument("--allow-any-stage", action="store_true",
                   help="let the pipeline run any 'module:function' (not only registered and installed stages)")
    o = p.add_argument_group("output")
    o.add_argument("--profile", action="store_true", help="record GPU time, GUPS and memory per stage in result.json")
    o.add_argument("--trace", action="store_true", help="also write a PyTorch profiler Chrome trace per scan (trace.json)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar (lines per scan and the table stay)")
    o.add_argument("--quiet", dest="run_quiet", action="store_true",
                   help="no progress bar, no lines per scan, no final table (as cbct -q run)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cbct.batch import format_table, run_batch

    quiet = args.run_quiet or getattr(args, "quiet", False)
    summary = run_batch(
        args.manifest, args.pipeline, args.out, executor=args.executor, workers=args.workers, address=args.address,
        gpus_per_scan=args.gpus_per_scan, device=args.device, force=args.force, only=args.only,
        num_parts=args.num_parts, part_id=args.part_id, root=args.root, wait=None if args.wait < 0 else args.wait,
        profile=args.profile or args.trace, trace=args.trace, allow_any_stage=args.allow_any_stage,
        max_retries=args.max_retries, progress=False if quiet else ("lines" if args.no_progress else True),
    )
    print(json.dumps(summary, indent=2))
    if not quiet:
        print(format_table(summary), file=sys.stderr)
    return 1 if summary["counts"]["failed"] else 0
