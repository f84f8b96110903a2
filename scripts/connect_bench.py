"""Serving over QUIC against `bench`: `connect`'s code path fed by the node simulator, cpu-fast-v2 by default.

Starts, in this process, the QUIC node simulator (`devnet.quic_node.NodeSim`, real UDP on 127.0.0.1)
and `connect_miner` (what `quantus-miner connect` runs: engine, runtime, QUIC client, `NodeMiner`).
Each round runs `bench`'s loop (`pipeline.solve`, same engine and kernel, header, cores) for --seconds,
then the node hands the miner a job whose difficulty is 2^512 - 1 (target 1: no hash is below it) and
the job is cancelled after --seconds, as a node's next job or a stop would, then `bench` again.
A QUIC job has no nonce range to run to exhaustion, and the runtime's `hash_count` freezes when the
job ends, before the threads return with their last partial chunks (up to one chunk per worker, 2 s
each by default, uncounted: a false gap). The exact count is the job's cursor (`Frontier.tested`,
the count `bench` reports too) once every thread has returned, over the time from the job's start to
then. Serving is compared with the mean of the two benches around it; medians of --repeat rounds.
Per CPU-second figures divide by this process's CPU time (workers, event loop, QUIC on both sides)
and by the mining threads' alone; `cpu_share` is the CPU the process got per core and wall second
(on a shared machine the wall-clock ratio follows it: the neighbours' load, not the miner). Each command's GIL switch interval is the one it runs with
(`connect` shortens it; `bench` keeps Python's default).
Run: .venv/bin/python scripts/connect_bench.py [--seconds 6] [--cores N] [--repeat 3] [--kernel K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial

import trio
from prometheus_client import CollectorRegistry

from quantus_miner.core import qpow, qpow2
from quantus_miner.core.config import ServiceConfig, available_cores
from quantus_miner.core.quic_messages import NewJob
from quantus_miner.devnet.quic_node import NodeSim
from quantus_miner.engines import get_engine
from quantus_miner.engines.base import BENCH_HEADER
from quantus_miner.pipeline.solve import solve
from quantus_miner.service.node_client import connect_miner

NEVER = qpow2.MAX_U512  # target (2^512 - 1) // (2^512 - 1) = 1: only a zero hash would do


def bench_once(engine, cores: int, seconds: float) -> dict:
    """`quantus-miner bench`'s measurement (its `solve` call), with this process's CPU time around it."""
    cpu0 = time.process_time()
    r = solve(engine, BENCH_HEADER, 0, 1, qpow.MAX_NONCE, cores, seconds=seconds)
    cpu = time.process_time() - cpu0
    return {"nonces": r.hash_count, "wall_s": r.elapsed_time, "rate": r.hash_count / r.elapsed_time,
            "cpu_rate": r.hash_count / cpu, "worker_cpu_rate": r.hash_count / r.cpu_time,
            "cpu_share": cpu / r.elapsed_time / cores}


async def serve_once(sim: NodeSim, runtime, job_id: str, seconds: float) -> dict:
    """One node job through `connect`'s path for `seconds`, counted exactly (see the module docstring)."""
    cpu0, worker_cpu0 = time.process_time(), runtime.executor.cpu_s
    sim.set_job(NewJob(job_id, BENCH_HEADER, NEVER))
    while (frontier := runtime.frontier(job_id)) is None:  # the job reaches the runtime over QUIC
        await trio.sleep(0.001)
    started_at = runtime.clock() - runtime.result(job_id).elapsed_time
    await trio.sleep(max(0.0, seconds - (runtime.clock() - started_at)))
    runtime.cancel(job_id)  # what `NodeMiner` does when the node's next job arrives
    await runtime.wait_settled(job_id)  # every thread returned: the cursor's count is final
    wall = runtime.clock() - started_at
    cpu, worker_cpu = time.process_time() - cpu0, runtime.executor.cpu_s - worker_cpu0
    snap = runtime.result(job_id)
    return {"nonces": frontier.tested, "wall_s": wall, "rate": frontier.tested / wall,
            "cpu_rate": frontier.tested / cpu, "worker_cpu_rate": frontier.tested / worker_cpu,
            "cpu_share": cpu / wall / runtime.executor.capacity(),
            "hash_count_at_cancel": snap.hash_count, "elapsed_time_at_cancel": snap.elapsed_time}


def ratios(serving: dict, before: dict, after: dict) -> dict:
    return {k: serving[k] / ((before[k] + after[k]) / 2) for k in ("rate", "cpu_rate", "worker_cpu_rate")}


async def measure(args: argparse.Namespace) -> dict:
    default_interval = sys.getswitchinterval()
    engine = get_engine(args.engine, args.kernel)
    await trio.to_thread.run_sync(engine.warm_up)
    sim = NodeSim()
    rounds = []
    with tempfile.TemporaryDirectory() as files:
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.run)
            pin, token = sim.write_files(files)
            config = ServiceConfig(engine=args.engine, kernel=args.kernel, cores=args.cores, log_speed_s=0,
                                   node_addr=("127.0.0.1", sim.port), auth_token_file=str(token),
                                   tls_cert_sha256_file=str(pin))
            running = await nursery.start(partial(connect_miner, config, registry=CollectorRegistry()))
            await sim.wait_for(lambda: any(m.authed for m in sim.miners))
            connect_interval = sys.getswitchinterval()  # as `connect` set it

            async def bench() -> dict:
                sys.setswitchinterval(default_interval)  # `bench` runs with Python's default
                try:
                    return await trio.to_thread.run_sync(bench_once, engine, args.cores, args.seconds)
                finally:
                    sys.setswitchinterval(connect_interval)

            before = await bench()
            for i in range(args.repeat):
                serving = await serve_once(sim, running.runtime, f"bench-{i}", args.seconds)
                after = await bench()
                rounds.append({"bench_before": before, "serving": serving, "bench_after": after,
                               "ratio": ratios(serving, before, after)})
                before = after  # each bench sits between two servings: old and new in the same minutes
            nursery.cancel_scope.cancel()

    def median(*path: str) -> float:
        def get(r):
            for p in path:
                r = r[p]
            return r
        return statistics.median(get(r) for r in rounds)

    return {"engine": engine.name, "kernel": engine.kernel, "cores": args.cores, "seconds": args.seconds,
            "repeat": args.repeat,
            "median": {f"{what}_{k}": median(what, k) for what in ("serving", "bench_before", "bench_after")
                       for k in ("rate", "cpu_rate", "worker_cpu_rate", "cpu_share")}
            | {f"ratio_{k}": median("ratio", k) for k in ("rate", "cpu_rate", "worker_cpu_rate")},
            "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--cores", type=int, default=available_cores())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engine", default="cpu-fast-v2")
    parser.add_argument("--kernel", default="auto")
    args = parser.parse_args()
    print(json.dumps(trio.run(measure, args)))


if __name__ == "__main__":
    main()
