"""`quantus-miner worker SCHEDULER`: join a Dask cluster as a mining worker (see README, "Scaling out").

A daemon: exit 0 after a graceful SIGTERM stop, 130 after SIGINT, at once on a second signal; one
summary line (chunks, nonces, uptime). Exit 2 when the scheduler is unreachable at start.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from ..core.speed import duration

from .args import add_settings, resolve_settings, setup_logging
from .signals import Interrupted, SignalStop

log = logging.getLogger("quantus_miner")



def add_args(p: argparse.ArgumentParser) -> None:
    """The `worker` options."""
    p.add_argument("scheduler", nargs="?", default=None,
                   help="Dask scheduler address, tcp://HOST:8786 or tls://HOST:8786 (or env MINER_CLUSTER)")
    add_settings(p, "worker")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run a Dask worker that mines for `--cluster` miners until a signal."""
    if args.scheduler is not None:
        args.cluster = args.scheduler
    config = resolve_settings(args, parser, "worker")
    if config.cluster is None:
        parser.error("a scheduler address is required (positional SCHEDULER or env MINER_CLUSTER)")
    setup_logging(config.log_level)
    from ..cluster.worker import SchedulerUnreachable, main, totals  # imports Dask only for this command

    t0 = time.monotonic()
    with SignalStop(command="worker") as stop:  # before arming, a signal stops the warm-up (Interrupted)
        def arm(request_stop) -> None:
            stop.arm(lambda signum: request_stop())

        try:
            main(config, arm)
        except SchedulerUnreachable as exc:
            print(f"quantus-miner: error: {exc}", file=sys.stderr)
            return 2
        except Interrupted:
            pass
        chunks, nonces = totals()
        uptime = time.monotonic() - t0
        log.info("%s: %d chunk(s), %s nonces (%.3f M/s over the uptime), uptime %s",
                 f"stopped by {stop.name}" if stop.name else "stopped", chunks, f"{nonces:,}",
                 nonces / uptime / 1e6 if uptime > 0 else 0.0, duration(uptime))
        return stop.exit_status or 0
