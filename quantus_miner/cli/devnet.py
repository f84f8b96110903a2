"""`quantus-miner devnet`: the miner plus a simulated node, or the simulator against `--miner-url`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import trio
from prometheus_client import CollectorRegistry

from ..core.config import ServiceConfig
from ..devnet import chain
from ..devnet.simulator import Block, DevnetStats, NodeSimulator
from ..cluster.executor import ClusterUnavailable
from ..service.server import BindError, serve_miner
from .args import add_settings, positive_float, positive_int, resolve_settings, setup_logging

HELP = "mine blocks against a built-in node simulator"

log = logging.getLogger("quantus_miner.devnet")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blocks", type=positive_int, default=None, help="stop after N blocks (default: run until Ctrl-C)")
    p.add_argument("--block-time", type=positive_float, default=10.0, help="target seconds per block (default 10)")
    p.add_argument("--network-block-rate", type=float, default=0.0,
                   help="blocks/s found elsewhere, each forcing a cancel and a new job (default 0)")
    p.add_argument("--seed", type=int, default=0, help="header chain and simulation seed (default 0)")
    p.add_argument("--miner-url", default=None, help="drive an already running miner instead of starting one")
    p.add_argument("--json", action="store_true", help="print one JSON object per block")
    add_settings(p, "devnet")  # the started miner's settings


class View:
    """Live terminal line when stdout is a terminal, one JSON object or text line per block otherwise."""

    def __init__(self, as_json: bool, out=sys.stdout):
        self.as_json, self.out = as_json, out
        self.live = out.isatty() and not as_json

    def block(self, block: Block, stats: DevnetStats) -> None:
        if self.as_json:
            print(json.dumps(block.to_json()), file=self.out, flush=True)
            return
        line = (f"block {block.height:>4} by {block.source:<7} in {block.block_time:6.2f} s  "
                f"{block.hash_count:>12,} nonces  next difficulty {chain.expected_tries(stats.threshold):,.0f} tries")
        print(("\r\x1b[K" if self.live else "") + line, file=self.out, flush=True)

    def poll(self, stats: DevnetStats) -> None:
        if self.live:
            self.out.write(f"\r\x1b[Kheight {stats.height + 1}  mining at {stats.live_rate / 1e6:.3f} M/s  "
                           f"difficulty {chain.expected_tries(stats.threshold):,.0f} tries  "
                           f"cancels {stats.cancels}")
            self.out.flush()

    def summary(self, stats: DevnetStats) -> None:
        mined = sum(b.source == "miner" for b in stats.blocks)
        times = [b.block_time for b in stats.blocks]
        mean = sum(times) / len(times) if times else 0.0
        print(f"devnet: {len(stats.blocks)} block(s) ({mined} mined, {len(stats.blocks) - mined} from the network), "
              f"mean block time {mean:.2f} s, {stats.cancels} cancel(s), {stats.rejected} rejected",
              file=sys.stderr if self.as_json else self.out, flush=True)


async def run_devnet(args: argparse.Namespace, config: ServiceConfig, *,
                     task_status=trio.TASK_STATUS_IGNORED) -> DevnetStats:
    view = View(args.json)
    sim_kwargs = dict(block_time=args.block_time, network_block_rate=args.network_block_rate, seed=args.seed,
                      blocks=args.blocks, on_block=view.block, on_poll=view.poll)
    if args.miner_url:
        task_status.started(None)
        stats = await NodeSimulator(args.miner_url, **sim_kwargs).run()
        view.summary(stats)
        return stats
    async with trio.open_nursery() as nursery:
        running = await nursery.start(lambda task_status: serve_miner(config, registry=CollectorRegistry(),
                                                                      task_status=task_status))
        where = f"cluster {config.cluster}" if config.cluster else f"{config.cores} core(s)"
        print(f"devnet: miner {running.api_url} ({config.engine}, {where}); "
              f"metrics at {running.metrics_url}", file=sys.stderr, flush=True)
        task_status.started(running)
        stats = await NodeSimulator(running.api_url, **sim_kwargs).run()
        view.summary(stats)
        running.runtime.stop_all()
        nursery.cancel_scope.cancel()
    return stats


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.network_block_rate < 0:
        parser.error("--network-block-rate must be >= 0")
    config = resolve_settings(args, parser, "devnet")
    setup_logging(config.log_level)
    failures: list[BaseException] = []
    try:
        trio.run(run_devnet, args, config)
    except* KeyboardInterrupt:
        failures.append(KeyboardInterrupt())
    except* (BindError, ClusterUnavailable) as group:
        failures.extend(group.exceptions)
    if failures and isinstance(failures[0], KeyboardInterrupt):
        return 130
    if failures:
        print(f"quantus-miner: error: {failures[0]}", file=sys.stderr)
        return 2
    return 0
