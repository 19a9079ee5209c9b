"""The ``cbct`` command line: a thin layer over the Python API (``cbct.run_pipeline``, ``cbct.Scan``, ...)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

DESCRIPTION = """\
cbct: cone-beam CT reconstruction for dental CBCT.

Start here:
  cbct demo                                          simulate, reconstruct and preview a dental scan
  cbct run demo --pipeline fdk --out demo-out        reconstruct the scans of a manifest (built-in 'demo')
  cbct simulate --phantom dental --out scan.h5       make a scan file (sparse, motion, noise: see its --help)
  cbct profile                                       per-stage timings, GUPS and memory
  cbct info                                          versions, GPUs, stages, built-in pipelines and manifests

`cbct COMMAND --help` explains each command."""


def build_parser() -> argparse.ArgumentParser:
    from cbct.version import __version__
    from cbct.commands import demo, info, profile, run, simulate, train

    parser = argparse.ArgumentParser(prog="cbct", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cbct {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug, with tracebacks)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND")
    run.add_parser(sub)
    simulate.add_parser(sub)
    profile.add_parser(sub)
    info.add_parser(sub)
    demo.add_parser(sub)
    train.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cbct`` command line; returns the exit code (0 ok, 1 a scan or command failed, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.INFO if args.verbose == 1 else
                                                logging.DEBUG if args.verbose > 1 else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.quiet:  # a first run that compiles the CPU kernels says so, even without -v
        logging.getLogger("cbct.cpu.compile_notice").setLevel(min(level, logging.INFO))
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from cbct.batch.store import LockedError
    from cbct.io.errors import FormatError
    from cbct.memory import InsufficientMemoryError
    from cbct.schema import SchemaError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("cbct: interrupted", file=sys.stderr)
        return 130
    except (SchemaError, FileNotFoundError, FileExistsError, FormatError, KeyError, ImportError,
            InsufficientMemoryError, LockedError) as exc:
        if args.verbose > 1:
            raise
        print(f"cbct {args.command_name}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.verbose > 1:
            raise
        print(f"cbct {args.command_name}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
