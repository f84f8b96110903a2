"""`quantus-miner devnet`: the miner plus a simulated node, or the simulator against `--miner-url`.

`--network 2025` (default): the HTTP node of 2025 and QPoW v1. `--network 2026`: the QUIC node
simulator (chain v0.10.0 protocol, real QPoW v2 seal checks) and the `connect` miner, in one process;
with `--no-miner` the simulator alone, for any miner (this one on another machine, the upstream one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import contextlib
from pathlib import Path
from functools import partial

import attrs
import trio
from prometheus_client import CollectorRegistry

from ..core.config import NETWORKS, ConfigError, Pow, ServiceConfig, check_pow
from ..core.speed import duration
from ..devnet import chain
from ..devnet.quic_node import ChainBlock, NodeSim, mine_chain
from ..quic import tls
from ..devnet.simulator import Block, DevnetStats, NodeSimulator, ProtocolError
from ..cluster.executor import ClusterUnavailable
from ..service.compose import halt_on_signal, where
from ..service.node_client import connect_miner
from ..pipeline.runtime import MinerRuntime
from ..service.server import BindError, serve_miner
from .args import add_settings, port_number, positive_float, positive_int, resolve_settings, setup_logging
from .signals import SignalStop
from .status import CLEAR


log = logging.getLogger("quantus_miner.devnet")
NO_MINER_DIFFICULTY = 1_000_000  # ~0.5 s for one cpu-fast-v2 core; the chain adjusts from there


def add_args(p: argparse.ArgumentParser) -> None:
    """The `devnet` options."""
    p.add_argument("--network", choices=tuple(NETWORKS), default="2025",
                   help="2025: HTTP node, QPoW v1 (default); 2026: QUIC node (chain v0.10.0), QPoW v2")
    p.add_argument("--blocks", type=positive_int, default=None, help="stop after N blocks (default: run until Ctrl-C)")
    p.add_argument("--block-time", type=positive_float, default=10.0, help="target seconds per block (default 10)")
    p.add_argument("--network-block-rate", type=float, default=0.0,
                   help="blocks/s found elsewhere, each forcing a cancel and a new job (default 0)")
    p.add_argument("--seed", type=int, default=0, help="header chain and simulation seed (default 0)")
    p.add_argument("--miner-url", default=None, help="drive an already running miner instead of starting one")
    p.add_argument("--json", action="store_true", help="print one JSON object per block")
    p.add_argument("--no-miner", action="store_true",
                   help="--network 2026: run the node simulator alone and mine with whatever miners connect")
    p.add_argument("--node-port", type=port_number, default=None,
                   help="--network 2026: the simulator's UDP port (default 9833 with --no-miner, else any free one)")
    p.add_argument("--node-dir", default=None,
                   help="--network 2026 --no-miner: where miner-auth-token and miner-tls-cert-sha256 are written "
                        "(and an existing token and certificate reused, as the node does; default: a fresh "
                        "temporary directory)")
    p.add_argument("--start-difficulty", type=positive_int, default=None,
                   help="--network 2026: the first block's difficulty (default: about --block-time of the "
                        "started miner's warm-up rate; 1,000,000 with --no-miner)")
    add_settings(p, "devnet")  # the started miner's settings


def summary_line(stopped_by: str | None, blocks: int, mined: int, nonces: int, elapsed: float,
                 mean_block_time: float, cancels: int, rejected: int) -> str:
    """The devnet's one summary line (both networks)."""
    rate = nonces / elapsed if elapsed > 0 else 0.0
    return (f"devnet{f' stopped by {stopped_by}' if stopped_by else ''}: {blocks} block(s) "
            f"({mined} mined, {blocks - mined} from the network), {nonces:,} nonces, "
            f"{rate / 1e6:.3f} M/s on average, elapsed {duration(elapsed)}, mean block time {mean_block_time:.2f} s, "
            f"{cancels} cancel(s), {rejected} rejected")


