"""The `serve` command (also bare `quantus-miner`) and the `devnet` command's flags."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from .config import SETTINGS, ConfigError, resolve
from .server import BindError, serve_miner

log = logging.getLogger("quantus_miner")


def add_serve_args(p: argparse.ArgumentParser) -> None:
    for s in SETTINGS:
        p.add_argument(s.flag, *s.aliases, dest=s.name, default=None, metavar=s.env,
                       help=f"{s.help} (env {s.env})")


def add_devnet_args(p: argparse.ArgumentParser) -> None:
    from .devnet_cli import add_args

    add_args(p)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def serve_until_signal(config) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(serve_miner, config)
            async for signum in signals:
                log.info("%s: cancelling jobs and shutting down", signal.Signals(signum).name)
                running.runtime.stop_all()  # kernel flags first: threads return within milliseconds
                nursery.cancel_scope.cancel()
                break


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "devnet":
        from .devnet_cli import run as run_devnet

        return run_devnet(args, parser)
    try:
        config = resolve({s.name: getattr(args, s.name) for s in SETTINGS})
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging(config.log_level)
    failures: list[BindError] = []
    try:
        trio.run(serve_until_signal, config)
    except* BindError as group:
        failures.extend(group.exceptions)
    if failures:
        print(f"quantus-miner: error: {failures[0]}", file=sys.stderr)
        return 2
    log.info("stopped")
    return 0
