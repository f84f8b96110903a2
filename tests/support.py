"""Helpers shared by the integration tests (not fixtures)."""

from __future__ import annotations

import attrs
import httpx
import trio
from prometheus_client import CollectorRegistry

from quantus_miner import qpow

MAX = qpow.MAX_U512
ZERO_HEADER = "00" * 32
EASY = {"cpu-fast": MAX // 200_000, "cpu-baseline": MAX // 200}  # ~0.1 s of mining on either engine


def mine_body(job_id: str, threshold: int, start: int = 1, end: int = MAX, header: str = ZERO_HEADER) -> dict:
    return {"job_id": job_id, "mining_hash": header, "distance_threshold": str(threshold),
            "nonce_start": format(start, "0128x"), "nonce_end": format(end, "0128x")}


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
