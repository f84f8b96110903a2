"""Job state: the job state machine, per-worker progress and rates, and the job table (sans-I/O).

All mutation happens on the trio thread; worker threads only produce `Progress` values.
A job's `snapshot()` feeds both the JSON API and the metrics, so the two cannot disagree.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs
import numpy as np

from .engines import Found, new_cancel_flag
from .mine_request import MineRequest
from .rates import ema, instant_rate

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (RUNNING, COMPLETED, FAILED, CANCELLED)
END_STATUSES = (COMPLETED, FAILED, CANCELLED)


@attrs.frozen
class Progress:
    """One worker's report after one chunk (found or not)."""

    job_id: str
    worker: int
    tested: int
    t: float  # monotonic time the chunk ended, taken in the worker
    busy_s: float = 0.0  # time the chunk ran in its thread
    found: Found | None = None
    finished: bool = False  # the worker exhausted its part of the range
    error: str | None = None


@attrs.frozen
class WorkerSnapshot:
    worker: int
    hashes: int
    rate: float | None  # EMA of the worker's delta rate; None before its first report
    reports: int
    finished: bool
    first_report_at: float | None
    last_report_at: float | None


@attrs.frozen
class JobSnapshot:
    job_id: str
    engine: str
    status: str
    nonce: int | None
    distance: int | None
    hash_count: int
    elapsed_time: float
    rate: float  # sum of live worker EMAs while running, 0 once ended
    workers: tuple[WorkerSnapshot, ...]
    reason: str | None


@attrs.define
class WorkerState:
    hashes: int = 0
    rate: float | None = None
    reports: int = 0
    finished: bool = False
    first_report_at: float | None = None
    last_report_at: float | None = None


@attrs.define
class Job:
    request: MineRequest
    engine: str
    started_at: float
    workers: list[WorkerState]
    status: str = RUNNING
    hash_count: int = 0
    ended_at: float | None = None
    found: Found | None = None
    reason: str | None = None
    flag: np.ndarray = attrs.field(factory=new_cancel_flag)
    cancel_scope: Any = None  # the trio shell's per-job scope
    settled: Any = None  # the trio shell's event: set once every worker of the job has returned

    @property
    def job_id(self) -> str:
        return self.request.job_id

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def apply(self, p: Progress, alpha: float) -> int:
        """Apply one report to a running job; return the nonces counted (0 once the job ended)."""
        if not self.running:
            return 0  # a chunk that raced the end: hash_count stays frozen with the status
        w = self.workers[p.worker]
        since = w.last_report_at if w.last_report_at is not None else self.started_at
        w.rate = ema(w.rate, instant_rate(p.tested, p.t - since), alpha)
        w.hashes += p.tested
        w.reports += 1
        w.first_report_at = p.t if w.first_report_at is None else w.first_report_at
        w.last_report_at = p.t
        self.hash_count += p.tested
        if p.error is not None:
            self.end(FAILED, p.t, reason=p.error)
        elif p.found is not None:
            self.found = p.found
            self.end(COMPLETED, p.t)
        elif p.finished:
            w.finished = True
            if all(x.finished for x in self.workers):
                self.end(FAILED, p.t, reason="range exhausted")
        return p.tested

    def end(self, status: str, now: float, reason: str | None = None) -> None:
        if status not in END_STATUSES:
            raise ValueError(f"cannot end a job as {status!r}")
        if not self.running:
            raise ValueError(f"job {self.job_id} already ended as {self.status}")
        self.status = status
        self.ended_at = now
        self.reason = reason
        self.flag[0] = 1  # stops this job's kernels within milliseconds

    def snapshot(self, now: float) -> JobSnapshot:
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
        )


class DuplicateJob(ValueError):
    pass


@attrs.define
class JobTable:
    """Running jobs and finished jobs retained for `retention_s` after they *ended* (at most `max_finished`)."""

    retention_s: float
    max_finished: int
    _jobs: dict[str, Job] = attrs.field(factory=dict)
    _finished: OrderedDict[str, float] = attrs.field(factory=OrderedDict)  # job_id -> ended_at, oldest first

    def add(self, job: Job) -> None:
        if job.job_id in self._jobs:
            raise DuplicateJob(f"job {job.job_id} already exists")
        self._jobs[job.job_id] = job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def __iter__(self):
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    def running(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.running]

    def ended(self, job: Job) -> list[Job]:
        """Record that `job` ended; return jobs forgotten to keep at most `max_finished`."""
        self._finished[job.job_id] = job.ended_at
        forgotten = []
        while len(self._finished) > self.max_finished:
            job_id, _ = self._finished.popitem(last=False)
            forgotten.append(self._jobs.pop(job_id))
        return forgotten

    def expire(self, now: float) -> list[Job]:
        """Forget finished jobs that ended more than `retention_s` ago; running jobs are never dropped."""
        forgotten = []
        while self._finished:
            job_id, ended_at = next(iter(self._finished.items()))
            if now - ended_at < self.retention_s:
                break
            del self._finished[job_id]
            forgotten.append(self._jobs.pop(job_id))
        return forgotten
