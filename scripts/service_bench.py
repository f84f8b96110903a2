"""Service figures: serving rate against `bench`, time to first progress, /result latency, cancel-to-idle.

Starts a real miner in-process on loopback (cpu-fast, all cores) and prints one JSON object.
The serving rate is measured exactly: `bench`'s own loop (same engine, header, cores) runs
first for --seconds, then the miner gets a finite range of about --seconds of work at
threshold 0 (no nonce is valid) and runs it to exhaustion; the rate is /result's exact
hash_count over its exact elapsed_time, and `serving_ratio` is that over bench's rate.
(A live poll's hash_count lags by up to one chunk per worker, which reads as a false gap.)
Run: .venv/bin/python scripts/service_bench.py [--seconds 10] [--cores N]
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
import trio
from prometheus_client import CollectorRegistry

from quantus_miner.core import qpow
from quantus_miner.core.config import ServiceConfig, available_cores
from quantus_miner.engines import get_engine
from quantus_miner.core.requests import MineRequest, mine_body
from quantus_miner.engines.base import BENCH_HEADER
from quantus_miner.pipeline.solve import solve
from quantus_miner.service.server import serve_miner


def body(job_id: str, end: int = qpow.MAX_NONCE) -> dict:
    return mine_body(MineRequest(job_id, BENCH_HEADER, 0, 1, end))


def bench_rate(engine_name: str, cores: int, seconds: float) -> tuple[float, float, str]:
    """`quantus-miner bench`'s measurement, in this process: nonces per wall second and per CPU-second of
    this process, and the kernel that ran."""
    engine = get_engine(engine_name)
    engine.warm_up()
    cpu0 = time.process_time()
    result = solve(engine, BENCH_HEADER, 0, 1, qpow.MAX_NONCE, cores, seconds=seconds)
    return result.hash_count / result.elapsed_time, result.hash_count / (time.process_time() - cpu0), engine.kernel


async def exact_serving_rate(client: httpx.AsyncClient, nonces: int) -> dict:
    """Mine [1, nonces] at threshold 0 to exhaustion; the exact rate from /result."""
    cpu0 = time.process_time()
    await client.post("/mine", json=body("exact", end=nonces))
    while (result := (await client.get("/result/exact")).json())["status"] == "running":
        await trio.sleep(0.25)  # the rate comes from the job's own clock; rare polls keep our CPU out of it
    cpu = time.process_time() - cpu0  # the whole serving process: workers, event loop, HTTP
    assert result["hash_count"] == nonces, result  # exhausted: every nonce of the range was tested
    return result | {"cpu_rate": nonces / cpu}


async def measure(seconds: float, cores: int) -> dict:
    # bench runs before and after serving, and serving is compared with their mean: on a shared machine
    # the wall-clock rates drift with the neighbours, so CPU-second rates are given too
    bench, bench_cpu, kernel = bench_rate("cpu-fast", cores, seconds)
    async with trio.open_nursery() as nursery:
        config = ServiceConfig(port=0, progress_chunk_ms=2000, cores=cores)
        running = await nursery.start(lambda task_status: serve_miner(config, registry=CollectorRegistry(),
                                                                      task_status=task_status))
        async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as client:
            exact = await exact_serving_rate(client, int(bench * seconds))
            bench_after, bench_cpu_after, _ = await trio.to_thread.run_sync(bench_rate, "cpu-fast", cores, seconds)
            bench, bench_cpu = (bench + bench_after) / 2, (bench_cpu + bench_cpu_after) / 2
            t0 = time.monotonic()
            await client.post("/mine", json=body("bench"))
            while not any(w.reports for w in running.runtime.result("bench").workers):
                await trio.sleep(0.001)
            first_progress = time.monotonic() - t0
            latencies = []
            stop = trio.current_time() + seconds
            while trio.current_time() < stop:
                s = time.monotonic()
                await client.get("/result/bench")
                latencies.append(time.monotonic() - s)
                await trio.sleep(0.05)
            result = (await client.get("/result/bench")).json()
            t1 = time.monotonic()
            await client.post("/cancel/bench")
            await running.runtime.wait_settled("bench")  # every worker thread returned
            cancel_to_idle = time.monotonic() - t1
        nursery.cancel_scope.cancel()
    latencies.sort()
    serving = exact["hash_count"] / exact["elapsed_time"]
    return {"cores": config.cores, "kernel": kernel, "bench_rate": bench, "serving_rate": serving,
            "serving_ratio": serving / bench, "serving_nonces": exact["hash_count"],
            "bench_cpu_rate": bench_cpu, "serving_cpu_rate": exact["cpu_rate"],
            "serving_cpu_ratio": exact["cpu_rate"] / bench_cpu,
            "serving_elapsed_s": exact["elapsed_time"],
            "live_poll_rate": result["hash_count"] / result["elapsed_time"],
            "first_progress_ms": first_progress * 1000, "result_p50_ms": latencies[len(latencies) // 2] * 1000,
            "result_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "cancel_to_idle_ms": cancel_to_idle * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cores", type=int, default=available_cores())
    args = parser.parse_args()
    print(json.dumps(trio.run(measure, args.seconds, args.cores)))


if __name__ == "__main__":
    main()
