"""A simulated Quantus node driving a miner over HTTP exactly as the real node does (docs/protocol.md).

For each new block it cancels the previous job, submits a fresh UUID job over the whole nonce
space (1 .. 2^512 - 1), polls `/result` every 500 ms, and verifies the returned `work` with the
reference QPoW before importing the block. Optional "network" blocks arrive from elsewhere and
force a cancel and a new job, as on a live chain.

Answers are judged as the seed-era node's `external_miner_client.rs` judges them: by their JSON
bodies, whatever the status code (`/mine`: a `MiningResponse` with status `accepted`; `/cancel`:
`cancelled` or `not_found`; `/result`: a `MiningResult` with every field of the right type, and
`work` decoding to 64 bytes when `completed`; `nonce` is never read). Anything else is a
`Disagreement`: one line naming the request, what the node expects and what came back. Job ids
are random UUIDs on every run, as the node's are (the seed fixes the headers only).
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from collections.abc import Callable

import attrs
import httpx
import trio

from ..core import qpow
from ..core.requests import MineRequest, mine_body
from . import chain

log = logging.getLogger("quantus_miner.devnet")

POLL_S = 0.5  # the node's polling period
PROBE_S = 1.0  # hash-rate probe before the first block
STOP_CANCEL_S = 0.5  # bound on cancelling the current job when the simulator is stopped


@attrs.frozen
class Block:
    """One block of the 2025 devnet: found by the miner or by the rest of the network."""
    height: int
    header: str
    threshold: int
    nonce: str | None
    work: str | None
    hash_count: int
    elapsed_time: float
    source: str  # "miner" | "network"
    block_time: float  # seconds since the previous block

    def to_json(self) -> dict:
        """The block as one JSON line of `devnet --json`."""
        return {"height": self.height, "header": self.header, "threshold": str(self.threshold),
                "nonce": self.nonce, "work": self.work, "hash_count": self.hash_count,
                "elapsed_time": self.elapsed_time, "source": self.source}


@attrs.define
class DevnetStats:
    """What a 2025 devnet run did: blocks, cancels, rejections, the live rate."""
    blocks: list[Block] = attrs.field(factory=list)
    cancels: int = 0
    rejected: int = 0  # seals that failed verification or jobs given up
    live_rate: float = 0.0
    threshold: int = 0

    @property
    def height(self) -> int:
        """The chain's height (0 before the first block)."""
        return self.blocks[-1].height if self.blocks else 0


class ProtocolError(RuntimeError):
    """The miner answered something the node cannot use."""


class Disagreement(ProtocolError):
    """One request whose answer the node would refuse: `str()` is the one-line verdict."""

    def __init__(self, request: str, expected: str, got: str):
        super().__init__(f"{request}: the node expects {expected}; got {got}")
        self.request, self.expected, self.got = request, expected, got


STATUSES = ("accepted", "running", "completed", "failed", "cancelled", "not_found", "error")
U64_MAX = (1 << 64) - 1
_HEX128 = re.compile(r"[0-9a-fA-F]{128}")  # what Rust's hex::decode turns into 64 bytes
RESPONSE = 'a JSON MiningResponse {"status": ..., "job_id": "<string>"[, "message": "<string>"]}'
RESULT = ('a JSON MiningResult {"status", "job_id" (string), "nonce"/"work" (string or null), '
          '"hash_count" (unsigned integer), "elapsed_time" (number)}')


def shown(r: httpx.Response) -> str:
    """An answer in a verdict: status code and the start of the body, on one line."""
    text = r.content[:160].decode("utf-8", "replace")
    return f"{r.status_code} {text!r}" + ("..." if len(r.content) > 160 else "")


def _body(r: httpx.Response) -> object:
    try:
        return r.json()
    except (ValueError, RecursionError):  # deeply nested JSON from a miner under test: not a body the node takes
        return None


