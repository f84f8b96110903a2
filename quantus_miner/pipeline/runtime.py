"""The trio shell around the job core: a task per job, one progress actor, no Prometheus.

Each job runs in its own task; where its chunks run is the executor's business (`executor.Executor`:
`local.LocalExecutor` by default, `cluster.executor.ClusterExecutor` on Dask). Executors send a
`Progress` per chunk, addressed by the job's serial, into one memory channel; the actor task alone
applies progress to jobs, and the core (`Job.apply`, `JobTable.end`) decides every ending. The
runtime exposes its state (`statistics`, `snapshots`); the metrics layer reads it at scrape time.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import time

import attrs
import numpy as np
import trio

from ..core.config import ServiceConfig
from ..core.jobs import Cause, Ending, Job, JobSnapshot, JobStatus, JobTable, Progress
from ..core.partition import Frontier
from ..core.requests import MineRequest, TooManyJobs
from ..engines.base import Engine
from .executor import Executor, JobFeed
from .local import LocalExecutor

log = logging.getLogger("quantus_miner")


@attrs.frozen
class RuntimeStatistics:
    """What the runtime has done since start (the metrics, /health and the speed line read it)."""

    engine: str
    kernel: str
    cores: int
    active_jobs: int
    retained_jobs: int
    hashes: int  # nonces tested since start, all jobs (the speed line's running total)
    jobs_completed: int  # jobs that found a nonce since start
    jobs_ended: int  # jobs that ended since start, any status
    cluster: dict | None = None  # cluster mode: scheduler, connected, workers, threads
    ended: dict = attrs.field(factory=dict)  # (engine, end status) -> jobs, since start
    started_at: float = 0.0  # wall-clock time.time() the runtime was made (counters' `_created`)
    device: str | None = None  # a GPU engine: its devices in words
    devices: int = 0  # a GPU engine: its devices in use (one slot each)
    beside: dict | None = None  # CPU threads mining beside a GPU engine's devices: engine, kernel, threads


@attrs.define
class JobShell:
    """What the trio shell keeps beside a core `Job` while its executor runs it."""

    feed: JobFeed  # the executor's view: serial, cursor, cancel flag
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    settled: trio.Event = attrs.field(factory=trio.Event)  # set once every worker of the job has returned

    @property
    def serial(self) -> int:
        """The job's serial (where its progress lands)."""
        return self.feed.serial


