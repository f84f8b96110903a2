"""Service figures: serving rate against `bench`, time to first progress, /result latency, cancel-to-idle.

Starts a real miner in-process on loopback (cpu-fast, all cores) and prints one JSON object.
Run: .venv/bin/python scripts/service_bench.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
import trio
from prometheus_client import CollectorRegistry

from quantus_miner.core.config import ServiceConfig
from quantus_miner.service.server import serve_miner


def body(job_id: str) -> dict:
    return {"job_id": job_id, "mining_hash": "6ca041ed49dfd5093883ec0e4b0aa1e3c0b7f02ca5decb756ddd783efaa7eadd",
            "distance_threshold": "0", "nonce_start": format(1, "0128x"), "nonce_end": "f" * 128}


async def measure(seconds: float) -> dict:
    async with trio.open_nursery() as nursery:
        config = ServiceConfig(port=0, progress_chunk_ms=2000)
        running = await nursery.start(lambda task_status: serve_miner(config, registry=CollectorRegistry(),
                                                                      task_status=task_status))
        async with httpx.AsyncClient(base_url=running.api_url) as client:
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
    return {"cores": config.cores, "serving_rate": result["hash_count"] / result["elapsed_time"],
            "first_progress_ms": first_progress * 1000, "result_p50_ms": latencies[len(latencies) // 2] * 1000,
            "result_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "cancel_to_idle_ms": cancel_to_idle * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(trio.run(measure, args.seconds)))


if __name__ == "__main__":
    main()
