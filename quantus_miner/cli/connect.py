"""`quantus-miner connect`: mine for a 2026 node (chain v0.10.0+) over QUIC with QPoW v2.

Exit status: 0 after SIGINT/SIGTERM, 1 when the node refuses the token or its certificate does
not match the pin (permanent: retrying cannot help), 2 for bad arguments or credential files, or
an unreachable `--cluster` scheduler.
Every other failure (node down, network, bad frames) is retried with back-off 1 s -> 30 s.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from ..cluster.executor import ClusterUnavailable
from ..core.config import ServiceConfig
from ..quic.tls import CredentialError
from ..service.node_client import AuthFailed, PinMismatch, connect_miner
from ..service.server import BindError
from .args import add_settings, resolve_settings, setup_logging


log = logging.getLogger("quantus_miner")


def add_args(p: argparse.ArgumentParser) -> None:
    add_settings(p, "connect")


async def connect_until_signal(config: ServiceConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async def mine() -> None:
                await connect_miner(config)
                nursery.cancel_scope.cancel()

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("%s: cancelling the job and shutting down", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(mine)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = resolve_settings(args, parser, "connect")
    setup_logging(config.log_level)
    failures: list[BaseException] = []
    try:
        trio.run(connect_until_signal, config)
    except* (CredentialError, BindError, ClusterUnavailable, AuthFailed, PinMismatch) as group:
        failures.extend(group.exceptions)
    if not failures:
        log.info("stopped")
        return 0
    exc = failures[0]
    if isinstance(exc, AuthFailed):
        log.error("stopped: the node refused the auth token (%s); check --auth-token-file", exc)
        return 1
    if isinstance(exc, PinMismatch):
        log.error("stopped: %s; check --tls-cert-sha256-file", exc)
        return 1
    print(f"quantus-miner: error: {exc}", file=sys.stderr)
    return 2
