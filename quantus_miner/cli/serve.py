"""`quantus-miner serve` (also bare `quantus-miner`): serve the node's HTTP API until SIGINT/SIGTERM.

The first signal cancels every job (kernel flags first) and stops the servers, logs one summary
line and exits 0 after SIGTERM (a daemon's graceful stop) or 130 after SIGINT; a second signal
exits at once (see `signals`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import trio

from ..cluster.executor import ClusterUnavailable
from ..core.config import ServiceConfig
from ..core.speed import duration
from ..pipeline.runtime import MinerRuntime
from ..service.compose import halt_on_signal
from ..service.server import BindError, serve_miner
from .args import add_settings, resolve_settings, setup_logging
from .signals import SignalStop


log = logging.getLogger("quantus_miner")


def add_args(p: argparse.ArgumentParser) -> None:
    """The `serve` options."""
    add_settings(p, "serve")


async def serve_until_stopped(config: ServiceConfig, stop: SignalStop, started: list[MinerRuntime]) -> None:
    """Serve until `stop` sees a signal; the runtime, once ready, is appended to `started`."""
    async with trio.open_nursery() as nursery:
        halt_on_signal(stop, nursery, lambda: started, "cancelling jobs and shutting down")
        running = await nursery.start(serve_miner, config)
        started.append(running.runtime)
        await trio.sleep_forever()


def summary(runtime: MinerRuntime | None, uptime: float, signal_name: str) -> str:
    """The last line of a `serve` run: jobs, nonces and rate over the uptime."""
    if runtime is None:
        return f"stopped by {signal_name} before ready (uptime {duration(uptime)})"
    s = runtime.statistics()
    rate = s.hashes / uptime if uptime > 0 else 0.0
    return (f"stopped by {signal_name}: {s.jobs_ended + s.active_jobs} job(s) ({s.jobs_completed} completed), "
            f"{s.hashes:,} nonces ({rate / 1e6:.3f} M/s over the uptime), uptime {duration(uptime)}")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `serve` until a signal: 0 after SIGTERM, 130 after SIGINT, 2 when a port cannot be bound."""
    config = resolve_settings(args, parser, "serve")
    setup_logging(config.log_level)
    failures: list[OSError] = []
    started: list[MinerRuntime] = []
    t0 = time.monotonic()
    with SignalStop(on_signal=lambda signum: None, command="serve") as stop:  # armed once trio runs
        try:
            trio.run(serve_until_stopped, config, stop, started)
        except* (BindError, ClusterUnavailable) as group:
            failures.extend(group.exceptions)
        if failures:
            print(f"quantus-miner: error: {failures[0]}", file=sys.stderr)
            return 2
        log.info("%s", summary(started[0] if started else None, time.monotonic() - t0, stop.name))
        return stop.exit_status or 0
