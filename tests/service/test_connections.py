"""Hostile connections against a real `quantus-miner serve` (issue 11's probes, scaled down).

The server runs as a subprocess with RLIMIT_NOFILE lowered to `FDS` and a connection cap of
`CAP`, so a flood that would exhaust the default 1,024 fds fits in a few hundred sockets here.
Every socket is a real TCP connection on 127.0.0.1; the attacker side is this test.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import time

import httpx
import trio

from quantus_miner.service.api import BODY_TIMEOUT_S
from quantus_miner.service.connections import LINGER_S, REAP_PERIOD_S

from ..support import mine_body

FDS = 256
CAP = 64
IDLE_S = 1.0
FLOOD = FDS + 60  # more connections than the server has fds
ARGS = ("--port", "0", "--cores", "1", "--max-connections", str(CAP), "--idle-timeout-s", str(IDLE_S))
SLACK = 16  # fds the server may open beyond its baseline besides the capped connections (threads, the node)


async def start(spawn_server):
    server = await spawn_server(*ARGS, fd_limit=FDS)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=5) as c:
        assert (await c.get("/health")).status_code == 200
    return server


def connect(port: int) -> socket.socket:
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    return s


def rst_close(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


async def send_all(s: socket.socket, data: bytes) -> None:
    ts = trio.socket.from_stdlib_socket(s)
    while data:
        n = await ts.send(data)
        data = data[n:]


async def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (EOF or RST)."""
    ts = trio.socket.from_stdlib_socket(s)
    buf = b""
    while True:
        try:
            chunk = await ts.recv(65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk


async def fds_settle(server, at_most: int, within: float) -> int:
    with trio.fail_after(within):
        while (fds := server.resources()["fds"]) > at_most:
            await trio.sleep(0.05)
    return fds


async def timed_result(server) -> float:
    """Seconds a fresh client (the node) takes to get an answer from /result."""
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=server.api_url, timeout=5) as c:
        r = await c.get("/result/node-job")
    assert r.status_code == 404 and r.json()["status"] == "not_found"
    return time.monotonic() - t0


async def test_a_flood_past_the_fd_limit_is_capped_and_the_node_is_still_served(spawn_server):
    with trio.fail_after(60):
        server = await start(spawn_server)
        baseline = server.resources()["fds"]
        flood = []
        try:
            for i in range(FLOOD):
                s = connect(server.port)
                flood.append(s)
                if i % 2:  # half send a request and go idle, half stay silent
                    try:
                        s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    except (BlockingIOError, OSError):
                        pass
                if i % 50 == 0:
                    await trio.sleep(0)  # let the server accept
            with trio.fail_after(1):  # the node's fresh connection is answered within a second
                await timed_result(server)
            assert server.resources()["fds"] <= baseline + CAP + SLACK
        finally:
            for s in flood:
                s.close()
        # once the flood stops the service recovers by itself
        await fds_settle(server, baseline + 2, within=IDLE_S + 5)
        with trio.fail_after(1):
            await timed_result(server)


async def test_hit_and_run_pipelines_leave_no_fds_behind(spawn_server):
    # each attacker pipelines ~940 B of GET /openapi.json without reading, then vanishes
    pipeline = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 24
    with trio.fail_after(60):
        server = await start(spawn_server)
        baseline = server.resources()["fds"]
        for round_ in range(3):
            batch = [connect(server.port) for _ in range(CAP)]
            await trio.sleep(0.2)
            for s in batch:
                try:
                    s.send(pipeline)
                except OSError:
                    pass
            await trio.sleep(0.2)
            for i, s in enumerate(batch):
                rst_close(s) if i % 2 else s.close()
        await fds_settle(server, baseline + 2, within=IDLE_S + 5)
        with trio.fail_after(1):
            await timed_result(server)


