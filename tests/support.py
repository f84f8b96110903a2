"""Helpers shared by the integration tests (not fixtures)."""

from __future__ import annotations

import os
from collections.abc import Callable
import re
import select
import socket
import subprocess
import sys

import signal
import time
from typing import Any

import attrs
import httpx
import trio
from prometheus_client import CollectorRegistry

from quantus_miner.core import qpow, requests

MAX = qpow.MAX_U512
ZERO_HEADER = "00" * 32
EASY = {"cpu-fast": MAX // 200_000, "cpu-baseline": MAX // 200}  # ~0.1 s of mining on either engine


def mine_body(job_id: str, threshold: int, start: int = 1, end: int = MAX, header: str = ZERO_HEADER) -> dict:
    return requests.mine_body(requests.MineRequest(job_id, bytes.fromhex(header), threshold, start, end))


@attrs.define
class Miner:
    """A running in-process miner and an HTTP client bound to it."""

    running: object
    client: httpx.AsyncClient
    registry: CollectorRegistry

    @property
    def runtime(self):
        return self.running.runtime

    async def mine(self, job_id: str, threshold: int, **kw) -> httpx.Response:
        return await self.client.post("/mine", json=mine_body(job_id, threshold, **kw))

    async def result(self, job_id: str) -> dict:
        return (await self.client.get(f"/result/{job_id}")).json()

    async def wait_status(self, job_id: str, *statuses: str, poll: float = 0.02) -> dict:
        """Poll /result as the node does (only faster) until the job reaches one of `statuses`."""
        while True:
            body = await self.result(job_id)
            if body["status"] in statuses:
                return body
            await trio.sleep(poll)

    async def scrape(self) -> str:
        async with httpx.AsyncClient() as c:
            r = await c.get(self.running.metrics_url)
        assert r.status_code == 200
        return r.text


MINER = [sys.executable, "-m", "quantus_miner"]


async def run(*args, env=None, timeout=60):
    with trio.fail_after(timeout):
        return await trio.run_process([*MINER, *args], capture_stdout=True, capture_stderr=True, check=False,
                                      env={**os.environ, **(env or {})})


class Server:
    """A `quantus-miner serve` subprocess whose API URL was read from its ready line (logged at info)."""

    def __init__(self, proc, api_url, metrics_url):
        self.proc, self.api_url, self.metrics_url = proc, api_url, metrics_url

    @classmethod
    async def start(cls, *args, env=None, fd_limit: int | None = None):
        """`fd_limit` lowers the server's RLIMIT_NOFILE (soft and hard), so fd floods stay small."""
        import resource

        def limit_fds():
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        proc = await trio.lowlevel.open_process([*MINER, "serve", *args], stderr=subprocess.PIPE,
                                                env={**os.environ, **(env or {})},
                                                preexec_fn=limit_fds if fd_limit else None)
        buf = b""
        while b"ready:" not in buf:
            chunk = await proc.stderr.receive_some()
            if not chunk:
                raise AssertionError(f"miner exited before ready: {buf.decode()}")
            buf += chunk
        line = buf.decode().split("ready:")[1].splitlines()[0]
        api = re.search(r"API (http://\S+?)(,|$)", line).group(1)
        metrics = re.search(r"metrics (http://\S+)", line)
        return cls(proc, api, metrics.group(1) if metrics else None)

    async def drain(self) -> None:
        """Keep reading the server's log so a full pipe never blocks it (run in a nursery)."""
        while await self.proc.stderr.receive_some():
            pass

    @property
    def port(self) -> int:
        return int(self.api_url.rsplit(":", 1)[1])

    def resources(self) -> dict:
        """RSS (MiB), open fds and threads of the server process, from /proc."""
        pid = self.proc.pid
        rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
        return {"rss_mib": rss / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")),
                "threads": len(os.listdir(f"/proc/{pid}/task"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SyncServer:
    """`quantus-miner serve` as a subprocess for synchronous tests (e.g. Hypothesis-driven ones)."""

    def __init__(self, *args):
        import threading

        self.proc = subprocess.Popen([*MINER, "serve", *args], stderr=subprocess.PIPE)
        lines = []
        for raw in self.proc.stderr:
            lines.append(raw.decode(errors="replace"))
            if "ready:" in lines[-1]:
                break
        else:
            raise AssertionError("miner exited before ready: " + "".join(lines))
        self.api_url = re.search(r"API (http://\S+?)(,|$)", lines[-1]).group(1)
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain the log

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=10)


class Recorder:
    """Collects client status events and fake-engine activity; waitable without polling."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._change = trio.Event()

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        self.events.append((kind, info))
        self._change.set()
        self._change = trio.Event()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [info for k, info in self.events if k == kind]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._change.wait()


PY = sys.executable
STARTUP_S = 60


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


class Cluster:
    """The processes of a real Dask cluster, and a client of it for what only a worker can tell."""

    def __init__(self, logs):
        self.logs = logs
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.client = None

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        return subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn("scheduler", [PY, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                                   "--port", str(self.port), "--no-dashboard"])
        wait_port(self.port, STARTUP_S)

    def stop_scheduler(self) -> None:
        self.scheduler.kill()
        self.scheduler.wait(10)

    def start_worker(self, name: str) -> None:
        self.workers[name] = self._spawn(name, [PY, "-m", "quantus_miner", "worker", self.address, "--nthreads", "1",
                                                "--name", name, "--cluster-timeout-s", "20", "--log-level", "warning"])

    def kill_worker(self, name: str) -> None:
        self.workers[name].send_signal(signal.SIGKILL)
        self.workers[name].wait(10)

    def connect(self):
        from distributed import Client

        self.client = Client(self.address, timeout=20, set_as_default=False)

    def wait_workers(self, n: int) -> None:
        self.client.wait_for_workers(n, timeout=STARTUP_S)
        while len(self.client.scheduler_info(n_workers=-1)["workers"]) != n:  # a killed one may linger a moment
            time.sleep(0.05)

    def kernel_stops(self, job_id: str) -> dict[str, list[float]]:
        from quantus_miner.cluster import tasks

        return self.client.run(tasks.kernel_stops, job_id)

    def close(self) -> None:
        if self.client is not None:
            self.client.close(timeout=5)
        for proc in [*self.workers.values(), self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


class LineReader:
    """A child's output stream read line by line, every read with a deadline of its own.

    A wedged or dead child then fails the test at once with a clear message (the pattern, how long,
    whether the process still runs, what it printed) instead of blocking a plain `readline()`
    until the suite's backstop. Reads the pipe unbuffered (select and os.read): never mix it with
    the stream's own reads; lines after a match stay here for the next call.
    """

    def __init__(self, proc: subprocess.Popen, stream: str = "stderr") -> None:
        self.proc, self.name = proc, stream
        self.fd = getattr(proc, stream).fileno()
        self.seen = b""  # everything read so far (for the failure message)
        self._pending = b""  # bytes after the last line handed out

    def line_matching(self, pattern: str, timeout: float) -> str:
        """The next line (decoded, without its newline) that matches `pattern`; skipped lines are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode(errors="replace").rstrip("\r")
                if re.search(pattern, line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                why = f"not seen within {timeout:g} s"
                break
            chunk = os.read(self.fd, 65536)
            if not chunk:
                why = "not seen before the stream closed"
                try:
                    self.proc.wait(timeout=2)  # a closed stream usually means an exit: name its status
                except subprocess.TimeoutExpired:
                    pass
                break
            self.seen += chunk
            self._pending += chunk
        code = self.proc.poll()
        state = "still running" if code is None else f"exited with {code}"
        raise AssertionError(f"{pattern!r} {why} on {self.name} (process {state}); "
                             f"output: {self.seen.decode(errors='replace')[-3000:]}")


def read_line_matching(proc: subprocess.Popen, pattern: str, timeout: float, stream: str = "stderr") -> str:
    """The first line of proc's `stream` that matches `pattern` within `timeout` seconds (see `LineReader`)."""
    return LineReader(proc, stream).line_matching(pattern, timeout)
