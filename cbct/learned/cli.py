"""The command lines ``cbct train MODEL`` and ``cbct eval MODEL`` share, and the one writer of evaluation results.

Every ``cbct train`` takes ``--config FILE``, ``--set section.key=value`` (repeatable), ``--out DIR`` (checkpoints,
``log.jsonl`` and the final weights; default: the config's ``out_dir``), ``--device``, ``--threads``,
``--no-resume``, ``--stop-after N`` and ``--ship`` (also write the final weights over the package's shipped ones:
training never writes into the package otherwise). Every ``cbct eval`` takes ``--out DIR`` (``results.json`` and
``table.md``), ``--device``, ``--threads`` and ``--cache-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import shutil
from collections.abc import Callable, Sequence
from typing import Any

from cbct.io.atomic import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

__all__ = ["train_parser", "eval_parser", "config_overrides", "run_command", "markdown_table", "write_results",
           "ship_weights"]


def train_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the flags every ``cbct train`` takes; a model adds its own after."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set seed=3 (value read as YAML); repeatable")
    p.add_argument("--out", metavar="DIR", help="output folder: checkpoints, log.jsonl, final weights (default: the config's out_dir)")
    p.add_argument("--device", help="torch device: cpu, cuda, cuda:1, auto (default: the config's)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the config's)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even when a checkpoint exists")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N steps of this run (a rerun resumes)")
    p.add_argument("--ship", action="store_true",
                   help="also write the final weights over the ones shipped in the package (cbct/models/)")
    return p


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides of a parsed train command line, with ``--out``, ``--device`` and ``--threads``."""
    overrides = list(args.set)
    for flag, key in (("out", "out_dir"), ("device", "device"), ("threads", "threads")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"--stop-after must be a positive number of steps, got {args.stop_after}")
    return overrides


def eval_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the flags every ``cbct eval`` takes; a model adds its own after."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--out", metavar="DIR", help="folder for results.json and table.md")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, auto (default: cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--cache-dir", metavar="DIR", help="keep simulated scans here; a rerun reuses them")
    return p


def run_command(body: Callable[[], int]) -> int:
    """Run a command's ``body`` with logging set up; a missing file or a bad setting is one log line and status 2."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return int(body() or 0)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        log.error("%s", exc)
        log.debug("where it was raised", exc_info=True)
        return 2


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table of ``header`` and ``rows`` (cells already formatted)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out_dir: str | pathlib.Path, result: dict[str, Any], table: str) -> pathlib.Path:
    """``results.json`` (the per-scan rows and settings) and ``table.md`` in ``out_dir``, each written atomically."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(result, indent=2, default=str))
    write_text_atomic(out / "table.md", table if table.endswith("\n") else table + "\n")
    log.info("results written to %s", out)
    return out


def ship_weights(trained: pathlib.Path, shipped: pathlib.Path) -> None:
    """Copy trained weights over the shipped file ``shipped`` (atomically); only on the explicit ``--ship``."""
    with atomic_path(shipped) as tmp:
        shutil.copyfile(trained, tmp)
    log.info("shipped weights replaced: %s -> %s", trained, shipped)