async def test_idle_close_and_http10_connections_are_closed_by_the_server(spawn_server):
    with trio.fail_after(30):
        server = await start(spawn_server)
        baseline = server.resources()["fds"]
        requests = {
            "keep-alive": b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            "close": b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "http/1.0": b"GET /health HTTP/1.0\r\n\r\n",
            "silent": b"",
        }
        closed_after: dict[str, list[float]] = {k: [] for k in requests}

        async def client(kind: str) -> None:
            s = connect(server.port)
            t0 = time.monotonic()
            if requests[kind]:
                await send_all(s, requests[kind])
            answer = await read_until_closed(s)  # stays silent: never sends another byte
            closed_after[kind].append(time.monotonic() - t0)
            if requests[kind]:
                assert answer.startswith(b"HTTP/1.1 200"), answer[:40]
            s.close()

        async with trio.open_nursery() as nursery:
            for kind in requests:
                for _ in range(10):
                    nursery.start_soon(client, kind)
        # a response that ends the connection closes it at once; silence closes it after the idle timeout
        assert max(closed_after["close"] + closed_after["http/1.0"]) < 1.0
        for kind in ("keep-alive", "silent"):
            assert IDLE_S - 0.1 < min(closed_after[kind]) and max(closed_after[kind]) < IDLE_S + 1.5, closed_after
        await fds_settle(server, baseline + 2, within=2)


async def test_many_idle_connections_are_all_reaped_while_the_client_keeps_them(spawn_server):
    with trio.fail_after(30):
        server = await start(spawn_server)
        baseline = server.resources()["fds"]
        held = []
        try:
            for _ in range(CAP):
                s = connect(server.port)
                held.append(s)
            await trio.sleep(0.1)
            for s in held:
                s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            # the attacker keeps every socket open; the server still lets go of all of them
            await fds_settle(server, baseline + 2, within=IDLE_S + 3)
        finally:
            for s in held:
                s.close()


async def test_a_slow_reader_is_dropped_and_its_fd_freed(spawn_server):
    with trio.fail_after(30):
        server = await start(spawn_server)
        baseline = server.resources()["fds"]
        readers = []
        for _ in range(8):
            s = connect(server.port)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            readers.append(s)
        await trio.sleep(0.1)
        for s in readers:
            try:  # far more response bytes than the socket buffers hold; never read
                s.send(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
            except OSError:
                pass
        await trio.sleep(0.2)
        assert server.resources()["fds"] >= baseline + len(readers) - 2  # held while the sends are blocked
        for s in readers[:4]:  # half reset their connection; the other half just never read
            rst_close(s)
        # responses stuck on unread (or reset) sockets are abandoned after the idle timeout
        await fds_settle(server, baseline + 2, within=IDLE_S + 2 + REAP_PERIOD_S)
        for s in readers[4:]:
            rst_close(s)


async def test_a_trickled_body_gets_408_and_the_connection_is_closed(spawn_server):
    with trio.fail_after(BODY_TIMEOUT_S + 15):
        server = await start(spawn_server)
        baseline = server.resources()["fds"]
        answers = []

        async def trickler() -> None:
            s = connect(server.port)
            await send_all(s, b"POST /mine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 400\r\n\r\n")
            ts = trio.socket.from_stdlib_socket(s)
            buf = b""
            with trio.move_on_after(BODY_TIMEOUT_S + 3 + LINGER_S):
                while True:  # one byte every 0.5 s, reading whatever comes back, until closed
                    try:
                        await ts.send(b" ")
                    except (BrokenPipeError, ConnectionResetError):
                        break
                    with trio.move_on_after(0.5):
                        try:
                            chunk = await ts.recv(65536)
                        except ConnectionResetError:
                            break
                        if not chunk:
                            break
                        buf += chunk
            answers.append(buf)
            s.close()

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(trickler)
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), [a[:20] for a in answers]
        await fds_settle(server, baseline + 2, within=2)


