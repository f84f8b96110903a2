"""A tiny ASGI app for the metrics port: `GET /metrics` and nothing else."""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def create_metrics_app(registry: CollectorRegistry):
    async def app(scope, receive, send):
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
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            # collected on the trio thread, so job state cannot change mid-scrape
            status, body, ctype = 200, generate_latest(registry), CONTENT_TYPE_LATEST
        else:
            status, body, ctype = 404, b"not found: this port serves GET /metrics only\n", "text/plain"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})

    return app
