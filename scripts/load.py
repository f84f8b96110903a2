"""Load a real `quantus-miner serve` on loopback and print one JSON report.

While all cores mine one job: N clients poll `/result` at 2 Hz over keep-alive connections and a
mine/cancel pair runs every 100 ms, for `--seconds`; then `--lifecycles` more job lifecycles run
back to back. The miner runs with `--worker-nice 19` (API latency first). Reports /result latency p50/p99 (client monotonic clock), errors, and the server's
RSS, fds, threads and exposed series at the start and the end (after retention has passed).

Run: .venv/bin/python scripts/load.py --seconds 60 --lifecycles 10000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import threading
import uuid

import trio

from quantus_miner.core import qpow, requests

MINER = [sys.executable, "-m", "quantus_miner", "serve"]
RETENTION_S = 5  # the least --job-retention-s accepts (MIN_JOB_RETENTION_S)


class RawClient:
    """One keep-alive HTTP/1.1 connection on a raw trio socket (cheap: the load costs little CPU).

    Renewed when the server announces `Connection: close` (hypercorn does every 1000 requests), and
    after IDLE_RENEW_S unused, before the server's 5 s idle timeout closes it (as HTTP clients' pools do).
    """

    IDLE_RENEW_S = 4.0

    def __init__(self, stream: trio.SocketStream, host: str, port: int):
        self.stream, self.host, self.port, self.buf, self.closing = stream, host, port, b"", False
        self.used = trio.current_time()

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream(host, port), host, port)

    async def request(self, method: str, path: str, doc: dict | None = None) -> tuple[int, dict]:
        if self.closing or trio.current_time() - self.used > self.IDLE_RENEW_S:
            await self.stream.aclose()
            self.stream, self.buf, self.closing = await trio.open_tcp_stream(self.host, self.port), b"", False
        body = b"" if doc is None else json.dumps(doc).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        await self.stream.send_all(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        header, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = header.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(fields["content-length"])
        self.closing = fields.get("connection", "").lower() == "close"
        while len(self.buf) < length:
            await self._fill()
        payload, self.buf = self.buf[:length], self.buf[length:]
        self.used = trio.current_time()
        return int(lines[0].split()[1]), json.loads(payload)

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def mine_body(job_id: str) -> dict:
    return requests.mine_body(requests.MineRequest(job_id, bytes(32), 0, 1, qpow.MAX_U512))


def resources(pid: int) -> dict:
    rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    return {"rss_mib": round(rss / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


def start_server() -> tuple[subprocess.Popen, int, str]:
    proc = subprocess.Popen([*MINER, "--port", "0", "--metrics-port", "0", "--job-retention-s", str(RETENTION_S),
                             "--progress-chunk-ms", "500", "--worker-nice", "19"], stderr=subprocess.PIPE)
    for raw in proc.stderr:
        line = raw.decode(errors="replace")
        if "ready:" in line:
            api = re.search(r"API http://127\.0\.0\.1:(\d+)", line).group(1)
            metrics = re.search(r"metrics (http://\S+)", line).group(1)
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining the log
            return proc, int(api), metrics
    raise SystemExit("miner exited before ready")


async def series(metrics_url: str) -> int:
    host_port, path = metrics_url.removeprefix("http://").split("/", 1)
    host, port = host_port.split(":")
    client = await RawClient.connect(host, int(port))
    await client.stream.send_all(f"GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := await client.stream.receive_some(65536):
        data += chunk
    await client.aclose()
    text = data.split(b"\r\n\r\n", 1)[1].decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


async def run(seconds: float, lifecycles: int, clients_n: int) -> dict:
    proc, port, metrics_url = start_server()
    try:
        host = "127.0.0.1"
        control = await RawClient.connect(host, port)

        async def churn(n: int, pause: float, stop_at: float = float("inf")) -> int:
            done = 0
            while done < n and trio.current_time() < stop_at:
                job_id = uuid.uuid4().hex
                assert (await control.request("POST", "/mine", mine_body(job_id)))[0] == 200
                assert (await control.request("POST", f"/cancel/{job_id}"))[0] == 200
                done += 1
                await trio.sleep(pause)
            return done

        assert (await control.request("POST", "/mine", mine_body("main")))[0] == 200  # all cores mine it
        await churn(200, 0)  # warm caches and thread pools before the baseline
        await control.request("GET", "/result/main")  # every request series the run touches exists
        await trio.sleep(RETENTION_S + 2.5)  # + reaper period (1 s) + metrics cache (1 s)
        start = {**resources(proc.pid), "series": await series(metrics_url)}
        latencies: list[float] = []
        errors = 0
        stop_at = trio.current_time() + seconds

        async def poller(client: RawClient, offset: float) -> None:
            nonlocal errors
            await trio.sleep(offset)
            next_at = trio.current_time()
            while trio.current_time() < stop_at:
                t0 = trio.current_time()
                try:
                    status, body = await client.request("GET", "/result/main")
                except (OSError, ValueError, trio.BrokenResourceError):
                    status, body = 0, {}
                latencies.append(trio.current_time() - t0)
                if status != 200 or body.get("status") != "running":
                    errors += 1
                next_at += 0.5  # 2 Hz, as the node polls
                await trio.sleep_until(next_at)

        clients = [await RawClient.connect(host, port) for _ in range(clients_n)]
        pairs = 0

        async def pair_loop() -> None:
            nonlocal pairs
            pairs = await churn(10**12, 0.1, stop_at)

        gc.disable()  # this process's collector pauses must not count as server latency
        try:
            async with trio.open_nursery() as nursery:
                for i, client in enumerate(clients):
                    nursery.start_soon(poller, client, i * 0.5 / clients_n)
                nursery.start_soon(pair_loop)
        finally:
            gc.enable()
        for client in clients:
            await client.aclose()
        pairs += await churn(lifecycles, 0)
        await trio.sleep(RETENTION_S + 2.5)  # + reaper period (1 s) + metrics cache (1 s)
        end = {**resources(proc.pid), "series": await series(metrics_url)}
        status, body = await control.request("GET", "/result/main")
        main_running = status == 200 and body["status"] == "running"
        await control.aclose()
    finally:
        proc.terminate()
        exit_code = proc.wait(timeout=10)
    return {"seconds": seconds, "clients": clients_n, "requests": len(latencies), "errors": errors,
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2), "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "max_ms": round(max(latencies, default=0) * 1000, 2), "lifecycles": pairs, "main_job_running": main_running,
            "exit_code": exit_code, "start": start, "end": end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--lifecycles", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(trio.run(run, args.seconds, args.lifecycles, args.clients)))


if __name__ == "__main__":
    main()
