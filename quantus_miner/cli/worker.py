"""`quantus-miner worker SCHEDULER`: join a Dask cluster as a mining worker (see README, "Scaling out")."""

from __future__ import annotations

import argparse
import sys

from .args import add_settings, resolve_settings, setup_logging



def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scheduler", nargs="?", default=None,
                   help="Dask scheduler address, tcp://HOST:8786 or tls://HOST:8786 (or env MINER_CLUSTER)")
    add_settings(p, "worker")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.scheduler is not None:
        args.cluster = args.scheduler
    config = resolve_settings(args, parser, "worker")
    if config.cluster is None:
        parser.error("a scheduler address is required (positional SCHEDULER or env MINER_CLUSTER)")
    setup_logging(config.log_level)
    from ..cluster.worker import SchedulerUnreachable, main  # imports Dask only for this command

    try:
        main(config)
    except SchedulerUnreachable as exc:
        print(f"quantus-miner: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
