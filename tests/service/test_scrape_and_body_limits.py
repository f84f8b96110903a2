"""Fresh metrics at the chunk cadence, a fast 503 past the metrics port's capacity, a 408 that always comes.

Test charter: the real miner in-process (`serve_miner` on 127.0.0.1 port 0), scraped and spoken to
over real TCP (httpx, or raw sockets where a client must misbehave). Time passes on purpose only
where the passing time is what is tested (the freshness bound, the body timeout); every test has an
absolute `trio.fail_after`.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from quantus_miner.core.config import ServiceConfig
from quantus_miner.service.api import BODY_TIMEOUT_S
from quantus_miner.service.server import METRICS_MAX_CONNECTIONS

from ..support import mine_body

FRESH_S = 0.1


def job_hashes(text: str, job_id: str) -> int:
    m = re.search(rf'^miner_job_hashes_total{{engine="[^"]+",job_id="{job_id}"}} (\S+)$', text, re.M)
    return int(float(m.group(1)))


def values_a_cache_can_show(windows: list[tuple[float, float]], ttl_s: float) -> int:
    """The most distinct values scrapes taken in `windows` (sent, answered) can see through a `ttl_s` cache.

    Such a cache renders anew only once its body is `ttl_s` old, and a scrape's render happens somewhere
    in its window: a new value at scrape k after one rendered at scrape j needs answered_k - sent_j >= ttl_s.
    Greedy from the first scrape gives the most renders (an upper bound: generous to such a cache).
    """
    renders, last_sent = 1, windows[0][0]
    for sent, answered in windows[1:]:
        if answered - last_sent >= ttl_s:
            renders, last_sent = renders + 1, sent
    return renders


async def test_scrapes_250_ms_apart_see_every_200_ms_chunk(start_miner):
    """The default cache: a scrape shows all progress reported 100 ms before it, so it moves each time."""
    with trio.fail_after(60):
        default = ServiceConfig().metrics_cache_s
        assert default <= FRESH_S
        miner = await start_miner(metrics_cache_s=default, cores=1, progress_chunk_ms=200)
        assert (await miner.mine("j", 0)).status_code == 200  # threshold 0: never found
        while (await miner.result("j"))["hash_count"] == 0:
            await trio.sleep(0.02)
        values, windows = [], []
        async with httpx.AsyncClient() as http:
            # at least 12 scrapes (3 s); on a loaded machine more, until the scrapes have seen more values
            # than a 1 s cache could have shown them at those times (it cannot pass without that)
            while len(values) < 12 or len(set(values)) <= values_a_cache_can_show(windows, 1.0):
                assert len(values) < 60, (  # 15 s of 200 ms chunks, and still no proof
                    f"{len(set(values))} values in {len(values)} scrapes: no more than a 1 s cache could show "
                    f"({values_a_cache_can_show(windows, 1.0)}); values {values}")
                before = (await miner.result("j"))["hash_count"]  # progress reported by now...
                await trio.sleep(FRESH_S + 0.01)  # ...is more than 100 ms old at the scrape
                sent = trio.current_time()
                scraped = job_hashes((await http.get(miner.running.metrics_url)).text, "j")
                windows.append((sent, trio.current_time()))
                assert scraped >= before, (scraped, before)
                values.append(scraped)
                await trio.sleep(0.25 - FRESH_S - 0.01)
        assert values == sorted(values), values
        await miner.client.post("/cancel/j")


def test_a_1_s_cache_shows_at_most_one_value_per_second_of_scrapes():
    """The bound the freshness test compares with: scrapes every 250 ms for 3 s, then windows that straddle 1 s."""
    every_250_ms = [(i * 0.25, i * 0.25 + 0.01) for i in range(12)]
    assert values_a_cache_can_show(every_250_ms, 1.0) == 3  # renders at 0, 1.0, 2.0 (2.75 is too soon)
    assert values_a_cache_can_show(every_250_ms, 0.1) == 12
    assert values_a_cache_can_show([(0.0, 0.5), (0.6, 1.0), (0.7, 1.2)], 1.0) == 2  # 1.0 - 0.0 counts


def raw_request(path: str = "/metrics") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def read_answer(stream: trio.SocketStream) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buf += chunk
    return buf


async def test_connections_past_the_metrics_cap_get_503_with_retry_after_at_once(start_miner):
    with trio.fail_after(30):
        miner = await start_miner()
        url = urlsplit(miner.running.metrics_url)
        held = []
        for _ in range(METRICS_MAX_CONNECTIONS):  # a scraper keeping its connections alive fills the port
            s = await trio.open_tcp_stream(url.hostname, url.port)
            await s.send_all(raw_request())
            assert (await read_answer(s)).startswith(b"HTTP/1.1 200")
            held.append(s)
        answers: list[tuple[float, bytes]] = []

        async def extra() -> None:
            t0 = time.monotonic()
            s = await trio.open_tcp_stream(url.hostname, url.port)
            await s.send_all(raw_request())
            answers.append((time.monotonic() - t0, await read_answer(s)))
            await s.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(extra)
        assert len(answers) == 200
        for took, answer in answers:
            head = answer.lower()
            assert head.startswith(b"http/1.1 503") and b"retry-after: 1" in head, answer[:200]
            assert took < 2.0, took
        for s in held:  # capacity again: a scrape is served
            await s.aclose()
        for _ in range(50):
            async with httpx.AsyncClient() as http:
                r = await http.get(miner.running.metrics_url)
            if r.status_code == 200:
                break
            await trio.sleep(0.05)  # the port notices the closes on its next read
        assert r.status_code == 200


@pytest.mark.parametrize("idle_timeout_s", [5.0, 1.0], ids=["default idle timeout", "idle shorter than body"])
async def test_a_stalled_body_always_gets_its_408_before_any_idle_close(start_miner, idle_timeout_s):
    """Content-Length 100, 10 bytes, then silence, while the miner is busy: a 408, never a silent close."""
    with trio.fail_after(BODY_TIMEOUT_S + 15):
        miner = await start_miner(idle_timeout_s=idle_timeout_s, cores=2)
        assert (await miner.mine("busy", 0)).status_code == 200
        api = urlsplit(str(miner.client.base_url))
        answers: list[tuple[float, bytes]] = []

        async def stall() -> None:
            s = await trio.open_tcp_stream(api.hostname, api.port)
            t0 = time.monotonic()
            await s.send_all(b"POST /mine HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n" + b'{"job_id":')
            buf = b""
            while chunk := await s.receive_some(65536):
                buf += chunk
            answers.append((time.monotonic() - t0, buf))
            await s.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(stall)
        for took, answer in answers:
            assert answer.startswith(b"HTTP/1.1 408"), (took, answer[:80])
            assert BODY_TIMEOUT_S - 0.5 < took < BODY_TIMEOUT_S + 3, took
        await miner.client.post("/cancel/busy")
