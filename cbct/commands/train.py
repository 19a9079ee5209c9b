"""``cbct train MODEL`` and ``cbct eval MODEL``: hand the remaining arguments to the model's own command line."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from types import MappingProxyType

from cbct.imports import import_function

__all__ = ["add_parsers", "ENTRY_POINTS"]

ENTRY_POINTS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "train": MappingProxyType({"sbp-mac": "cbct.sbp_mac.train:main", "bbc": "cbct.bbc.train:main"}),
    "eval": MappingProxyType({"sbp-mac": "cbct.sbp_mac.evaluate:main", "motion": "cbct.sbp_mac.evaluate_motion:main",
                              "bbc": "cbct.bbc.evaluate:main"}),
})

_HELP = {"train": "train a learned model (sbp-mac: motion correction; bbc: sparse-view completion/restoration)",
         "eval": "evaluate a learned model on held-out data (motion: the motion pipeline, compensated FDK and "
                 "the networks on RTK-projected real anatomy)"}


def _dispatch(args: argparse.Namespace) -> int:
    try:
        main = import_function(ENTRY_POINTS[args.command][args.model], f"cbct {args.command} {args.model}",
                               "The learned models need PyTorch: pip install 'cbct[torch]'")
    except ImportError as exc:
        raise RuntimeError(str(exc)) from None
    code = main(list(args.args))
    return int(code or 0)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for command in ("train", "eval"):
        p = sub.add_parser(command, help=_HELP[command], add_help=True,
                           description=f"{_HELP[command].capitalize()}. Everything after MODEL goes to the model's own "
                                       f"command line: `cbct {command} sbp-mac --help` shows its options.",
                           usage=f"cbct {command} {{{','.join(sorted(ENTRY_POINTS[command]))}}} [options of the model's {command} command]")
        p.add_argument("model", choices=sorted(ENTRY_POINTS[command]), help="which model")
        p.add_argument("args", nargs=argparse.REMAINDER, help="options passed to the model's command")
        p.set_defaults(func=_dispatch, command=command)
