"""The miner's session logic: connect, authenticate, mine the node's jobs, report results.

Plugging in a mining engine: `on_new_job(job)` is awaited in its own trio cancel scope and
returns a JobOutcome (or None to send nothing). A NewJob replaces the current job at once:
the client calls `on_replaced(previous job)`, cancels the previous job's scope, then starts the new
one. A dropped connection cancels the current job as well, without `on_replaced` (the node will
resend the current job after reconnecting).
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import attrs
import trio

from ..core.job_ids import IdRule, job_id_problem
from ..core.quic_messages import FrameError, JobInputError, JobResult, NewJob, Ready, message_type, show_id
from ..core.results import Result
from .transport import ALPN, ConnectError, ConnectionClosed, PinMismatch, QuicStreamConnection, connect

log = logging.getLogger("quantus_miner.quic.client")

__all__ = ["AuthFailed", "JobOutcome", "PinMismatch", "run_miner_client"]


class AuthFailed(Exception):
    """The node closed with an auth reason ("auth failed" / "auth timeout"). Permanent."""


JobOutcome = Result  # what the mining engine reports for one job: the core result model (the id is the job's)


OnNewJob = Callable[[NewJob], Awaitable[JobOutcome | None]]
OnReplaced = Callable[[NewJob], None]  # told, before its scope is cancelled, that a newer NewJob superseded a job
StatusHook = Callable[[str, dict[str, Any]], None]


def job_key(msg: dict[str, Any]) -> str:
    """What makes a NewJob the same job: the whole message, not its id alone (the node numbers its
    jobs "1", "2", ... per process, so after a restart an old id comes back with a new header)."""
    return json.dumps(msg, sort_keys=True)


class _Answered:
    """Bounded memory of the JobResults sent, by job id and job: one answer per job, across reconnects.

    A node repeats its current job after a reconnect; when that job was already answered (the
    result may not have reached it before the connection dropped), the stored result is sent
    again, once, instead of mining the job again. Later repeats are ignored. The same id with a
    different job (a restarted node) is a new job: mined, and its answer replaces the old one.
    """

    def __init__(self, limit: int):
        # id -> [result, resent, job key]
        self._results: collections.OrderedDict[str, list] = collections.OrderedDict()
        self._limit = limit

    def repeats(self, job_id: str, key: str) -> bool:
        """Whether the job `key` under `job_id` was already answered."""
        entry = self._results.get(job_id)
        return entry is not None and entry[2] == key

    def add(self, result: JobResult, key: str) -> None:
        self._results.pop(result.job_id, None)  # newest last: the oldest answer is forgotten first
        self._results[result.job_id] = [result, False, key]
        if len(self._results) > self._limit:
            self._results.popitem(last=False)

    def take_resend(self, job_id: str) -> JobResult | None:
        """The stored result for a repeated job, the first time only (None afterwards)."""
        entry = self._results[job_id]
        if entry[1]:
            return None
        entry[1] = True
        return entry[0]


@attrs.define
class _Session:
    jobs_received: int = 0
    reason: str = ""
    warned: set[str] = attrs.Factory(set)  # kinds of bad input already logged at warning this session

    def warn(self, kind: str, msg: str, *args: Any) -> None:
        """A warning the first time per connection, debug after: a node's flood cannot flood the log."""
        level = logging.DEBUG if kind in self.warned else logging.WARNING
        self.warned.add(kind)
        log.log(level, msg, *args)


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
    on_replaced: OnReplaced | None = None,
) -> NoReturn:
    """Run forever, reconnecting with back-off; raises AuthFailed or PinMismatch (permanent).

    Back-off starts at backoff[0], doubles per failed attempt up to backoff[1], and is reset
    after a session in which the node sent at least one job (i.e. we were authenticated).
    """
    status: StatusHook = on_status or (lambda kind, info: None)
    answered = _Answered(remember_results)
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
                await _serve_jobs(conn, on_new_job, answered, session, status, on_replaced or (lambda job: None))
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
                          _printable(peer_reason))
                status("stopped", {"reason": peer_reason})
                raise AuthFailed(peer_reason)

        if session.jobs_received:
            delay = backoff[0]  # a real session: start the back-off over
        status("disconnected", {"reason": session.reason, "jobs": session.jobs_received})
        log.warning("connection to node %s:%d ended (%s); reconnecting in %.3g s",
                    addr[0], addr[1], _printable(session.reason), delay)
        status("backoff", {"delay": delay})
        await trio.sleep(delay)
        delay = min(delay * 2, backoff[1])


def _describe_end(conn: QuicStreamConnection) -> str:
    if conn.frame_error is not None:
        return f"bad frame from node: {conn.frame_error}"
    if conn.peer_close_reason is not None:
        return f"closed by node: {conn.peer_close_reason!r}"
    return conn.close_reason or conn.local_close_reason or "closed"


