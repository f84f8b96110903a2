"""`quantus-miner connect`: mine for a 2026 node (chain v0.10.0+) over QUIC with QPoW v2.

Exit status: 0 after SIGINT/SIGTERM, 1 when the node refuses the token or its certificate does
not match the pin (permanent: retrying cannot help), 2 for bad arguments or credential files.
Every other failure (node down, network, bad frames) is retried with back-off 1 s -> 30 s.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from ..core.config import ServiceConfig
from ..quic.tls import CredentialError
from ..service.node_client import AuthFailed, PinMismatch, connect_miner
from ..service.server import BindError
from .args import add_settings, resolve_settings, setup_logging

HELP = "mine for a 2026 node over QUIC (QPoW v2)"

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
    try:
        trio.run(connect_until_signal, config)
    except* (CredentialError, BindError) as group:
        print(f"quantus-miner: error: {group.exceptions[0]}", file=sys.stderr)
        return 2
    except* AuthFailed as group:
        log.error("stopped: the node refused the auth token (%s); check --auth-token-file", group.exceptions[0])
        return 1
    except* PinMismatch as group:
        log.error("stopped: %s; check --tls-cert-sha256-file", group.exceptions[0])
        return 1
    log.info("stopped")
    return 0
