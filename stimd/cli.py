"""``stimd``: one console script, one sub-command module per job.

Each module in ``SUBCOMMAND_MODULES`` exposes ``register(subparsers)`` that adds its
sub-commands and sets ``func`` (``(args) -> int`` exit code) on its parsers.
Exit codes: 0 success, 1 the operation said no, 2 unusable input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stimd import __version__

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "stimd.cli_record",
    "stimd.cli_protocols",
    "stimd.cli_daemon",
    "stimd.cli_demo",
    "stimd.cli_probe",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stimd", description="rTMS stimulator control daemon")
    parser.add_argument("--version", action="version", version=f"stimd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
