"""A tiny ASGI app for the metrics port: `GET /metrics` and nothing else, cheap under any scrape load.

The exposition is built on the trio thread (job state cannot change mid-scrape) at most once
per `CACHE_S`; scrapes within that interval get the same bytes. At most `MAX_SCRAPES` responses
are in flight at once; more get a 503 at once, so a scrape storm cannot starve the node's API.
"""

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

CACHE_S = 1.0
MAX_SCRAPES = 8


def create_metrics_app(registry: CollectorRegistry, cache_s: float = CACHE_S, max_scrapes: int = MAX_SCRAPES):
    cached: list = [float("-inf"), b""]  # built at, body
    in_flight = 0

    def exposition() -> bytes:
        now = trio.current_time()
        if now - cached[0] >= cache_s:
            cached[:] = [now, generate_latest(registry)]
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
        headers = []
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            if in_flight >= max_scrapes:
                status, body, ctype = 503, b"too many concurrent scrapes\n", "text/plain"
                headers.append((b"retry-after", b"1"))
            else:
                status, body, ctype = 200, exposition(), CONTENT_TYPE_LATEST
        else:
            status, body, ctype = 404, b"not found: this port serves GET /metrics only\n", "text/plain"
        in_flight += 1
        try:
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
                                    *headers]})
            await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})
        finally:
            in_flight -= 1

    return app