class View:
    """Live terminal line when stdout is a terminal, one JSON object or text line per block otherwise."""

    def __init__(self, as_json: bool, out=sys.stdout):
        self.as_json, self.out = as_json, out
        self.live = out.isatty() and not as_json

    def block(self, block: Block, stats: DevnetStats) -> None:
        """Show one block (a JSON line with --json)."""
        if self.as_json:
            print(json.dumps(block.to_json()), file=self.out, flush=True)
            return
        line = (f"block {block.height:>4} by {block.source:<7} in {block.block_time:6.2f} s  "
                f"{block.hash_count:>12,} nonces  next difficulty {chain.expected_tries(stats.threshold):,.0f} tries")
        print((CLEAR if self.live else "") + line, file=self.out, flush=True)

    def poll(self, stats: DevnetStats) -> None:
        """Refresh the live status line (a terminal only)."""
        if self.live:
            self.out.write(f"{CLEAR}height {stats.height + 1}  mining at {stats.live_rate / 1e6:.3f} M/s  "
                           f"difficulty {chain.expected_tries(stats.threshold):,.0f} tries  "
                           f"cancels {stats.cancels}")
            self.out.flush()

    def summary(self, stats: DevnetStats, nonces: int, elapsed: float, stopped_by: str | None = None) -> None:
        """Print the run's summary line."""
        mined = sum(b.source == "miner" for b in stats.blocks)
        times = [b.block_time for b in stats.blocks]
        mean = sum(times) / len(times) if times else 0.0
        out = sys.stderr if self.as_json else self.out
        if self.live:
            out.write(CLEAR)
        print(summary_line(stopped_by, len(stats.blocks), mined, nonces, elapsed, mean, stats.cancels,
                           stats.rejected), file=out, flush=True)


async def run_devnet(args: argparse.Namespace, config: ServiceConfig, stop: SignalStop | None = None, *,
                     task_status=trio.TASK_STATUS_IGNORED) -> DevnetStats:
    """Run the devnet until `--blocks` or, with `stop`, the first signal; print the summary either way."""
    view = View(args.json)
    stats = DevnetStats()
    sim_kwargs = dict(block_time=args.block_time, network_block_rate=args.network_block_rate, seed=args.seed,
                      blocks=args.blocks, on_block=view.block, on_poll=view.poll, stats=stats)
    started: list[MinerRuntime] = []
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        halt = halt_on_signal(stop, nursery, lambda: started)
        if args.miner_url:
            task_status.started(None)
            # a remote miner lives on: the simulator cancels its own job when stopped
            await NodeSimulator(args.miner_url, cancel_on_stop=True, **sim_kwargs).run()
        else:
            running = await nursery.start(lambda task_status: serve_miner(config, registry=CollectorRegistry(),
                                                                          task_status=task_status))
            started.append(running.runtime)
            t0 = trio.current_time()  # the miner's warm-up is not mining time
            place = f"cluster {config.cluster}" if config.cluster else where(config, running.runtime)
            print(f"devnet: miner {running.api_url} ({config.engine}, {place}); "
                  f"metrics at {running.metrics_url}", file=sys.stderr, flush=True)
            task_status.started(running)
            await NodeSimulator(running.api_url, **sim_kwargs).run()
        halt()
    nonces = started[0].hashes if started else sum(b.hash_count for b in stats.blocks)
    view.summary(stats, nonces, trio.current_time() - t0, stop.name if stop is not None else None)
    return stats


def node_sim_in(directory: Path) -> NodeSim:
    """A simulator whose token and certificate persist in `directory` as the node's do (reused if there)."""
    token_path = directory / "miner-auth-token"
    cert_path, key_path = directory / "miner-tls-cert.der", directory / "miner-tls-key.der"
    token = tls.read_token_file(token_path) if token_path.exists() else None
    if cert_path.exists() and key_path.exists():
        cert, key = tls.load_der(cert_path, key_path)
    else:
        cert, key = tls.make_self_signed("localhost")
        tls.write_der(cert_path, key_path, cert, key)
    return NodeSim(token=token, cert=cert, key=key)


