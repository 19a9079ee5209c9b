"""``cbct info``: versions, backends and GPUs, registered stages, built-in pipelines and manifests."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

__all__ = ["add_parser", "run", "collect"]


def collect() -> dict[str, Any]:
    """Everything ``cbct info`` shows, as a JSON-serialisable mapping."""
    from cbct.io.manifest import builtin_manifests
    from cbct.pipeline import STAGES, builtin_pipelines
    from cbct.profiling import device_info

    info = device_info()
    stages = {}
    for name, ref in STAGES.items():
        module = ref.partition(":")[0]
        try:
            importlib.import_module(module)
            stages[name] = {"ref": ref, "available": True}
        except Exception as exc:  # report, never fail: info is for diagnosing installs
            stages[name] = {"ref": ref, "available": False, "error": f"{type(exc).__name__}: {exc}"}
    info["stages"] = stages
    info["pipelines"] = {k: str(v) for k, v in builtin_pipelines().items()}
    info["manifests"] = {k: str(v) for k, v in builtin_manifests().items()}
    return info


def _text(info: dict[str, Any]) -> str:
    lines = [f"cbct {info['versions'].get('cbct', '?')} on Python {info['python']} ({info['platform']}), {info['cpu_count']} CPUs"]
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if k != "cbct"))
    cpu = info.get("cpu_backend", {})
    lines.append(f"CPU backend: Numba, {cpu.get('numba_threads', '?')} threads")
    cuda = info["cuda"]
    if cuda["devices"]:
        for d in cuda["devices"]:
            lines.append(f"CUDA backend: GPU {d['index']}: {d['name']}, {d['memory_bytes'] / 2**30:.1f} GiB, "
                         f"compute capability {d['compute_capability']}")
    else:
        lines.append(f"CUDA backend: unavailable ({cuda.get('note', 'no GPU')})")
    torch = info.get("torch")
    lines.append("PyTorch: " + ("not installed (learned stages need it: pip install 'cbct[torch]')" if torch is None
                                else f"{torch['version']}, CUDA {'available' if torch['cuda_available'] else 'not available'}"))
    lines.append("stages:")
    for name, s in info["stages"].items():
        state = "ok" if s["available"] else f"unavailable ({s['error']})"
        lines.append(f"  {name:<16} {s['ref']:<42} {state}")
    lines.append("built-in pipelines: " + ", ".join(info["pipelines"]))
    lines.append("built-in manifests: " + ", ".join(info["manifests"]))
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="show versions, backends, GPUs, stages, built-in pipelines and manifests",
                       description="Show what this cbct installation can do: library versions, the CPU and CUDA "
                                   "backends (GPUs found), PyTorch, which pipeline stages import, and the built-in "
                                   "pipelines and manifests.")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    info = collect()
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0
