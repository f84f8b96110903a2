#!/usr/bin/env python
"""Measure the miner under hostile load (issue 11): a connection flood, and a scrape storm.

    python scripts/abuse.py flood   [--connections 1100] [--fd-limit 1024]
    python scripts/abuse.py scrapes [--finished 1000] [--scrapers 200] [--seconds 10]

Each starts its own `quantus-miner serve --cores 1` (RLIMIT_NOFILE set to --fd-limit, as a default
`ulimit -n 1024` host would have) and prints one JSON report. `flood`: server fds and a fresh client's
/result latency while N connections (one GET /health each, then idle) are open, then how long the
fds take to come back once the flood is gone. `scrapes`: the cost of one scrape with N finished jobs
retained, then /result latency (p50/p99) while S clients scrape /metrics back to back during mining.
Set PYTHONPATH to measure another checkout with the same interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time

import httpx
import trio

from quantus_miner.core.qpow import MAX_U512
from quantus_miner.core.requests import MineRequest, mine_body


def start_server(fd_limit: int, *extra: str) -> tuple[subprocess.Popen, str, str | None]:
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    proc = subprocess.Popen([sys.executable, "-m", "quantus_miner", "serve", "--port", "0", "--cores", "1",
                             "--metrics-port", "0", *extra], stderr=subprocess.PIPE, preexec_fn=limit)
    for raw in proc.stderr:
        line = raw.decode(errors="replace")
        if "ready:" in line:
            api = re.search(r"API (http://\S+?)(,|$)", line).group(1)
            metrics = re.search(r"metrics (http://\S+)", line)
            break
    else:
        raise SystemExit("server exited before ready")
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, api, metrics.group(1) if metrics else None


def fds(proc) -> int:
    return len(os.listdir(f"/proc/{proc.pid}/fd"))


async def result_latency(api: str, timeout: float = 10.0) -> float:
    """Seconds for a fresh connection (as the node's) to get a full /result answer; inf if none."""
    host, port = api.removeprefix("http://").rsplit(":", 1)
    t0 = time.perf_counter()
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(b"GET /result/probe HTTP/1.1\r\nHost: x\r\n\r\n")
                buf = b""
                while b"elapsed_time" not in buf:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return float("inf")
                    buf += chunk
                return time.perf_counter() - t0
        except OSError:
            return float("inf")
    return float("inf")


async def flood(args) -> dict:
    proc, api, _ = start_server(args.fd_limit)
    host, port = api.removeprefix("http://").rsplit(":", 1)
    try:
        baseline = fds(proc)
        socks, peak, latencies = [], baseline, []
        for i in range(args.connections):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect((host, int(port)))
            except BlockingIOError:
                pass
            socks.append(s)
            if i % 100 == 99:
                await trio.sleep(0.05)
                for t in socks[-100:]:
                    try:
                        t.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    except OSError:
                        pass
                peak = max(peak, fds(proc))
                latencies.append(await result_latency(api))
        for _ in range(10):  # the flood stands: the node polls
            await trio.sleep(0.2)
            peak = max(peak, fds(proc))
            latencies.append(await result_latency(api))
        during = fds(proc)
        for s in socks:
            s.close()
        t0 = time.perf_counter()
        while fds(proc) > baseline + 2 and time.perf_counter() - t0 < 30:
            await trio.sleep(0.05)
        recovered = time.perf_counter() - t0
        after = await result_latency(api)
        return {"connections": args.connections, "fd_limit": args.fd_limit, "fds_baseline": baseline,
                "fds_peak": peak, "fds_during": during, "result_ms_max": round(max(latencies) * 1000, 1),
                "result_ms_median": round(statistics.median(latencies) * 1000, 1),
                "result_failures": sum(x == float("inf") for x in latencies),
                "recovered_s": round(recovered, 2), "result_ms_after": round(after * 1000, 1)}
    finally:
        proc.terminate()
        proc.wait(10)


async def scrapes(args) -> dict:
    proc, api, metrics = start_server(args.fd_limit)
    try:
        async with httpx.AsyncClient(base_url=api, timeout=30) as c:
            for i in range(args.finished):
                await c.post("/mine", json=mine_body(MineRequest(f"old{i}", bytes(32), 0, 1, MAX_U512)))
                await c.post(f"/cancel/old{i}")
            costs = []
            async with httpx.AsyncClient(timeout=30) as m:
                for _ in range(5):
                    t0 = time.perf_counter()
                    r = await m.get(metrics)
                    costs.append(time.perf_counter() - t0)
                    await trio.sleep(1.1)  # past the cache interval: each one is built afresh
            body = r.text
            sample_count = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
            await c.post("/mine", json=mine_body(MineRequest("live", bytes(32), 0, 1, MAX_U512)))
            # the scrapers run in their own process (as another host's would), the node's poller here
            storm = await trio.lowlevel.open_process(
                [sys.executable, __file__, "_storm", metrics, str(args.scrapers), str(args.seconds)],
                stdout=subprocess.PIPE)
            latencies = []
            async with httpx.AsyncClient(base_url=api, timeout=30) as p:
                await p.get("/result/live")
                stop = trio.current_time() + args.seconds
                while trio.current_time() < stop:
                    t0 = time.perf_counter()
                    await p.get("/result/live")
                    latencies.append(time.perf_counter() - t0)
                    await trio.sleep(0.02)
            out = b""
            while chunk := await storm.stdout.receive_some():
                out += chunk
            await storm.wait()
            ok, failed = json.loads(out)
            latencies.sort()
            return {"finished_jobs": args.finished, "scrape_bytes": len(r.content), "scrape_samples": sample_count,
                    "scrape_ms_median": round(statistics.median(costs) * 1000, 1),
                    "scrapers": args.scrapers, "seconds": args.seconds, "scrapes_ok": ok,
                    "scrapes_refused_or_failed": failed,
                    "result_polls": len(latencies),
                    "result_ms_p50": round(latencies[len(latencies) // 2] * 1000, 1),
                    "result_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
                    "result_ms_max": round(latencies[-1] * 1000, 1)}
    finally:
        proc.terminate()
        proc.wait(10)


async def storm(url: str, n: int, seconds: float) -> tuple[int, int]:
    """`n` clients scraping `url` back to back for `seconds`: (answered 200, refused or failed)."""
    ok = failed = 0
    stop = trio.current_time() + seconds
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as m:
        async def scraper():
            nonlocal ok, failed
            while trio.current_time() < stop:
                try:
                    r = await m.get(url)
                    ok += r.status_code == 200
                    failed += r.status_code != 200
                except httpx.HTTPError:
                    failed += 1
                    await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(scraper)
    return ok, failed


def main() -> None:
    if sys.argv[1:2] == ["_storm"]:
        print(json.dumps(trio.run(storm, sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("flood", "scrapes"))
    p.add_argument("--connections", type=int, default=1100)
    p.add_argument("--fd-limit", type=int, default=1024)
    p.add_argument("--finished", type=int, default=1000)
    p.add_argument("--scrapers", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # our side needs the fds
    print(json.dumps(trio.run(flood if args.what == "flood" else scrapes, args), indent=1))


if __name__ == "__main__":
    main()
