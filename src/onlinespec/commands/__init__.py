"""The CLI commands, one module each with the same shape: `NAME`, `add_parser(subparsers)` and `run(args) -> int`.
Shared flag groups (model, draft, trees, learning) live in `flags`. Commands import the library; the library never
imports them. To add a command: write its module and list it in COMMANDS (the order of `onlinespec --help`).
"""

from __future__ import annotations

from onlinespec.commands import bench, export, generate, reason, reason_bench, serve, warmup

COMMANDS = (generate, warmup, bench, export, serve, reason, reason_bench)

__all__ = ["COMMANDS"]