def _printable(text: str, limit: int = 200) -> str:
    """Text from the node (close reasons) with control characters escaped, for one log line."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


async def _serve_jobs(conn: QuicStreamConnection, on_new_job: OnNewJob, answered: _Answered,
                      session: _Session, status: StatusHook, on_replaced: OnReplaced) -> None:
    """Handle the node's messages until the connection ends.

    Nothing a node sends ends the process from here: every job id is either mined and answered,
    answered `failed`, re-answered from memory, or skipped with one warning (see docs/quic.md).
    Nothing in here raises (except cancellation), so no ExceptionGroup leaves the nursery.
    """
    async with trio.open_nursery() as nursery:
        current: tuple[trio.CancelScope, NewJob] | None = None
        async for msg in conn:
            kind = message_type(msg)
            if kind != "NewJob":
                session.warn(kind, "ignoring unexpected %s message(s) from node", kind)
                continue
            session.jobs_received += 1
            if current is not None:  # a new job replaces the previous one at once
                on_replaced(current[1])  # first: the job ends as replaced, not as a lost connection
                current[0].cancel()
                current = None
            try:
                job = NewJob.from_msg(msg)
            except JobInputError as exc:
                if exc.job_id is None:
                    session.warn("no id", "%s; not answered (no job id to echo)", exc)
                elif (why := job_id_problem(exc.job_id, IdRule.QUIC)) is not None:
                    session.warn(why, "%s; not answered: %s", exc, why)
                elif answered.repeats(exc.job_id, key := job_key(msg)):
                    await _answer_repeat(conn, exc.job_id, answered, status)
                else:
                    session.warn(exc.reason, "%s; answering status 'failed'", exc)
                    await _send_result(conn, JobResult("failed", exc.job_id), key, answered, status)
                continue
            if (why := job_id_problem(job.job_id, IdRule.QUIC)) is not None:
                session.warn(why, "skipping job %s: %s, and the node only accepts a result under its own id",
                             show_id(job.job_id), why)
                status("job_skipped", {"job_id": job.job_id, "reason": why})
                continue
            if answered.repeats(job.job_id, key := job_key(msg)):
                await _answer_repeat(conn, job.job_id, answered, status)
                continue
            status("job", {"job_id": job.job_id})
            current = (trio.CancelScope(), job)
            nursery.start_soon(_mine, conn, job, key, current[0], on_new_job, answered, status)
        if conn.frame_error is not None:
            log.error("closed the connection: malformed frame from node (%s)", conn.frame_error)
        nursery.cancel_scope.cancel()  # connection gone: stop mining the old job


async def _answer_repeat(conn: QuicStreamConnection, job_id: str, answered: _Answered,
                         status: StatusHook) -> None:
    """A job already answered: re-send its stored result once (it may have been lost), then ignore it."""
    stored = answered.take_resend(job_id)
    if stored is None:
        log.info("job %s repeated again; its result was already sent twice, ignoring", show_id(job_id))
        status("job_repeat_ignored", {"job_id": job_id})
        return
    log.info("job %s repeated by the node; sending its stored result again instead of mining it",
             show_id(job_id))
    await _send_result(conn, stored, "", answered, status, resend=True)


async def _mine(conn: QuicStreamConnection, job: NewJob, key: str, scope: trio.CancelScope,
                on_new_job: OnNewJob, answered: _Answered, status: StatusHook) -> None:
    outcome: JobOutcome | None
    with scope:
        try:
            outcome = await on_new_job(job)
        except Exception:
            log.exception("mining engine failed on job %s", show_id(job.job_id))
            outcome = JobOutcome(status="error")
    # cancel_called, not cancelled_caught: an outcome that raced with its replacement is stale
    if scope.cancel_called or outcome is None:
        return
    result = JobResult(outcome.status, job.job_id, outcome.nonce, outcome.hash_count,
                       outcome.elapsed_time)
    await _send_result(conn, result, key, answered, status)


async def _send_result(conn: QuicStreamConnection, result: JobResult, key: str, answered: _Answered,
                       status: StatusHook, *, resend: bool = False) -> None:
    """Send at most one JobResult per job (plus one re-send); a send that fails does not count."""
    if not resend and answered.repeats(result.job_id, key):
        log.debug("job %s already answered; not sending again", show_id(result.job_id))
        return
    try:
        await conn.send(result.to_msg())
    except ConnectionClosed as exc:
        log.warning("could not send result for job %s: %s", show_id(result.job_id), exc)
        return
    except FrameError as exc:  # checked before mining; kept so no id can ever end the process
        log.warning("could not send result for job %s: %s", show_id(result.job_id), exc)
        return
    if not resend:
        answered.add(result, key)
    status("result_sent", {"job_id": result.job_id, "status": result.status, "resend": resend})
