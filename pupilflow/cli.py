"""Entry point of the `pupilflow` command."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from schemas.errors import PupilflowError
from schemas.settings import Settings

# Each name is a module in pupilflow.commands with `register(subparsers)`; its parser sets `func(args, settings)`.
COMMANDS: tuple[str, ...] = (
    "stack",
    "topics",
    "migrate",
    "worker",
    "sink",
    "verify",
    "demo",
    "replay",
    "connect",
    "ingest",
    "simulate",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="pupilflow", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pupilflow.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, read `Settings` once, run the sub-command; errors print one clear line, exit 2."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"pupilflow: invalid PUPILFLOW_* settings:\n{exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings) or 0)
    except PupilflowError as exc:
        print(f"pupilflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