class MinerRuntime:
    """Owns the jobs: submit, cancel, result; runs them on an `Executor`; applies their progress.

    Every operation is called on the trio thread and none awaits. Run it with `nursery.start(runtime.run)`.
    """

    def __init__(self, config: ServiceConfig, engine: Engine, *, measured_rate: float | None = None,
                 clock=time.monotonic, executor: Executor | None = None):
        self.config = config
        self.engine = engine
        # where chunks run: this machine's threads, or a Dask cluster (`cluster.executor.ClusterExecutor`)
        self.executor = executor if executor is not None else LocalExecutor(config, engine,
                                                                            measured_rate=measured_rate)
        self._serials = itertools.count()
        self.clock = clock  # the one clock: job times, rates and retention all read it
        self.measured_rate = measured_rate
        self._table = JobTable(config.job_retention_s, config.max_finished_jobs)
        self._shells: dict[str, JobShell] = {}
        self._running: dict[int, Job] = {}  # by serial: where progress lands
        self._end_waiters: dict[str, list[trio.Event]] = {}  # emptied by `_end`: bounded by running jobs
        self._send, self._receive = trio.open_memory_channel[Progress](math.inf)
        self._nursery: trio.Nursery | None = None
        self.hashes = 0
        self.jobs_completed = 0
        self.jobs_ended = 0
        self._ended: collections.Counter[tuple[str, str]] = collections.Counter()
        self.started_at = time.time()

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the actor and the retention reaper; jobs run as children until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._actor)
                nursery.start_soon(self._reaper)
                task_status.started(self)
        finally:
            self.stop_all()

    def stop_all(self) -> None:
        """Cancel every running job (shutdown): flags first, so threads return within milliseconds."""
        for job in self._table.running():
            self._end(job, Ending(Cause.SHUTDOWN))

    # -- operations (called on the trio thread; none awaits) -------------------------------------

    def submit(self, request: MineRequest, *, flag: np.ndarray | None = None) -> JobSnapshot:
        """Start a job; raise `DuplicateJob` or `TooManyJobs` (both `Refused`) to turn it down.

        `flag`: the job's cancel flag, when the caller wants to set it itself (mine/bench's signal handler).
        """
        if self._nursery is None:
            raise RuntimeError("runtime is not running")
        if request.job_id not in self._table and len(self._table.running()) >= self.config.max_jobs:
            raise TooManyJobs(f"too many running jobs (max {self.config.max_jobs}); cancel one first",
                              request.job_id)
        slots = self.executor.slots(request)
        job = self._table.add(request, self.engine.name, slots, self.clock())
        feed = JobFeed(next(self._serials), request, self._send.send_nowait, clock=self.clock)
        if flag is not None:
            feed.flag = flag
        shell = self._shells[job.job_id] = JobShell(feed)
        self._running[feed.serial] = job
        self._nursery.start_soon(self._run_job, job, shell)
        log.info("job %s accepted: %s executor, %d worker(s), range %x..%x", job.job_id, self.executor.name,
                 slots or self.executor.capacity(), request.nonce_start, request.nonce_end)
        return job.snapshot(job.started_at)

    def cancel(self, job_id: str, cause: Cause = Cause.CANCELLED) -> JobSnapshot | None:
        """Cancel a running job at once; a finished job keeps its final status. None if unknown.

        `cause`: `Cause.REPLACED` when the node superseded the job (QUIC), else a plain cancel.
        """
        job = self._table.get(job_id)
        if job is None:
            return None
        if job.running:
            self._end(job, Ending(cause))
        return job.snapshot(self.clock())

    def result(self, job_id: str) -> JobSnapshot | None:
        """The job under `job_id` as of now, or None if unknown or forgotten."""
        job = self._table.get(job_id)
        return job.snapshot(self.clock()) if job is not None else None

    def snapshots(self) -> list[JobSnapshot]:
        """Every retained job, as of now (what the metrics collector reads at scrape time)."""
        now = self.clock()
        return [job.snapshot(now) for job in self._table]

    def metric_snapshots(self) -> list[JobSnapshot]:
        """Running jobs and the `metrics_finished_jobs` latest finished ones: a scrape stays small
        while /result keeps up to `max_finished_jobs` (the job counters count every job)."""
        now = self.clock()
        return [job.snapshot(now) for job in self._table.recent(self.config.metrics_finished_jobs)]

    def statistics(self) -> RuntimeStatistics:
        """The runtime's figures since start (the metrics, /health and the speed line read them)."""
        return RuntimeStatistics(self.engine.name, self.engine.kernel, self.executor.capacity(),
                                 len(self._table.running()), len(self._table), self.hashes,
                                 self.jobs_completed, self.jobs_ended, self.executor.health(),
                                 dict(self._ended), self.started_at,
                                 getattr(self.engine, "device", None), len(getattr(self.engine, "devices", ())),
                                 beside.describe() if (beside := getattr(self.executor, "beside", None)) else None)

    def frontier(self, job_id: str) -> Frontier | None:
        """The cursor of `job_id` while its executor runs it (its `resume_point()`: where a stopped search resumes)."""
        shell = self._shells.get(job_id)
        return shell.feed.frontier if shell is not None else None

    def device_rates(self) -> list[tuple[str, str, float]]:
        """A GPU engine's devices as (label, name, nonces/s summed over running jobs' workers on it); else [].

        Worker w < the device count of a job runs on device w (`GpuEngine.for_slot`; `LocalExecutor` starts the
        device slots first); later workers are CPU threads beside them. Bounded by the devices.
        """
        devices = getattr(self.engine, "devices", None) or []
        rates = [0.0] * len(devices)
        for snap in self.snapshots() if devices else ():
            if snap.status is JobStatus.RUNNING:
                for w in snap.workers:
                    if w.rate is not None and not w.finished and w.worker < len(devices):
                        rates[w.worker] += w.rate
        return [(f"gpu{d.index}", d.label, rate) for d, rate in zip(devices, rates)]

    async def wait_settled(self, job_id: str) -> None:
        """Wait until every worker thread of `job_id` has returned (at once if it already has)."""
        shell = self._shells.get(job_id)
        if shell is not None:
            await shell.settled.wait()

    async def wait_ended(self, job_id: str) -> None:
        """Wait until `job_id` has left `running` (at once if it has, or is unknown).

        Unlike `wait_settled`, this sees the final status: the job's last progress is applied.
        """
        job = self._table.get(job_id)
        if job is None or not job.running:
            return
        event = trio.Event()
        waiters = self._end_waiters.setdefault(job_id, [])
        waiters.append(event)
        try:
            await event.wait()
        finally:
            if not event.is_set():  # a caller that gave up (a timeout, cancel) leaves no waiter behind
                waiters.remove(event)
                if not waiters and self._end_waiters.get(job_id) is waiters:
                    del self._end_waiters[job_id]

    # -- internals -------------------------------------------------------------------------------

    def _end(self, job: Job, ending: Ending) -> None:
        """End a job: the core transition, then its side effects, all in one place."""
        forgotten = self._table.end(job, ending, self.clock())
        shell = self._shells.get(job.job_id)
        if shell is not None:
            shell.feed.flag[0] = 1  # kernels stop within milliseconds
            shell.cancel_scope.cancel()
            self._running.pop(shell.serial, None)
            self.executor.stop(shell.serial)  # and on every cluster worker
            if shell.settled.is_set():
                del self._shells[job.job_id]
        self._ended[job.engine, str(job.status)] += 1
        self.jobs_ended += 1
        self.jobs_completed += ending.cause is Cause.FOUND
        for event in self._end_waiters.pop(job.job_id, ()):
            event.set()
        level = logging.WARNING if ending.cause is Cause.FAILED else logging.INFO
        log.log(level, "job %s %s%s (%d nonces)", job.job_id, job.status, f": {job.reason}" if job.reason else "",
                job.hash_count)
        for old in forgotten:
            log.debug("job %s forgotten (finished-job cap)", old.job_id)

    async def _run_job(self, job: Job, shell: JobShell) -> None:
        try:
            with shell.cancel_scope:
                await self.executor.run_job(shell.feed)
            if job.running and not shell.cancel_scope.cancel_called:
                # behind the slots' last reports in the channel: the job cannot be left running forever
                self._send.send_nowait(Progress(shell.serial, 0, 0, self.clock(), settled=True))
        except Exception as exc:  # a fault fails this job only; the service lives on
            log.exception("job %s crashed", job.job_id)
            if job.running:
                self._end(job, Ending.failed(f"job crashed: {exc!r}"))
        finally:
            shell.settled.set()
            # kept until the job ends (its last report may still be in the channel); a forgotten id
            # may have been reused meanwhile
            if not job.running and self._shells.get(job.job_id) is shell:
                del self._shells[job.job_id]

    async def _actor(self) -> None:
        alpha = self.config.rate_ema_alpha
        async for p in self._receive:
            job = self._running.get(p.serial)
            if job is None or not job.running:
                continue  # a late report of an ended job
            counted, ending = job.apply(p, alpha)
            self.hashes += counted
            if ending is not None:
                self._end(job, ending)

    async def _reaper(self) -> None:
        period = min(1.0, max(self.config.job_retention_s / 4, 0.01))
        while True:
            await trio.sleep(period)
            for job in self._table.expire(self.clock()):
                log.debug("job %s forgotten after retention", job.job_id)
