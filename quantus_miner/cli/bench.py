"""`quantus-miner bench`: nonces/s on a fixed header, the kernel that ran, warm-up time, cancel latency."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import attrs
import trio
from prometheus_client import CollectorRegistry

from ..cluster.executor import ClusterExecutor, ClusterUnavailable
from ..core import qpow
from ..core.config import ServiceConfig
from ..core.requests import MineRequest
from ..engines import Engine, get_engine
from ..engines.base import BENCH_HEADER, new_cancel_flag
from ..engines.local import solve
from ..service.metrics import MinerMetrics
from ..service.runtime import MinerRuntime
from .args import add_settings, positive_float, positive_int, resolve_settings

HELP = "measure nonces per second"


def add_args(p: argparse.ArgumentParser) -> None:
    add_settings(p, "bench")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="measuring time after warm-up")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--nonces", type=positive_int, default=None,
                   help="with --cluster: mine nonces 1..N at threshold 0 to exhaustion (exact count) "
                        "instead of for --seconds")
    p.add_argument("--progress-chunk-ms", type=positive_int, default=2000,
                   help="with --cluster: target chunk length (default 2000; small values show the per-chunk cost)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = resolve_settings(args, parser, "bench")
    if config.cluster is not None:
        return run_cluster(args, attrs.evolve(config, progress_chunk_ms=args.progress_chunk_ms))
    engine = get_engine(config.engine)
    t0 = time.monotonic()
    engine.warm_up()  # cold: compiles the kernels; warm: loads them from the on-disk cache
    warmup_s = time.monotonic() - t0
    ctx = qpow.JobContext.from_header(BENCH_HEADER)
    # threshold 0 never matches in practice, so every nonce of the window is scanned
    result = solve(engine, ctx, 0, 1, qpow.MAX_NONCE, config.cores, seconds=args.seconds)
    report = {
        "engine": engine.name,
        "cores": config.cores,
        "seconds": result.elapsed_time,
        "hashes": result.hash_count,
        "hash_rate": result.hash_count / result.elapsed_time,
        "kernel": engine.kernel,
        "warmup_s": warmup_s,
        "cancel_latency_ms": cancel_latency(engine, ctx) * 1000,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{engine.name} ({engine.kernel}) on {config.cores} core(s): {report['hash_rate'] / 1e6:.3f} "
              f"M nonces/s ({result.hash_count:,} nonces in {result.elapsed_time:.2f} s); warm-up {warmup_s:.2f} s, "
              f"cancel latency {report['cancel_latency_ms']:.2f} ms")
    return 0


def cancel_latency(engine: Engine, ctx: qpow.JobContext) -> float:
    """Seconds from setting a running search's cancel flag to the search returning."""
    job = engine.prepare(ctx, 0)
    flag = new_cancel_flag()
    stopped = []
    worker = threading.Thread(target=lambda: (engine.search(job, 1, qpow.MAX_NONCE, flag),
                                              stopped.append(time.monotonic())))
    worker.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    flag[0] = 1
    worker.join()
    return stopped[0] - t0


def run_cluster(args: argparse.Namespace, config: ServiceConfig) -> int:
    """`bench --cluster`: the service's own runtime and cluster executor, one job, no HTTP."""
    try:
        report = trio.run(cluster_bench, config, args.seconds, args.nonces)
    except ClusterUnavailable as exc:
        print(f"quantus-miner: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['engine']} on the Dask cluster at {config.cluster} ({report['workers']} worker(s), "
              f"{report['threads']} thread(s)): {report['hash_rate'] / 1e6:.3f} M nonces/s "
              f"({report['hashes']:,} nonces in {report['seconds']:.2f} s, {report['chunks']} chunk(s)); "
              f"coordinator {report['coordinator_ms_per_chunk']:.2f} ms of worker-thread time per chunk, miner CPU "
              f"{report['miner_cpu_ms_per_chunk']:.2f} ms per chunk")
    return 0


async def cluster_bench(config: ServiceConfig, seconds: float, nonces: int | None) -> dict:
    engine = get_engine(config.engine)
    async with trio.open_nursery() as nursery:
        executor = await ClusterExecutor.open(config, engine.name)
        await nursery.start(executor.run)
        runtime = MinerRuntime(config, engine, MinerMetrics(CollectorRegistry()), executor=executor)
        await nursery.start(runtime.run)
        while executor.capacity() == 0:  # a job waits for workers; so does the clock of the benchmark
            await trio.sleep(0.1)
        cpu0 = time.process_time()  # this process is the coordinator: runtime, executor, Dask client
        runtime.submit(MineRequest("bench", BENCH_HEADER, 0, 1, nonces or qpow.MAX_NONCE))
        with trio.move_on_after(float("inf") if nonces else seconds):
            while runtime.result("bench").status == "running":
                await trio.sleep(0.05)
        runtime.cancel("bench")
        snap = runtime.result("bench")
        await runtime.wait_settled("bench")
        cpu = time.process_time() - cpu0
        stats = executor.stats()
        # thread-seconds not spent in kernels (dispatch, result, queue, the range's ramp-up and tail), per chunk
        idle = max(0.0, snap.elapsed_time * stats.threads - executor.busy_s)
        nursery.cancel_scope.cancel()
    return {"engine": engine.name, "cluster": config.cluster, "workers": len(stats.workers),
            "threads": stats.threads, "seconds": snap.elapsed_time, "hashes": snap.hash_count,
            "hash_rate": snap.hash_count / snap.elapsed_time, "chunks": stats.chunks,
            "coordinator_ms_per_chunk": idle / stats.chunks * 1000 if stats.chunks else None,
            "miner_cpu_ms_per_chunk": cpu / stats.chunks * 1000 if stats.chunks else None,
            "progress_chunk_ms": config.progress_chunk_ms}
