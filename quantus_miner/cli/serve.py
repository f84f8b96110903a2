"""`quantus-miner serve` (also bare `quantus-miner`): serve the node's HTTP API until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from ..cluster.executor import ClusterUnavailable
from ..core.config import ServiceConfig
from ..service.server import BindError, serve_miner
from .args import add_settings, resolve_settings, setup_logging

HELP = "serve the node's HTTP API (default)"

log = logging.getLogger("quantus_miner")


def add_args(p: argparse.ArgumentParser) -> None:
    add_settings(p, "serve")


async def serve_until_signal(config: ServiceConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(serve_miner, config)
            async for signum in signals:
                log.info("%s: cancelling jobs and shutting down", signal.Signals(signum).name)
                running.runtime.stop_all()  # kernel flags first: threads return within milliseconds
                nursery.cancel_scope.cancel()
                break


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = resolve_settings(args, parser, "serve")
    setup_logging(config.log_level)
    failures: list[OSError] = []
    try:
        trio.run(serve_until_signal, config)
    except* (BindError, ClusterUnavailable) as group:
        failures.extend(group.exceptions)
    if failures:
        print(f"quantus-miner: error: {failures[0]}", file=sys.stderr)
        return 2
    log.info("stopped")
    return 0
