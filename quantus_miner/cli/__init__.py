"""The `quantus-miner` command line: serve (default), mine, bench, devnet, worker; one module per command."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import bench, devnet, mine, serve, worker

COMMANDS = {"serve": serve, "mine": mine, "bench": bench, "devnet": devnet, "worker": worker}


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # bare `quantus-miner [flags]` serves, as the seed-era miner did
    parser, subs = build_parser()
    args = parser.parse_args(argv)
    return COMMANDS[args.command].run(args, subs[args.command])


__all__ = ["main", "build_parser"]
