"""The miner's session logic: connect, authenticate, mine the node's jobs, report results.

Plugging in a mining engine: `on_new_job(job)` is awaited in its own trio cancel scope and
returns a JobOutcome (or None to send nothing). A NewJob replaces the current job at once:
the client cancels the previous job's scope, then starts the new one. A dropped connection
cancels the current job as well (the node will resend the current job after reconnecting).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import attrs
import trio

from ..core.quic_messages import JobInputError, JobResult, NewJob, Ready, message_type
from .transport import ALPN, ConnectError, ConnectionClosed, PinMismatch, QuicStreamConnection, connect

log = logging.getLogger("quantus_miner.quic.client")

__all__ = ["AuthFailed", "JobOutcome", "PinMismatch", "run_miner_client"]


class AuthFailed(Exception):
    """The node closed with an auth reason ("auth failed" / "auth timeout"). Permanent."""


@attrs.frozen
class JobOutcome:
    """What the mining engine reports for one job."""

    status: str = "completed"  # "completed" with a nonce; "failed"/"error"/... otherwise
    nonce: int | None = None
    hash_count: int = 0
    elapsed_time: float = 0.0


OnNewJob = Callable[[NewJob], Awaitable[JobOutcome | None]]
StatusHook = Callable[[str, dict[str, Any]], None]


class _RecentIds:
    """Bounded set of job ids already answered (one JobResult per job, across reconnects)."""

    def __init__(self, limit: int):
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._limit = limit

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._ids

    def add(self, job_id: str) -> None:
        self._ids[job_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)


@attrs.define
class _Session:
    jobs_received: int = 0
    reason: str = ""


async def run_miner_client(
    addr: tuple[str, int],
    token: str,
    pin: str,
    on_new_job: OnNewJob,
    *,
    backoff: tuple[float, float] = (1.0, 30.0),
    ping_interval: float | None = 5.0,
    idle_timeout: float = 60.0,
    handshake_timeout: float = 10.0,
    alpn: str = ALPN,
    on_status: StatusHook | None = None,
    remember_results: int = 1024,
) -> NoReturn:
    """Run forever, reconnecting with back-off; raises AuthFailed or PinMismatch (permanent).

    Back-off starts at backoff[0], doubles per failed attempt up to backoff[1], and is reset
    after a session in which the node sent at least one job (i.e. we were authenticated).
    """
    status: StatusHook = on_status or (lambda kind, info: None)
    answered = _RecentIds(remember_results)
    delay = backoff[0]
    attempt = 0
    while True:
        attempt += 1
        status("connecting", {"attempt": attempt})
        session = _Session()
        conn: QuicStreamConnection | None = None
        try:
            async with connect(addr[0], addr[1], pin_sha256=pin, alpn=alpn,
                               idle_timeout=idle_timeout, ping_interval=ping_interval,
                               handshake_timeout=handshake_timeout) as conn:
                status("connected", {"attempt": attempt})
                await conn.send(Ready(token).to_msg())  # first message, after the pin check
                await _serve_jobs(conn, on_new_job, answered, session, status)
        except PinMismatch as exc:
            log.error("%s; not retrying (wrong pin file or not our node)", exc)
            status("stopped", {"reason": str(exc)})
            raise
        except (ConnectError, ConnectionClosed, OSError) as exc:
            session.reason = str(exc)
        if conn is not None:  # we got past the handshake: why did it end?
            session.reason = _describe_end(conn)
            peer_reason = conn.peer_close_reason or ""
            if "auth" in peer_reason.lower():
                log.error("node refused authentication (%s); check the token file. Not retrying.",
                          peer_reason)
                status("stopped", {"reason": peer_reason})
                raise AuthFailed(peer_reason)

        if session.jobs_received:
            delay = backoff[0]  # a real session: start the back-off over
        status("disconnected", {"reason": session.reason, "jobs": session.jobs_received})
        log.warning("connection to node %s:%d ended (%s); reconnecting in %.3g s",
                    addr[0], addr[1], session.reason, delay)
        status("backoff", {"delay": delay})
        await trio.sleep(delay)
        delay = min(delay * 2, backoff[1])


def _describe_end(conn: QuicStreamConnection) -> str:
    if conn.frame_error is not None:
        return f"bad frame from node: {conn.frame_error}"
    if conn.peer_close_reason is not None:
        return f"closed by node: {conn.peer_close_reason!r}"
    return conn.close_reason or conn.local_close_reason or "closed"


async def _serve_jobs(conn: QuicStreamConnection, on_new_job: OnNewJob, answered: _RecentIds,
                      session: _Session, status: StatusHook) -> None:
    # Nothing in here raises (except cancellation), so no ExceptionGroup leaves the nursery.
    async with trio.open_nursery() as nursery:
        current: trio.CancelScope | None = None
        async for msg in conn:
            kind = message_type(msg)
            if kind != "NewJob":
                log.warning("ignoring unexpected %s message from node", kind)
                continue
            session.jobs_received += 1
            if current is not None:
                current.cancel()  # a new job replaces the previous one at once
                current = None
            try:
                job = NewJob.from_msg(msg)
            except JobInputError as exc:
                log.warning("%s; answering status 'failed'", exc)
                if exc.job_id is not None:
                    await _send_result(conn, JobResult("failed", exc.job_id), answered, status)
                continue
            status("job", {"job_id": job.job_id})
            current = trio.CancelScope()
            nursery.start_soon(_mine, conn, job, current, on_new_job, answered, status)
        if conn.frame_error is not None:
            log.error("closed the connection: malformed frame from node (%s)", conn.frame_error)
        nursery.cancel_scope.cancel()  # connection gone: stop mining the old job


async def _mine(conn: QuicStreamConnection, job: NewJob, scope: trio.CancelScope,
                on_new_job: OnNewJob, answered: _RecentIds, status: StatusHook) -> None:
    outcome: JobOutcome | None
    with scope:
        try:
            outcome = await on_new_job(job)
        except Exception:
            log.exception("mining engine failed on job %s", job.job_id)
            outcome = JobOutcome(status="error")
    # cancel_called, not cancelled_caught: an outcome that raced with its replacement is stale
    if scope.cancel_called or outcome is None:
        return
    result = JobResult(outcome.status, job.job_id, outcome.nonce, outcome.hash_count,
                       outcome.elapsed_time)
    await _send_result(conn, result, answered, status)


async def _send_result(conn: QuicStreamConnection, result: JobResult, answered: _RecentIds,
                       status: StatusHook) -> None:
    """Send at most one JobResult per job id; a send that fails does not count."""
    if result.job_id in answered:
        log.debug("job %s already answered; not sending again", result.job_id)
        return
    try:
        await conn.send(result.to_msg())
    except ConnectionClosed as exc:
        log.warning("could not send result for job %s: %s", result.job_id, exc)
        return
    answered.add(result.job_id)
    status("result_sent", {"job_id": result.job_id, "status": result.status})
