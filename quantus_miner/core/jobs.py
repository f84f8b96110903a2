"""The job state machine and the job table (sans-I/O).

A job is `running` until exactly one transition ends it, with a typed cause (`Ending`): found
(`completed`), exhausted or failed(reason) (`failed`), cancelled, replaced or shutdown (`cancelled`). The
core decides every ending: `Job.apply` turns reports into one, `Ending` maps it to status and
reason, `JobTable.end` is the transition; the shell only reports events and does the side effects.
Executors only produce `Progress` values, addressed by the job's serial (a job id may be
reused once forgotten; a serial never is); everything here runs on one thread.
A job's `snapshot()` feeds both the JSON API and the metrics, so the two cannot disagree.

>>> from quantus_miner.core.requests import MineRequest
>>> table = JobTable(retention_s=300, max_finished=10)
>>> job = table.add(MineRequest("a", bytes(32), 0, 1, 10), "cpu-fast", workers=1, now=0.0)
>>> counted, ending = job.apply(Progress(0, 0, tested=10, t=1.0, finished=True), alpha=0.2)
>>> counted, ending.status, ending.reason
(10, <JobStatus.FAILED: 'failed'>, 'range exhausted')
>>> table.end(job, ending, now=1.0)
[]
>>> job.snapshot(now=5.0).elapsed_time, len(table.expire(now=302.0))
(1.0, 1)
"""

from __future__ import annotations

import enum
import itertools
from collections import OrderedDict

import attrs

from .outcomes import Found
from .rates import ema, instant_rate
from .requests import DuplicateJob, MineRequest


class JobStatus(enum.StrEnum):
    """A job's status as /result and the metrics show it."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES = tuple(JobStatus)
END_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
RANGE_EXHAUSTED = "range exhausted"


class Cause(enum.Enum):
    """Why a job ended."""

    FOUND = "found"  # a valid nonce (re-verified)
    EXHAUSTED = "exhausted"  # every nonce of the range tested, none valid
    CANCELLED = "cancelled"  # by the node (HTTP /cancel, a QUIC connection gone) or a user
    REPLACED = "replaced"  # a QUIC job superseded by the node's next NewJob
    SHUTDOWN = "shutdown"  # the miner stops
    FAILED = "failed"  # a fault: an engine crashed, the cluster's scheduler was lost (the detail says)


STATUS_OF = {Cause.FOUND: JobStatus.COMPLETED, Cause.EXHAUSTED: JobStatus.FAILED, Cause.FAILED: JobStatus.FAILED,
             Cause.CANCELLED: JobStatus.CANCELLED, Cause.REPLACED: JobStatus.CANCELLED, Cause.SHUTDOWN: JobStatus.CANCELLED}
REASON_OF = {Cause.EXHAUSTED: RANGE_EXHAUSTED, Cause.SHUTDOWN: "shutdown", Cause.REPLACED: "replaced by a newer job"}


@attrs.frozen
class Ending:
    """A job's ending: its cause, and for a failure the reason.

    >>> Ending(Cause.SHUTDOWN).status, Ending(Cause.SHUTDOWN).reason, Ending.failed("boom").reason
    (<JobStatus.CANCELLED: 'cancelled'>, 'shutdown', 'boom')
    """

    cause: Cause
    detail: str | None = None

    @classmethod
    def failed(cls, reason: str) -> Ending:
        """A fault's ending, `reason` saying what went wrong."""
        return cls(Cause.FAILED, reason)

    @property
    def status(self) -> JobStatus:
        """The end status this cause gives."""
        return STATUS_OF[self.cause]

    @property
    def reason(self) -> str | None:
        """The reason shown for the ending (the cause's own, else the detail)."""
        return REASON_OF.get(self.cause, self.detail)


@attrs.frozen
class Progress:
    """One slot's report after one chunk (found or not), addressed by the job's serial."""

    serial: int  # the runtime's number for the job: a late report never lands on a reused job id
    worker: int  # the slot's index in the job (slots may join while the job runs)
    tested: int
    t: float  # monotonic time the chunk ended, taken in the worker
    busy_s: float = 0.0  # time the chunk ran in its thread
    found: Found | None = None
    finished: bool = False  # the slot sends no more (no nonces left to take, or its cluster worker left)
    error: str | None = None
    settled: bool = False  # sent by the runtime after every slot returned: nothing more comes for the job


@attrs.frozen
class WorkerSnapshot:
    """One slot's figures in a `JobSnapshot`."""

    worker: int
    hashes: int
    rate: float | None  # EMA of the worker's delta rate; None before its first report
    reports: int
    finished: bool
    first_report_at: float | None
    last_report_at: float | None


@attrs.frozen
class JobSnapshot:
    """A job as of one moment: what /result, the QUIC result and the metrics are built from."""

    job_id: str
    engine: str
    status: JobStatus
    nonce: int | None
    distance: int | None
    hash_count: int
    elapsed_time: float
    rate: float  # sum of live worker EMAs while running, 0 once ended
    workers: tuple[WorkerSnapshot, ...]
    reason: str | None
    cause: Cause | None = None  # why it ended; None while running


@attrs.define
class WorkerState:
    """One slot's running figures inside a `Job`."""

    hashes: int = 0
    rate: float | None = None
    reports: int = 0
    finished: bool = False
    first_report_at: float | None = None
    last_report_at: float | None = None


