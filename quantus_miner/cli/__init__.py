"""The `quantus-miner` command line: serve (default), connect, mine, bench, devnet, worker; one module per command.

A command's module is imported only when that command runs (`mine` need not load quart, hypercorn,
aioquic or Dask); the one-line helps live here so `--help` lists every command without importing them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from .. import __version__
from ..core.outcomes import ConsensusError
from . import signals
from .signals import exit_status

STOPPED = (exit_status(signal.SIGINT), exit_status(signal.SIGTERM))

COMMANDS = {  # name -> one-line help; the module `cli.<name>` has add_args(parser) and run(args, parser)
    "serve": "serve the node's HTTP API (default)",
    "connect": "mine for a 2026 node over QUIC (QPoW v2)",
    "mine": "solve one job locally",
    "bench": "measure nonces per second",
    "devnet": "mine blocks against a built-in node simulator",
    "worker": "mine for `serve --cluster` (QPoW v1) and `connect --cluster` (QPoW v2) miners as a Dask worker",
}


def command_module(name: str):
    """The module of command `name`, imported when the command runs (not at start)."""
    return importlib.import_module(f"{__name__}.{name}")


def build_parser(command: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser; only `command`'s own arguments are added (every command's when None)."""
    parser = argparse.ArgumentParser(prog="quantus-miner", description="External QPoW miner for the Quantus node.")
    parser.add_argument("--version", action="version", version=f"quantus-miner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    subs = {}
    for name, help_ in COMMANDS.items():
        subs[name] = sub.add_parser(name, help=help_)
        if command is None or name == command:
            command_module(name).add_args(subs[name])
    return parser, subs


def main(argv: list[str] | None = None) -> int:
    """Run a command and return its exit status; a command stopped by a signal exits the process here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # bare `quantus-miner [flags]` serves, as the seed-era miner did
    parser, subs = build_parser(argv[0] if argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        try:
            status = command_module(args.command).run(args, subs[args.command])
        except* ConsensusError as group:  # e.g. a forced kernel or GPU failed its warm-up self-test
            print(f"quantus-miner: error: {group.exceptions[0]}", file=sys.stderr)
            status = 2
    except KeyboardInterrupt:  # a Ctrl-C before the command installed its handlers (imports, parsing)
        status = exit_status(signal.SIGINT)
    if status in STOPPED or signals.stopped_by is not None:
        # stopped by a signal, summary printed: skip interpreter teardown, which after a cold start
        # (Numba's compiler state, a compile abandoned in a thread) can take over a second
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


__all__ = ["main", "build_parser"]
