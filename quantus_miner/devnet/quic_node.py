"""A QUIC node simulator speaking the 2026 miner protocol (server side), for tests and the devnet.

Behaves like `quantus-node --miner-listen-port` (chain v0.10.0): self-signed "localhost"
certificate, pin and token files, token auth with a timeout, 1024-byte frame limit (transport),
the current job sent right after auth and every new job broadcast, first valid seal wins, stale
and non-completed results ignored, the zero nonce refused. Seals are re-verified with the real
QPoW v2 check (`core.qpow2.is_valid`) unless a test passes another `verify`.
It records what it saw so tests can assert e.g. that a token was never sent.
`mine_chain` drives it as a small chain: a new job per block, difficulty adjusted to a block time.
"""

from __future__ import annotations

import collections
import hmac
import itertools
import logging
import math
import os
import secrets
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from ..core import qpow2
from ..core.quic_messages import JobResult, NewJob, message_type, show_id
from ..quic import tls
from . import chain
from ..quic.server import ServerStats, serve
from ..quic.transport import ALPN, ConnectionClosed, QuicStreamConnection

log = logging.getLogger("quantus_miner.devnet.quic_node")

MAX_RECORDS = 1000  # verdicts and seals kept (the simulator runs for hours in a devnet)
MAX_ENDED = 100  # connection records kept once ended (reconnects must not grow the table)

Verify = Callable[[bytes, int, int], bool]


def verify_seal(header: bytes, nonce: int, difficulty: int) -> bool:
    """The node's seal check: QPoW v2 (hash of header || nonce < (2^512 - 1) // difficulty)."""
    return qpow2.is_valid(header, nonce, difficulty)


@attrs.define
class MinerRecord:
    """One accepted QUIC connection, as the node saw it."""

    id: int
    conn: QuicStreamConnection = attrs.field(repr=False)
    authed: bool = False
    first_message: dict[str, Any] | None = None
    tokens_seen: list[str] = attrs.Factory(list)
    jobs_sent: list[str] = attrs.Factory(list)
    results: list[JobResult] = attrs.Factory(list)
    close_reason: str | None = None  # why the node closed it, if it did
    ended: bool = False
    end_reason: str | None = None  # the miner's close reason / timeout, when ended


@attrs.frozen
class Verdict:
    """How the simulated node judged one message of a miner."""
    miner_id: int
    job_id: str | None
    verdict: str  # accepted | late | stale | ignored | invalid | unexpected | dropped
    reason: str = ""


class NodeDrop(Exception):
    """A JobResult the node's serde parse refuses: its read loop ends and the miner is disconnected."""


U64_MAX = (1 << 64) - 1
_STATUSES = ("accepted", "running", "completed", "failed", "cancelled", "not_found", "error")