def _is_u64(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= U64_MAX


def mining_response(r: httpx.Response, request: str) -> dict:
    """The body as serde reads `MiningResponse` (the status code is not looked at, as by the node)."""
    body = _body(r)
    if not (isinstance(body, dict) and body.get("status") in STATUSES and isinstance(body.get("job_id"), str)
            and (body.get("message") is None or isinstance(body.get("message"), str))):
        raise Disagreement(request, RESPONSE, shown(r))
    return body


def mining_result(r: httpx.Response, request: str) -> dict:
    """The body as serde reads `MiningResult`."""
    body = _body(r)
    ok = (isinstance(body, dict) and body.get("status") in STATUSES and isinstance(body.get("job_id"), str)
          and all(body.get(f) is None or isinstance(body.get(f), str) for f in ("nonce", "work"))
          and _is_u64(body.get("hash_count"))
          and isinstance(body.get("elapsed_time"), (int, float)) and not isinstance(body.get("elapsed_time"), bool))
    if not ok:
        raise Disagreement(request, RESULT, shown(r))
    return body


@attrs.define
class NodeSimulator:
    """A simulated 2025 node (not our part) driving a miner over HTTP: /mine, /result polls, /cancel."""
    miner_url: str
    block_time: float = 10.0
    network_block_rate: float = 0.0  # blocks/s arriving from elsewhere
    seed: int = 0
    blocks: int | None = None
    on_block: Callable[[Block, DevnetStats], None] = lambda block, stats: None
    on_poll: Callable[[DevnetStats], None] = lambda stats: None
    stats: DevnetStats = attrs.field(factory=DevnetStats)
    cancel_on_stop: bool = False  # when cancelled, cancel the miner's current job (a miner that lives on)
    _current: str | None = attrs.field(default=None, init=False)  # the job the miner is working on for us

    async def run(self) -> DevnetStats:
        """Mine blocks until --blocks or cancelled; the stats either way."""
        async with httpx.AsyncClient(base_url=self.miner_url, timeout=10) as client:
            try:
                return await self._run(client)
            finally:
                if self.cancel_on_stop and self._current is not None:
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + STOP_CANCEL_S):
                        try:
                            await self._cancel(client, self._current)
                        except (httpx.HTTPError, ProtocolError) as exc:
                            log.warning("could not cancel job %s on stopping: %s", self._current, exc)

    async def _run(self, client: httpx.AsyncClient) -> DevnetStats:
        rng = random.Random(self.seed)
        rate = await self._probe(client, rng)
        self.stats.threshold = chain.threshold_for(rate, self.block_time)
        header = chain.genesis_header(self.seed)
        height, counter, previous_job = 1, 0, None
        last_block_at = trio.current_time()
        while self.blocks is None or len(self.stats.blocks) < self.blocks:
            header_now = chain.next_header(header, height, counter)
            if previous_job is not None:
                await self._cancel(client, previous_job)
            rng.getrandbits(128)  # the draw that once made the job id: a seed keeps its network-block timing
            job_id = str(uuid.uuid4())  # fresh on every run, as the node's: the seed fixes the headers only
            await self._mine(client, job_id, header_now, self.stats.threshold)
            previous_job = job_id
            network_at = (trio.current_time() + rng.expovariate(self.network_block_rate)
                          if self.network_block_rate > 0 else float("inf"))
            body = await self._poll_until_done(client, job_id, network_at)
            now = trio.current_time()
            if body is None:  # a network block arrived first
                last = await self._result(client, job_id)
                block = Block(height, header_now.hex(), self.stats.threshold, None, None,
                              last.get("hash_count", 0), last.get("elapsed_time", 0.0), "network",
                              now - last_block_at)
            elif body["status"] == "completed":
                nonce = self._verified_nonce(header_now, self.stats.threshold, body, f"GET /result/{job_id}")
                if nonce is None:
                    self.stats.rejected += 1
                    counter += 1
                    continue
                block = Block(height, header_now.hex(), self.stats.threshold, format(nonce, "x"), body["work"].lower(),
                              body["hash_count"], body["elapsed_time"], "miner", now - last_block_at)
            elif body["status"] in ("accepted", "not_found", "error"):
                raise Disagreement(f"GET /result/{job_id}", 'status "running" or "completed" for the job it '
                                   "submitted", f'status {body["status"]!r}')
            else:  # failed / cancelled: the node logs it and gives up on the job
                log.error("job %s ended %s; retrying the block", job_id, body["status"])
                self.stats.rejected += 1
                counter += 1
                continue
            self.stats.blocks.append(block)
            self.stats.threshold = chain.adjust_threshold(self.stats.threshold, block.block_time,
                                                          self.block_time)
            self.on_block(block, self.stats)
            header, height, counter, last_block_at = header_now, height + 1, 0, now
        if previous_job is not None:
            await self._cancel(client, previous_job)
        return self.stats

    async def _probe(self, client: httpx.AsyncClient, rng: random.Random) -> float:
        """Measure the miner's hash rate with a threshold-0 job, the way any node-facing miner runs one."""
        rng.getrandbits(32)  # as above: the seed's later draws stay what they were
        job_id = f"probe-{uuid.uuid4().hex[:12]}"
        await self._mine(client, job_id, chain.genesis_header(self.seed), 0)
        await trio.sleep(PROBE_S)
        body = await self._result(client, job_id)
        await self._cancel(client, job_id)
        rate = body["hash_count"] / body["elapsed_time"] if body.get("elapsed_time") else 0.0
        log.info("probe: %.0f nonces/s", rate)
        return max(rate, 1.0)

    @staticmethod
    async def _send(client: httpx.AsyncClient, method: str, path: str, **kw) -> httpx.Response:
        try:
            return await client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise Disagreement(f"{method} {path}", "an HTTP answer",
                               f"{type(exc).__name__}: {exc}".rstrip(": ")) from None

    async def _mine(self, client: httpx.AsyncClient, job_id: str, header: bytes, threshold: int) -> None:
        request = "POST /mine"
        r = await self._send(client, "POST", "/mine",
                             json=mine_body(MineRequest(job_id, header, threshold, 1, qpow.MAX_NONCE)))
        body = mining_response(r, f"{request} (job {job_id})")
        if body["status"] != "accepted":
            raise Disagreement(f"{request} (job {job_id})", 'status "accepted"', shown(r))
        self._current = job_id

    async def _cancel(self, client: httpx.AsyncClient, job_id: str) -> None:
        request = f"POST /cancel/{job_id}"
        r = await self._send(client, "POST", f"/cancel/{job_id}")
        body = mining_response(r, request)
        if body["status"] not in ("cancelled", "not_found"):  # both count as cancelled for the node
            raise Disagreement(request, 'status "cancelled" or "not_found"', shown(r))
        self.stats.cancels += 1
        if self._current == job_id:
            self._current = None

    async def _result(self, client: httpx.AsyncClient, job_id: str) -> dict:
        request = f"GET /result/{job_id}"
        return mining_result(await self._send(client, "GET", f"/result/{job_id}"), request)

    async def _poll_until_done(self, client: httpx.AsyncClient, job_id: str, network_at: float) -> dict | None:
        while True:
            wake = min(trio.current_time() + POLL_S, network_at)
            await trio.sleep_until(wake)
            if wake == network_at:
                return None
            body = await self._result(client, job_id)
            if body.get("elapsed_time"):
                self.stats.live_rate = body.get("hash_count", 0) / body["elapsed_time"]
            self.on_poll(self.stats)
            if body.get("status") != "running":
                return body

    @staticmethod
    def _verified_nonce(header: bytes, threshold: int, body: dict, request: str) -> int | None:
        """Decode `work` as the node does (hex, exactly 64 bytes; `nonce` is not read) and verify the
        seal with the reference. A `work` the node cannot decode is a disagreement; a wrong seal is
        rejected (the node does not import it and mines on)."""
        work = body.get("work")
        seal = bytes.fromhex(work) if isinstance(work, str) and _HEX128.fullmatch(work) else b""
        if len(seal) != 64:
            raise Disagreement(request, '"work": 128 hex characters (64 bytes) in a "completed" result',
                               f'"work": {work!r:.160}')
        nonce = int.from_bytes(seal, "big")
        if not qpow.is_valid(qpow.JobContext.from_header(header), nonce, threshold):
            log.error("seal rejected: nonce %x is not valid for this header and threshold", nonce)
            return None
        return nonce
