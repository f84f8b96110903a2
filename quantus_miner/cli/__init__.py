"""The `quantus-miner` command line: serve (default), connect, mine, bench, devnet, worker; one module per command."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .. import __version__
from ..core.outcomes import ConsensusError
from . import bench, connect, devnet, mine, serve, worker
from . import signals
from .signals import exit_status

STOPPED = (exit_status(signal.SIGINT), exit_status(signal.SIGTERM))

COMMANDS = {"serve": serve, "connect": connect, "mine": mine, "bench": bench, "devnet": devnet, "worker": worker}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="quantus-miner", description="External QPoW miner for the Quantus node.")
    parser.add_argument("--version", action="version", version=f"quantus-miner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    subs = {}
    for name, module in COMMANDS.items():
        subs[name] = sub.add_parser(name, help=module.HELP)
        module.add_args(subs[name])
    return parser, subs


def main(argv: list[str] | None = None) -> int:
    """Run a command and return its exit status; a command stopped by a signal exits the process here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # bare `quantus-miner [flags]` serves, as the seed-era miner did
    parser, subs = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            status = COMMANDS[args.command].run(args, subs[args.command])
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