@attrs.define
class Job:
    """One job: its request, status, exact count and per-slot rates (changed only by `apply` and `JobTable.end`)."""

    request: MineRequest
    engine: str
    started_at: float
    workers: list[WorkerState]
    status: JobStatus = JobStatus.RUNNING
    hash_count: int = 0
    ended_at: float | None = None
    found: Found | None = None
    reason: str | None = None
    cause: Cause | None = None

    @property
    def job_id(self) -> str:
        """The id the job was submitted under."""
        return self.request.job_id

    @property
    def running(self) -> bool:
        """Whether the job has not ended yet."""
        return self.status is JobStatus.RUNNING

    @property
    def size(self) -> int:
        """Nonces in the job's inclusive range: `hash_count` reaches it exactly when the range is exhausted."""
        return self.request.nonce_end - self.request.nonce_start + 1

    def apply(self, p: Progress, alpha: float) -> tuple[int, Ending | None]:
        """Count one report; return (nonces counted, the ending it calls for or None).

        A report that raced the job's end counts nothing: hash_count froze with the status.
        """
        if not self.running:
            return 0, None
        if p.settled:  # every slot returned, yet neither a find nor the whole range was counted: an engine bug
            return 0, Ending.failed(f"nonce count mismatch: {self.hash_count} of {self.size} tested")
        while p.worker >= len(self.workers):  # a slot that joined mid-job (bounded by the executor's slots)
            self.workers.append(WorkerState())
        w = self.workers[p.worker]
        since = w.last_report_at if w.last_report_at is not None else self.started_at
        w.rate = ema(w.rate, instant_rate(p.tested, p.t - since), alpha)
        w.hashes += p.tested
        w.reports += 1
        w.first_report_at = p.t if w.first_report_at is None else w.first_report_at
        w.last_report_at = p.t
        self.hash_count += p.tested
        if p.error is not None:
            return p.tested, Ending.failed(p.error)
        if p.found is not None:
            self.found = p.found
            return p.tested, Ending(Cause.FOUND)
        if p.finished:
            w.finished = True  # no live rate from here
        if self.hash_count >= self.size:  # counts are exact: every nonce of the range was tested once
            return p.tested, Ending(Cause.EXHAUSTED)
        return p.tested, None

    def snapshot(self, now: float) -> JobSnapshot:
        """The job as of `now` (frozen at its end once it ended)."""
        end = self.ended_at if self.ended_at is not None else now
        workers = tuple(
            WorkerSnapshot(i, w.hashes, w.rate, w.reports, w.finished, w.first_report_at, w.last_report_at)
            for i, w in enumerate(self.workers)
        )
        rate = sum(w.rate for w in self.workers if w.rate is not None and not w.finished) if self.running else 0.0
        return JobSnapshot(
            job_id=self.job_id,
            engine=self.engine,
            status=self.status,
            nonce=self.found.nonce if self.found else None,
            distance=self.found.distance if self.found else None,
            hash_count=self.hash_count,
            elapsed_time=max(0.0, end - self.started_at),
            rate=rate,
            workers=workers,
            reason=self.reason,
            cause=self.cause,
        )


@attrs.define
class JobTable:
    """Running jobs, and finished jobs kept for `retention_s` after they *ended* (at most `max_finished`).

    Running jobs are never dropped.
    """

    retention_s: float
    max_finished: int
    _jobs: dict[str, Job] = attrs.field(factory=dict)
    _finished: OrderedDict[str, float] = attrs.field(factory=OrderedDict)  # job_id -> ended_at, oldest first

    def add(self, request: MineRequest, engine: str, workers: int, now: float) -> Job:
        """Add a running job; raise DuplicateJob if the id is held (running or retained)."""
        if request.job_id in self._jobs:
            raise DuplicateJob(f"job {request.job_id} already exists", request.job_id)
        job = Job(request, engine, now, [WorkerState() for _ in range(workers)])
        self._jobs[job.job_id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        """The job under `job_id` (running or retained), or None."""
        return self._jobs.get(job_id)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def __iter__(self):
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    def running(self) -> list[Job]:
        """The jobs not yet ended."""
        return [j for j in self._jobs.values() if j.running]

    def recent(self, finished: int) -> list[Job]:
        """Running jobs plus the `finished` most recently ended ones (what the metrics expose)."""
        ended = list(itertools.islice(reversed(self._finished), finished)) if finished > 0 else []
        return self.running() + [self._jobs[job_id] for job_id in reversed(ended)]

    def end(self, job: Job, ending: Ending, now: float) -> list[Job]:
        """The one transition out of `running`; return jobs forgotten to keep at most `max_finished`."""
        if not job.running:
            raise ValueError(f"job {job.job_id} already ended as {job.status}")
        job.status = ending.status
        job.ended_at = now
        job.reason = ending.reason
        job.cause = ending.cause
        self._finished[job.job_id] = now
        forgotten = []
        while len(self._finished) > self.max_finished:
            job_id, _ = self._finished.popitem(last=False)
            forgotten.append(self._jobs.pop(job_id))
        return forgotten

    def expire(self, now: float) -> list[Job]:
        """Forget finished jobs that ended `retention_s` or more ago."""
        forgotten = []
        while self._finished:
            job_id, ended_at = next(iter(self._finished.items()))
            if now - ended_at < self.retention_s:
                break
            del self._finished[job_id]
            forgotten.append(self._jobs.pop(job_id))
        return forgotten
