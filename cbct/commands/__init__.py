"""The ``cbct`` subcommands: one module each, with ``add_parser(subparsers)`` and ``run(args) -> int``."""

COMMANDS = ("run", "simulate", "profile", "info", "demo", "train", "eval")
