"""`quantus-miner connect`: mine for a 2026 node (chain v0.10.0+) over QUIC with QPoW v2.

Exit status: 0 after a graceful SIGTERM stop, 130 after SIGINT (a daemon: see `signals`), 1 when the
node refuses the token or its certificate does not match the pin (permanent: retrying cannot help),
2 for bad arguments, credential files or an unreachable `--cluster` scheduler. Every other failure (node down, network, bad frames, any
job a node sends) is retried with back-off 1 s -> 30 s or skipped with a warning. Stopping logs one
summary line: jobs, seals sent, nonces, uptime.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from functools import partial
from typing import Any

import attrs
import trio

from ..cluster.executor import ClusterUnavailable
from ..core.config import ServiceConfig
from ..core.speed import duration
from ..quic.tls import CredentialError
from ..service.compose import halt_on_signal
from ..service.node_client import AuthFailed, PinMismatch, RunningNodeMiner, connect_miner
from ..service.server import BindError
from .args import add_settings, resolve_settings, setup_logging
from .signals import SignalStop


log = logging.getLogger("quantus_miner")


def add_args(p: argparse.ArgumentParser) -> None:
    """The `connect` options."""
    add_settings(p, "connect")


@attrs.define
class Tally:
    """What the session did, from the QUIC client's status events (for the summary line)."""

    jobs: int = 0
    seals: int = 0
    results: int = 0

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "job":
            self.jobs += 1
        elif kind == "result_sent" and not info.get("resend"):
            self.results += 1
            self.seals += info.get("status") == "completed"


def summary(tally: Tally, running: RunningNodeMiner | None, uptime: float, stopped: str) -> str:
    """The last line of a `connect` run: jobs, seals, nonces and rate over the uptime."""
    if running is None:
        return f"{stopped} before ready (uptime {duration(uptime)})"
    hashes = running.runtime.statistics().hashes
    rate = hashes / uptime if uptime > 0 else 0.0
    return (f"{stopped}: {tally.jobs} job(s), {tally.seals} seal(s) sent ({tally.results} result(s) in all), "
            f"{hashes:,} nonces ({rate / 1e6:.3f} M/s over the uptime), uptime {duration(uptime)}")


async def connect_until_stopped(config: ServiceConfig, stop: SignalStop, tally: Tally,
                                started: list[RunningNodeMiner]) -> None:
    """Mine until `stop` sees a signal; the running miner, once ready, is appended to `started`."""
    async with trio.open_nursery() as nursery:
        halt_on_signal(stop, nursery, lambda: (r.runtime for r in started), "cancelling the job and shutting down")

        async def mine(task_status=trio.TASK_STATUS_IGNORED) -> None:
            await connect_miner(config, on_status=tally, task_status=task_status)
            nursery.cancel_scope.cancel()

        started.append(await nursery.start(mine))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `connect` until stopped; the exit status as the module docstring says."""
    config = resolve_settings(args, parser, "connect")
    setup_logging(config.log_level)
    failures: list[BaseException] = []
    tally, started = Tally(), []
    t0 = time.monotonic()
    with SignalStop(on_signal=lambda signum: None, command="connect") as stop:  # armed once trio runs
        try:
            trio.run(connect_until_stopped, config, stop, tally, started)
        except* (CredentialError, BindError, ClusterUnavailable, AuthFailed, PinMismatch) as group:
            failures.extend(group.exceptions)
        running = started[0] if started else None
        uptime = time.monotonic() - t0
        if not failures:
            log.info("%s", summary(tally, running, uptime, f"stopped by {stop.name}" if stop.name else "stopped"))
            return stop.exit_status or 0
        exc = failures[0]
        if isinstance(exc, AuthFailed):
            log.error("stopped: the node refused the auth token (%s); check --auth-token-file", exc)
            log.info("%s", summary(tally, running, uptime, "stopped"))
            return 1
        if isinstance(exc, PinMismatch):
            log.error("stopped: %s; check --tls-cert-sha256-file", exc)
            log.info("%s", summary(tally, running, uptime, "stopped"))
            return 1
        print(f"quantus-miner: error: {exc}", file=sys.stderr)
        return 2
