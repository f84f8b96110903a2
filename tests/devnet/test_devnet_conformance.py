"""The 2025 devnet as a conformance check: it judges a miner as the seed-era node does.

The seed-era node (`node/src/external_miner_client.rs`) reads JSON bodies, never status codes:
`/mine` must answer a `MiningResponse` with status `accepted`, `/cancel` one with `cancelled` or
`not_found`, `/result` a `MiningResult` (every field typed, `work` 64 bytes when completed). Test
charter: the miner under test is outside this project, so a scripted HTTP/1.1 miner (h11 over
trio TCP on 127.0.0.1) misbehaves in one way per case; `quantus-miner devnet --miner-url` runs as a
real process against it, and against the real `serve` for the passing case. Each test is bounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial

import h11
import httpx
import pytest
import trio

from quantus_miner.core.config import ServiceConfig
from quantus_miner.service.server import serve_miner
from prometheus_client import CollectorRegistry

from ..support import run

Answer = tuple[int, str, bytes] | None  # status, content type, body; None: drop the connection


def js(**fields) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(fields).encode()


def honest(method: str, path: str, body: dict | None) -> Answer:
    """A fake miner that answers as the node expects (it never finds anything: status running)."""
    job = path.rsplit("/", 1)[-1] if method != "POST" or not path.endswith("/mine") else body["job_id"]
    if path == "/mine":
        return js(status="accepted", job_id=job)
    if path.startswith("/cancel/"):
        return js(status="cancelled", job_id=job)
    return js(status="running", job_id=job, nonce=None, work=None, hash_count=1000, elapsed_time=1.0)


def completed_with(work: str) -> Callable:
    def script(method, path, body):
        if path.startswith("/result/") and not path.startswith("/result/probe-"):
            job = path.rsplit("/", 1)[-1]
            return js(status="completed", job_id=job, nonce="1", work=work, hash_count=5, elapsed_time=0.1)
        return honest(method, path, body)
    return script


def overriding(prefix: str, answer: Answer) -> Callable:
    def script(method, path, body):
        return answer if path.startswith(prefix) else honest(method, path, body)
    return script


async def serve_script(script: Callable, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        with trio.move_on_after(30):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    request, chunks = event, []
                    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                        if event is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(65536))
                        elif isinstance(event, h11.Data):
                            chunks.append(event.data)
                    raw = b"".join(chunks)
                    answer = script(request.method.decode(), request.target.decode(), json.loads(raw) if raw else None)
                    if answer is None:
                        await stream.aclose()  # a dropped connection, no answer
                        return
                    status, ctype, body = answer
                    await stream.send_all(conn.send(h11.Response(status_code=status, headers=[
                        ("content-type", ctype), ("content-length", str(len(body)))])))
                    await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


CASES = {
    "mine answers status error with 200": (
        overriding("/mine", js(status="error", job_id="x", message="busy")),
        r"^devnet: POST /mine \(job probe-\w+\): the node expects status \"accepted\"; got 200 '\{\"status\": \"error\""),
    "mine answers plain text": (
        overriding("/mine", (200, "text/plain", b"ok")),
        r"^devnet: POST /mine \(job probe-\w+\): the node expects a JSON MiningResponse .*; got 200 'ok'$"),
    "cancel answers a plain-text 404": (
        overriding("/cancel/", (404, "text/plain", b"Not Found")),
        r"^devnet: POST /cancel/probe-\w+: the node expects a JSON MiningResponse .*; got 404 'Not Found'$"),
    "cancel answers running": (
        overriding("/cancel/", js(status="running", job_id="x")),
        r"^devnet: POST /cancel/probe-\w+: the node expects status \"cancelled\" or \"not_found\"; got 200"),
    "result without hash_count": (
        overriding("/result/", js(status="running", job_id="x", nonce=None, work=None, elapsed_time=1.0)),
        r"^devnet: GET /result/probe-\w+: the node expects a JSON MiningResult .*; got 200 '\{\"status\": \"running\""),
    "result with a negative hash_count": (
        overriding("/result/", js(status="running", job_id="x", nonce=None, work=None, hash_count=-1,
                                  elapsed_time=1.0)),
        r"^devnet: GET /result/probe-\w+: the node expects a JSON MiningResult"),
    "result drops the connection": (
        overriding("/result/", None),
        r"^devnet: GET /result/probe-\w+: the node expects an HTTP answer; got RemoteProtocolError"),
    "completed with 63-byte work": (
        completed_with("00" * 63),
        r"^devnet: GET /result/[0-9a-f-]{36}: the node expects \"work\": 128 hex characters \(64 bytes\) in a "
        r"\"completed\" result; got \"work\": '0000"),
    "result not_found": (
        lambda m, p, b: (js(status="not_found", job_id="x", nonce=None, work=None, hash_count=0, elapsed_time=0.0)
                         if p.startswith("/result/") and not p.startswith("/result/probe-") else honest(m, p, b)),
        r"^devnet: GET /result/[0-9a-f-]{36}: the node expects status \"running\" or \"completed\""),
}


@pytest.mark.parametrize("script, verdict", CASES.values(), ids=CASES.keys())
async def test_a_disagreement_ends_with_one_line_and_exit_1(nursery, script, verdict):
    port = await nursery.start(serve_script, script)
    result = await run("devnet", "--miner-url", f"http://127.0.0.1:{port}", "--blocks", "1", "--block-time", "0.5",
                       timeout=60)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.search(verdict, last), last


async def test_the_same_seed_twice_against_one_miner_passes_with_fresh_job_ids(nursery):
    """The node's job ids are random UUIDs: a rerun must not collide with the first run's ids (409)."""
    with trio.fail_after(120):
        running = await nursery.start(partial(serve_miner, ServiceConfig(port=0, metrics_port=None, cores=1),
                                              registry=CollectorRegistry()))
        ids = []
        for _ in range(2):
            result = await run("devnet", "--miner-url", running.api_url, "--blocks", "1", "--block-time", "0.3",
                               "--seed", "7", "--json", timeout=60)
            assert result.returncode == 0, result.stderr.decode()
            ids.append({s.job_id for s in running.runtime.snapshots()})
        assert len(ids[1] - ids[0]) >= 2  # a probe and a block job, none reused


def test_a_deeply_nested_body_is_no_body_not_a_traceback():
    """200,000 nested '[' from a miner under test: the node takes no such body; no RecursionError escapes."""
    from quantus_miner.devnet.simulator import _body

    assert _body(httpx.Response(200, content=b"[" * 200_000)) is None
