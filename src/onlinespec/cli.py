"""Command line: `onlinespec generate "PROMPT"`, `onlinespec bench`, ... Thin: builds the parser from the command
modules (onlinespec/commands/), runs the chosen one, and turns a UserError into one line and exit code 2."""

from __future__ import annotations

import argparse
import sys

from onlinespec.commands import COMMANDS
from onlinespec.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onlinespec", description="Lossless speculative decoding with drafts that learn online."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = {command.NAME: command.run for command in COMMANDS}[args.command]
    try:
        return run(args)
    except UserError as exc:
        print(f"onlinespec: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("onlinespec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
