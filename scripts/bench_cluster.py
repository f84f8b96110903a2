"""Cluster against local, same machine, same header: exact counts over a finite range mined to exhaustion.

Starts a Dask scheduler, WORKERS single-thread `quantus-miner worker`s, a `serve --cluster` miner and a
`serve --cores CORES` miner, all on 127.0.0.1; then, alternating, mines nonces 1..N at threshold 0 on
the bench header through each miner's HTTP API until the range is exhausted and takes
hash_count / elapsed_time (hash_count is exact: it must equal N). Prints per-round rates, the medians
and their ratio; then the coordinator's cost per chunk from `bench --cluster` at a short and the
default chunk length (40 M nonces to exhaustion each).

Run: .venv/bin/python scripts/bench_cluster.py [--nonces N] [--rounds R] [--workers W] [--cores C]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import Cluster  # noqa: E402  (the test suite's process helper)

from quantus_miner.core.requests import MineRequest, mine_body  # noqa: E402
from quantus_miner.engines.base import BENCH_HEADER  # noqa: E402

MINER = [sys.executable, "-m", "quantus_miner"]


def serve(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*MINER, "serve", "--port", "0", *args], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "ready:" in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, re.search(r"API (http://\S+?)(,|$)", line).group(1)
    raise SystemExit("miner exited before ready")


def mine(url: str, job_id: str, n: int) -> float:
    body = mine_body(MineRequest(job_id, BENCH_HEADER, 0, 1, n))
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.post("/mine", json=body).status_code == 200
        while (r := c.get(f"/result/{job_id}").json())["status"] == "running":
            time.sleep(0.1)
    assert r["status"] == "failed" and r["hash_count"] == n, r  # exhausted, every nonce counted once
    return r["hash_count"] / r["elapsed_time"]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nonces", type=int, default=150_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()
    logs = Path("/tmp") / f"bench-cluster-{int(time.time())}"
    logs.mkdir()
    cluster = Cluster(logs)
    procs = []
    try:
        cluster.start_scheduler()
        for i in range(args.workers):
            cluster.start_worker(f"bw{i + 1}")
        cluster.connect()
        cluster.wait_workers(args.workers)
        proc, clustered = serve("--cluster", cluster.address)
        procs.append(proc)
        proc, local = serve("--cores", str(args.cores))
        procs.append(proc)
        rates = {"cluster": [], "local": []}
        for r in range(args.rounds):
            for name, url in (("local", local), ("cluster", clustered)):
                rates[name].append(mine(url, f"{name}-{r}", args.nonces))
                print(f"round {r + 1} {name:7}: {rates[name][-1] / 1e6:.3f} M nonces/s", flush=True)
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"median local {args.cores} core(s): {med['local'] / 1e6:.3f} M/s; cluster {args.workers} x 1 thread: "
              f"{med['cluster'] / 1e6:.3f} M/s; cluster/local = {med['cluster'] / med['local']:.1%}")
        for ms in (20, 2000):
            sched0 = cpu_seconds(cluster.scheduler.pid)
            out = subprocess.run([*MINER, "bench", "--cluster", cluster.address, "--json", "--nonces", "40000000",
                                  "--progress-chunk-ms", str(ms)], capture_output=True, text=True, check=True)
            rep = json.loads(out.stdout)
            sched_ms = (cpu_seconds(cluster.scheduler.pid) - sched0) / rep["chunks"] * 1000
            print(f"bench --cluster --progress-chunk-ms {ms}: {rep['hash_rate'] / 1e6:.3f} M/s, {rep['chunks']} "
                  f"chunks; per chunk: {rep['coordinator_ms_per_chunk']:.2f} ms of worker-thread time not mining, "
                  f"miner CPU {rep['miner_cpu_ms_per_chunk']:.2f} ms, scheduler CPU {sched_ms:.2f} ms "
                  f"(includes its idle heartbeats)")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        cluster.close()


if __name__ == "__main__":
    main()