async def run_devnet_2026(args: argparse.Namespace, config: ServiceConfig, stop: SignalStop | None = None, *,
                          task_status=trio.TASK_STATUS_IGNORED) -> list[ChainBlock]:
    """The QUIC node simulator and the `connect` miner (or, with --no-miner, any miners) over UDP."""
    no_miner = getattr(args, "no_miner", False)
    mined: list[ChainBlock] = []
    started: list = []
    t0 = trio.current_time()
    with contextlib.ExitStack() as files_cm:
        node_dir = getattr(args, "node_dir", None)
        if node_dir is None:
            node_dir = files_cm.enter_context(tempfile.TemporaryDirectory(prefix="quantus-devnet-"))
        files = Path(node_dir)
        files.mkdir(parents=True, exist_ok=True)
        sim = node_sim_in(files) if no_miner else NodeSim()
        pin_path, token_path = sim.write_files(files)
        node_port = getattr(args, "node_port", None)
        if node_port is None:
            node_port = 9833 if no_miner else 0
        async with trio.open_nursery() as nursery:
            halt = halt_on_signal(stop, nursery, lambda: (r.runtime for r in started))
            port = await nursery.start(partial(sim.run, port=node_port))
            if no_miner:
                print(f"devnet: QUIC node simulator on 127.0.0.1:{port} (UDP), waiting for miners\n"
                      f"  auth token file: {token_path}\n  certificate pin file: {pin_path}\n"
                      f"  quantus-miner connect --node-addr 127.0.0.1:{port} --auth-token-file {token_path} "
                      f"--tls-cert-sha256-file {pin_path}", file=sys.stderr, flush=True)
                task_status.started(sim)
                difficulty = getattr(args, "start_difficulty", None) or NO_MINER_DIFFICULTY
            else:
                config = attrs.evolve(config, node_addr=("127.0.0.1", port), auth_token_file=str(token_path),
                                      tls_cert_sha256_file=str(pin_path))
                running = await nursery.start(partial(connect_miner, config, registry=CollectorRegistry()))
                started.append(running)
                print(f"devnet: QUIC node 127.0.0.1:{port}, miner {config.engine} on {where(config, running.runtime)}; "
                      f"metrics at {running.metrics_url}", file=sys.stderr, flush=True)
                task_status.started(running)
                rate = (running.runtime.measured_rate or 1000.0) * max(1, running.runtime.executor.capacity())
                difficulty = getattr(args, "start_difficulty", None) or max(1, int(rate * args.block_time))
            t0 = trio.current_time()  # the miner's warm-up is not mining time

            def on_block(block: ChainBlock) -> None:
                mined.append(block)
                if args.json:
                    print(json.dumps(block.to_json()), flush=True)
                else:
                    print(f"block {block.height:>4} in {block.block_time:6.2f} s  {block.result.hash_count:>12,} "
                          f"nonces  difficulty {block.difficulty:,}", flush=True)

            await mine_chain(sim, blocks=args.blocks, difficulty=difficulty, block_time=args.block_time,
                             seed=args.seed, on_block=on_block)
            halt()
    elapsed = trio.current_time() - t0
    nonces = (started[0].runtime.hashes if started
              else sum(b.result.hash_count for b in mined))  # --no-miner: as the miners report them
    mean = sum(b.block_time for b in mined) / len(mined) if mined else 0.0
    print(summary_line(stop.name if stop is not None else None, len(mined), len(mined), nonces, elapsed, mean,
                       0, sim.rejected), file=sys.stderr if args.json else sys.stdout, flush=True)
    return mined


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `devnet` on the chosen network until --blocks or a signal."""
    if args.network_block_rate < 0:
        parser.error("--network-block-rate must be >= 0")
    network = NETWORKS[args.network]
    v2 = network.pow is Pow.V2
    if v2 and (args.miner_url or args.network_block_rate):
        parser.error("--network 2026 runs its own miner: --miner-url and --network-block-rate are 2025 only")
    if not v2 and (args.no_miner or args.node_port is not None or args.node_dir or args.start_difficulty):
        parser.error("--no-miner, --node-port, --node-dir and --start-difficulty are --network 2026 only")
    if args.node_dir and not args.no_miner:
        parser.error("--node-dir needs --no-miner (the started miner reads the files itself)")
    if args.engine is None and not os.environ.get("MINER_ENGINE"):
        args.engine = network.engine
    config = resolve_settings(args, parser, "devnet")
    try:
        check_pow(config.engine, (network.pow,), f"--network {args.network}")
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging(config.log_level)
    if config.log_level != "error":  # the speed line shows at devnet's default level (warning) too
        logging.getLogger("quantus_miner.speed").setLevel(logging.INFO)
    failures: list[OSError] = []
    disagreement: ProtocolError | None = None
    with SignalStop(on_signal=lambda signum: None, command="devnet") as stop:  # armed once trio runs
        try:
            trio.run(run_devnet_2026 if v2 else run_devnet, args, config, stop)
        except* ProtocolError as group:  # the miner answered what the node refuses: one line, exit 1
            disagreement = group.exceptions[0]
        except* (BindError, ClusterUnavailable, tls.CredentialError) as group:
            failures.extend(group.exceptions)
        except* OSError as group:  # e.g. an unwritable --node-dir
            failures.extend(group.exceptions)
        if disagreement is not None:
            print(f"devnet: {disagreement}", file=sys.stderr, flush=True)
            return 1
        if failures:
            print(f"quantus-miner: error: {failures[0]}", file=sys.stderr)
            return 2
        return stop.exit_status or 0
