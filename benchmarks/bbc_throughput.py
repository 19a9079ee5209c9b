"""Synthesised views per second of BBC-Recon's completion network (the shipped weights) at 256² and 512² detectors.

    python benchmarks/bbc_throughput.py --json benchmarks/results/bbc_throughput.json [--device cpu] [--threads 1]

Times :func:`cbct.bbc.inference.measure_throughput`: a full-circle scan of ``n_acquired`` views completed 8 times
(7 synthesised views per acquired pair; flows once per pair), host-to-device copy and the result back to the host
included, after one warm-up run; the median of ``repeats`` runs. The machine's load average is recorded before and
after: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys

import torch

SIZES = ((256, 256), (512, 512))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the results here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    p.add_argument("--acquired", type=int, default=4, help="acquired views of the timed scan (8x: 7 per pair)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from cbct.bbc.inference import measure_throughput
    from cbct.bbc.weights import DEFAULT_COMPLETION, load_completion

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    model = load_completion(device=dev)
    load_before = os.getloadavg()
    figures = {}
    for shape in SIZES:
        tp = measure_throughput(model, detector_shape=shape, n_acquired=args.acquired, factor=8, pairs_per_batch=1,
                                device=dev, repeats=args.repeats)
        figures[f"{shape[0]}x{shape[1]}"] = tp
        print(f"{shape[0]}x{shape[1]}: {tp['views_per_s']:.2f} synthesised views/s ({int(tp['views'])} views in "
              f"{tp['seconds']:.2f} s)")
    result = {
        "benchmark": "bbc_throughput",
        "command": "python benchmarks/bbc_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None},
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "weights": DEFAULT_COMPLETION.name,
        "model": {k: v for k, v in vars(model.config).items()},
        "factor": 8,
        "acquired_views": args.acquired,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "shared_machine_note": "2 CPU cores shared with other jobs (see the load averages)" if dev.type == "cpu" else None,
        "results": figures,
    }
    if args.json:
        from cbct.io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