def parse_result_as_node(body: Any) -> tuple[str, str, str | None, int, float]:
    """(status, job_id, work, hash_count, elapsed_time) as serde reads `MiningResult`; raise NodeDrop.

    Mirrors quantus-miner-api's `MiningResult`: `status` one of the snake_case variants, `job_id` a
    string, `nonce` and `work` optional strings (null or absent is None; `nonce` is never used),
    `hash_count` a u64, `elapsed_time` an f64 (an integer is fine), `miner_id` an optional u64
    (overwritten by the node); unknown fields are ignored. Anything else fails to deserialize.
    """
    if not isinstance(body, dict):
        raise NodeDrop("JobResult is not an object")

    def field(name: str, ok: Callable[[Any], bool], what: str, optional: bool = False) -> Any:
        if name not in body:
            if optional:
                return None
            raise NodeDrop(f"missing field `{name}`")
        value = body[name]
        if optional and value is None:
            return None
        if not ok(value):
            raise NodeDrop(f"`{name}` must be {what}")
        return value

    def u64(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= U64_MAX

    status = field("status", lambda v: v in _STATUSES, "a known status")
    job_id = field("job_id", lambda v: isinstance(v, str), "a string")
    field("nonce", lambda v: isinstance(v, str), "a string or null", optional=True)
    work = field("work", lambda v: isinstance(v, str), "a string or null", optional=True)
    hash_count = field("hash_count", u64, "an unsigned 64-bit integer")
    elapsed = field("elapsed_time", _finite_number, "a number")
    field("miner_id", u64, "an unsigned 64-bit integer or null", optional=True)
    return status, job_id, work, hash_count, float(elapsed)


def _finite_number(v: object) -> bool:
    """serde's f64: a JSON number that fits (an integer literal such as 1e400 written out does not)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def seal_of(work: str | None) -> tuple[int | None, str]:
    """`parse_mining_result`'s seal: `work` hex-decoded to exactly 64 bytes (either case), else why not."""
    if work is None:
        return None, "no work"
    if len(work) % 2 or not all(c in "0123456789abcdefABCDEF" for c in work):
        return None, "work is not hex"
    if len(work) != 128:
        return None, f"work decodes to {len(work) // 2} bytes, not 64"
    return int(work, 16), ""


class NodeSim:
    """A simulated 2026 node's miner server (not our part: it fakes the node, over real QUIC on UDP)."""
    def __init__(
        self,
        verify: Verify = verify_seal,
        *,
        token: str | None = None,
        cert=None,
        key=None,
        auth_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        max_connections: int = 64,
        alpn: str = ALPN,
    ):
        if cert is None:
            cert, key = tls.make_self_signed("localhost")
        self.cert, self.key = cert, key
        self.pin = tls.cert_sha256(cert)
        self.token = token if token is not None else secrets.token_hex(32)
        self.verify = verify
        self.auth_timeout = auth_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.alpn = alpn
        self.port: int | None = None

        self.stats = ServerStats(notify=self._changed)
        self.miners: list[MinerRecord] = []
        self.verdicts: collections.deque[Verdict] = collections.deque(maxlen=MAX_RECORDS)
        self.seals: dict[str, tuple[int, int]] = {}  # job_id -> (nonce, miner_id), first wins
        self.accepted: dict[str, JobResult] = {}  # job_id -> the winning result (bounded by jobs set)
        self.current_job: NewJob | None = None
        self.rejected = 0  # invalid seals and dropped messages (the devnet summary)
        self._job_msg: dict[str, Any] | None = None
        self._job_version = 0
        self._ids = itertools.count(1)
        self._change = trio.Event()

    # --- control ---------------------------------------------------------------------

    def write_files(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write `miner-tls-cert-sha256` and `miner-auth-token` like the node does."""
        d = Path(directory)
        pin_path, token_path = d / "miner-tls-cert-sha256", d / "miner-auth-token"
        tls.write_pin_file(pin_path, self.cert)
        tls.write_token_file(token_path, self.token)
        return pin_path, token_path

    def set_job(self, job: NewJob) -> None:
        """Make `job` current and broadcast it to every authenticated miner."""
        self._set_job_msg(job.to_msg(), job)

    def set_job_msg(self, msg: dict[str, Any]) -> None:
        """Broadcast an arbitrary (possibly invalid) NewJob message; no result can win it."""
        self._set_job_msg(msg, None)

    def _set_job_msg(self, msg: dict[str, Any], job: NewJob | None) -> None:
        self._job_msg, self.current_job = msg, job
        self._job_version += 1
        self._changed()

    @property
    def current_job_id(self) -> str | None:
        """The id of the job the node sends now, or None."""
        body = (self._job_msg or {}).get("NewJob") or {}
        return body.get("job_id")

    def send_raw_to_all(self, data: bytes) -> None:
        """Misbehave: write raw stream bytes to every live authenticated miner."""
        for rec in self.miners:
            if rec.authed and not rec.ended:
                rec.conn.send_raw(data)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait (no polling) until predicate() holds; re-checked after every state change."""
        while not predicate():
            await self._change.wait()

    def _changed(self) -> None:
        self._change.set()
        self._change = trio.Event()

    # --- server ----------------------------------------------------------------------

    async def run(self, host: str = "127.0.0.1", port: int = 0, *,
                  task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve miners on `host`:`port` (0: any); `nursery.start` hands back the port."""
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(partial(
                serve, host, port, cert=self.cert, key=self.key, alpn=self.alpn,
                handler=self._handle, idle_timeout=self.idle_timeout,
                max_connections=self.max_connections, stats=self.stats))
            task_status.started(self.port)

    async def _handle(self, conn: QuicStreamConnection) -> None:
        rec = MinerRecord(next(self._ids), conn)
        self.miners.append(rec)
        self._changed()
        try:
            if await self._authenticate(conn, rec):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._push_jobs, conn, rec)
                    async for msg in conn:
                        self._on_message(rec, msg)
                    nursery.cancel_scope.cancel()
        except ConnectionClosed:
            pass
        finally:
            rec.ended = True
            rec.end_reason = conn.peer_close_reason or conn.close_reason or conn.local_close_reason
            ended = [r for r in self.miners if r.ended]
            if len(ended) > MAX_ENDED:
                gone = {r.id for r in ended[:-MAX_ENDED]}
                self.miners = [r for r in self.miners if r.id not in gone]
            self._changed()

    async def _authenticate(self, conn: QuicStreamConnection, rec: MinerRecord) -> bool:
        with trio.move_on_after(self.auth_timeout):
            first = await conn.receive()
            rec.first_message = first
            body = first.get("Ready") if message_type(first) == "Ready" else None
            token = body.get("token") if isinstance(body, dict) else None
            if isinstance(token, str):
                rec.tokens_seen.append(token)
            # the node trims whitespace and compares in constant time
            if isinstance(token, str) and hmac.compare_digest(
                token.strip().encode(), self.token.encode()
            ):
                rec.authed = True
                self._changed()
                return True
            rec.close_reason = "auth failed"
            conn.close("auth failed")
            self._changed()
            return False
        rec.close_reason = "auth timeout"
        conn.close("auth timeout")
        self._changed()
        return False

    async def _push_jobs(self, conn: QuicStreamConnection, rec: MinerRecord) -> None:
        sent_version = 0
        try:
            while True:
                change = self._change  # captured before the check: no lost wake-ups
                if self._job_msg is not None and sent_version != self._job_version:
                    sent_version = self._job_version
                    await conn.send(self._job_msg)
                    rec.jobs_sent.append(str(self.current_job_id))
                    del rec.jobs_sent[:-MAX_RECORDS]
                    self._changed()
                    continue
                await change.wait()
        except ConnectionClosed:
            pass

    def _on_message(self, rec: MinerRecord, msg: dict[str, Any]) -> None:
        try:
            verdict, job_id, reason = self._judge(rec, msg)
        except NodeDrop as exc:  # the node's read loop ends on a message it cannot deserialize
            verdict, job_id, reason = "dropped", None, str(exc)
            rec.close_reason = f"invalid message: {exc}"
            rec.conn.close("")  # the node drops its handles: the miner sees a close without a reason
        log.debug("miner %d result for job %s: %s%s", rec.id, show_id(job_id), verdict,
                  f" ({reason})" if reason else "")
        self.verdicts.append(Verdict(rec.id, job_id, verdict, reason))
        if verdict in ("invalid", "dropped"):
            self.rejected += 1
        self._changed()

    def _judge(self, rec: MinerRecord, msg: dict[str, Any]) -> tuple[str, str | None, str]:
        """Judge a message as `miner_server.rs` and `service.rs::parse_mining_result` do."""
        kind = message_type(msg)
        if kind != "JobResult":  # Ready again or NewJob: logged and ignored, if they deserialize
            fields = ("token",) if kind == "Ready" else ("job_id", "mining_hash", "difficulty")
            if not all(isinstance(msg[kind].get(f), str) for f in fields):
                raise NodeDrop(f"{kind} without string field(s) {', '.join(fields)}")
            return "unexpected", None, kind
        status, job_id, work, hash_count, elapsed = parse_result_as_node(msg["JobResult"])
        nonce, why = seal_of(work)
        rec.results.append(JobResult(status, job_id, nonce, hash_count, elapsed))
        del rec.results[:-MAX_RECORDS]
        job = self.current_job
        if job_id != self.current_job_id:
            return "stale", job_id, ""
        if status != "completed":
            return "ignored", job_id, status
        if nonce is None:
            return "invalid", job_id, why
        if job is None:
            return "invalid", job_id, "not a valid job"
        if nonce == 0:
            return "invalid", job_id, "zero nonce"
        if job.job_id in self.seals:
            return "late", job_id, ""
        if not self.verify(job.mining_hash, nonce, job.difficulty):
            return "invalid", job_id, "seal does not meet the difficulty"
        self.seals[job.job_id] = (nonce, rec.id)
        self.accepted[job.job_id] = rec.results[-1]
        for table in (self.seals, self.accepted):  # an endless devnet keeps the recent ones only
            while len(table) > MAX_RECORDS:
                del table[next(iter(table))]
        return "accepted", job_id, ""


@attrs.frozen
class ChainBlock:
    """One block of `mine_chain`, as `devnet --network 2026 --json` prints it."""

    height: int
    header: bytes
    difficulty: int
    result: JobResult
    block_time: float

    def to_json(self) -> dict[str, Any]:
        """The block as one JSON line of `devnet --json`."""
        nonce = self.result.nonce
        return {"height": self.height, "header": self.header.hex(), "difficulty": str(self.difficulty),
                "nonce": format(nonce, "x"), "work": nonce.to_bytes(64, "big").hex(),
                "hash": qpow2.pow_hash(self.header, nonce).to_bytes(64, "big").hex(),
                "hash_count": self.result.hash_count, "elapsed_time": self.result.elapsed_time,
                "block_time": self.block_time}


def adjust_difficulty(difficulty: int, actual_s: float, target_s: float) -> int:
    """Scale the difficulty by target/actual block time, at most x2 or /2 per block, never below 1.

    >>> adjust_difficulty(1000, actual_s=20.0, target_s=10.0)  # slow block: easier
    500
    """
    ratio = min(chain.MAX_STEP, max(1 / chain.MAX_STEP, target_s / actual_s if actual_s > 0 else chain.MAX_STEP))
    return max(1, round(difficulty * ratio))


async def mine_chain(sim: NodeSim, *, blocks: int | None, difficulty: int, block_time: float, seed: int = 0,
                     on_block: Callable[[ChainBlock], None] = lambda b: None) -> list[ChainBlock]:
    """Hand out one job per block until `blocks` seals were accepted (each re-verified by the sim)."""
    mined: list[ChainBlock] = []
    header = chain.genesis_header(seed)
    height = 0
    clock = trio.current_time
    while blocks is None or height < blocks:
        height += 1
        header = chain.next_header(header, height, 0)
        job_id = str(height)
        t0 = clock()
        sim.set_job(NewJob(job_id, header, difficulty))
        await sim.wait_for(lambda: job_id in sim.accepted)
        block = ChainBlock(height, header, difficulty, sim.accepted[job_id], clock() - t0)
        mined.append(block)
        on_block(block)
        difficulty = adjust_difficulty(difficulty, block.block_time, block_time)
    return mined