async def test_413_with_connection_close_really_closes(spawn_server):
    with trio.fail_after(20):
        server = await start(spawn_server)
        baseline = server.resources()["fds"]
        body = b"x" * 100_000
        socks = []
        for _ in range(10):
            s = connect(server.port)
            socks.append(s)
        await trio.sleep(0.1)

        async def oversize(s) -> None:
            await send_all(s, b"POST /mine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(body))
            try:
                await send_all(s, body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            t0 = time.monotonic()
            answer = await read_until_closed(s)
            assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
            assert time.monotonic() - t0 < LINGER_S + 1

        async with trio.open_nursery() as nursery:
            for s in socks:
                nursery.start_soon(oversize, s)
        for s in socks:
            s.close()
        await fds_settle(server, baseline + 2, within=2)


# -- protocols and vanished clients (in-process miner: its registry and log are at hand) ----------------

async def raw_exchange(url: str, request: bytes) -> bytes:
    """Send raw bytes, read until the server has answered one response (or closed)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        buf = b""
        with trio.move_on_after(2):
            while chunk := await stream.receive_some(65536):
                buf += chunk
                head, sep, body = buf.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:")]
                if sep and length and len(body) >= length[0]:
                    break
        return buf


async def test_websocket_upgrades_get_a_counted_json_400_and_no_error_log(start_miner, caplog):
    with trio.fail_after(30):
        miner = await start_miner()
        upgrades = [
            b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"GET /result/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
        ]
        for request in upgrades:
            answer = await raw_exchange(miner.running.api_url, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400"), answer[:80]
            assert json.loads(body) == {"status": "error", "job_id": "", "message": "WebSocket is not served here"}
        counted = sum(v for (endpoint, code), v in http_counts(miner).items() if code == "400")
        assert counted == len(upgrades)
        assert not [r for r in caplog.records if r.levelname == "ERROR"]


def http_counts(miner) -> dict:
    return {(s.labels["endpoint"], s.labels["code"]): s.value
            for f in miner.registry.collect() if f.name == "miner_http_requests"
            for s in f.samples if s.name.endswith("_total")}


async def test_h2c_is_not_served_only_http_1(start_miner):
    # decided: the node speaks HTTP/1.1; h2c (upgrade or prior knowledge) is not served (README)
    with trio.fail_after(30):
        miner = await start_miner()
        upgrade = await raw_exchange(miner.running.api_url, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, "
                                     b"HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        assert upgrade.startswith(b"HTTP/1.1 200"), upgrade[:40]  # the upgrade is ignored, as RFC 9110 allows
        preface = await raw_exchange(miner.running.api_url, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert not preface.startswith(b"\x00"), preface[:40]  # no HTTP/2 SETTINGS frame
        assert preface == b"" or preface.startswith(b"HTTP/1.1 4"), preface[:40]


async def test_vanished_clients_log_no_errors_and_abandoned_mines_are_accepted_or_not_at_all(start_miner, caplog):
    # Documented choice: a /mine whose client leaves before the answer may or may not have created the
    # job (the client cannot tell); re-sending the same job_id tells it: 409 = it was accepted, 200 = now it is.
    with trio.fail_after(60):
        miner = await start_miner(max_jobs=64)
        host, port = miner.running.api_url.removeprefix("http://").rsplit(":", 1)
        for i in range(40):
            body = json.dumps(mine_body(f"gone{i}", 0, start=1, end=1 << 40)).encode()
            s = socket.create_connection((host, int(port)))
            s.sendall(b"POST /mine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                      % len(body) + body[: len(body) if i % 2 else len(body) // 2])
            rst_close(s) if i % 3 else s.close()
        for i in range(40):
            r = await miner.mine(f"gone{i}", 0, start=1, end=1 << 40)
            assert r.status_code in (200, 409), r.text
            assert (await miner.result(f"gone{i}"))["status"] == "running"
            await miner.client.post(f"/cancel/gone{i}")
        assert (await miner.client.get("/health")).status_code == 200
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
