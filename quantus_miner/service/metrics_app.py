"""A tiny ASGI app for the metrics port: `GET /metrics` and nothing else, cheap under any scrape load.

The exposition is built by `render` (`MinerMetrics.render`: snapshots on the trio thread, text in
a worker thread). A scrape reuses an exposition (finished, or still being built) only if its
snapshots were taken at most `CACHE_S` (0.1 s) before the scrape is answered: so a scrape never
shows progress older than that, even at a 200 ms chunk cadence and 250 ms scrapes, while scrapes
that overlap share one build. Scrapes are paced to `RATE` a second (bursts of `BURST`): a scrape
waits for its turn, and one that would wait over `MAX_WAIT_S` gets a 503 at once, as does any
beyond `MAX_SCRAPES` in flight (and, at the connection level, any connection past the port's cap:
`connections.ConnectionGuard`). So a scrape storm costs the event loop a bounded few milliseconds
a second (at most `RATE` builds) and cannot starve the node's API.
"""

from collections.abc import Awaitable, Callable

import trio
from prometheus_client import CONTENT_TYPE_LATEST

CACHE_S = 0.1  # the freshness bound: an exposition is reused for at most this long
MAX_SCRAPES = 8
RATE = 10.0  # scrapes answered per second at most (Prometheus scrapes every few seconds)
BURST = 5
MAX_WAIT_S = 2.0


async def respond(send, scope, status: int, body: bytes, ctype: str, headers=()) -> None:
    """Send one whole ASGI response (no body for HEAD)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})


def create_metrics_app(render: Callable[[], Awaitable[bytes]], cache_s: float = CACHE_S,
                       max_scrapes: int = MAX_SCRAPES, rate: float = RATE, burst: int = BURST):
    """The /metrics ASGI app: bodies shared within `cache_s`, bounded scrapes in flight and per second."""
    cached: list = [float("-inf"), b""]  # built at, body
    lock = trio.Lock()  # one build at a time; scrapes that waited for it reuse it
    in_flight = 0
    next_turn = float("-inf")  # leaky bucket: when the next scrape may be answered

    def turn() -> float | None:
        """Seconds this scrape waits for its turn; None: over MAX_WAIT_S, refuse it."""
        nonlocal next_turn
        now = trio.current_time()
        slot = max(next_turn, now - (burst - 1) / rate)
        if slot - now > MAX_WAIT_S + 1e-9:  # float steps of 1/rate
            return None
        next_turn = slot + 1 / rate
        return max(0.0, slot - now)

    async def exposition() -> bytes:
        async with lock:
            now = trio.current_time()
            if now - cached[0] >= cache_s or cache_s == 0:
                cached[:] = [now, await render()]
            return cached[1]

    async def app(scope, receive, send):
        nonlocal in_flight
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics" or scope["method"] not in ("GET", "HEAD"):
            return await respond(send, scope, 404, b"not found: this port serves GET /metrics only\n", "text/plain")
        wait = turn() if in_flight < max_scrapes else None
        if wait is None:
            return await respond(send, scope, 503, b"too many scrapes\n", "text/plain", [(b"retry-after", b"1")])
        in_flight += 1
        try:
            await trio.sleep(wait)
            await respond(send, scope, 200, await exposition(), CONTENT_TYPE_LATEST)
        finally:
            in_flight -= 1

    return app
