"""The trio shell around the job core: a nursery per job, worker tasks, one progress actor.

Each job runs in its own nursery; where its chunks run is the executor's business:
`LocalExecutor` (default) runs one worker task per core, each running one engine chunk at a
time in a thread (`trio.to_thread.run_sync`) under a miner-wide `CapacityLimiter(cores)`;
`cluster.executor.ClusterExecutor` runs them as Dask tasks on a cluster. Either sends a
`Progress` after every chunk into one memory channel; the actor task alone applies progress to jobs.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from contextlib import contextmanager

import attrs
import numpy as np
import trio

from ..core.config import ServiceConfig
from ..core.jobs import RANGE_EXHAUSTED, Job, JobSnapshot, JobStatus, JobTable, Progress
from ..core.partition import next_chunk, partition
from ..core.rates import next_chunk_size, seed_chunk
from ..core.requests import MineRequest, TooManyJobs
from ..engines.base import Engine, PreparedJob, new_cancel_flag, prepare_job
from .metrics import MinerMetrics

log = logging.getLogger("quantus_miner")


@contextmanager
def background_priority(nice: int):
    """Run the calling thread at `nice` (mining yields the CPU to the event loop), then restore it.

    Linux accepts a thread id as a PRIO_PROCESS target. The restore matters because trio reuses
    threads, and a process spawned from a reniced thread would inherit its nice value; raising
    it back needs CAP_SYS_NICE, so without it the cached thread simply stays in the background.
    """
    tid = threading.get_native_id()
    try:
        previous = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, max(previous, nice))
    except (AttributeError, OSError):  # not Linux, or not permitted: mine at normal priority
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, previous)
            except OSError:
                pass


@attrs.frozen
class RuntimeStatistics:
    engine: str
    kernel: str
    cores: int
    active_jobs: int
    retained_jobs: int
    hashes: int  # nonces tested since start, all jobs (the speed line's running total)
    jobs_completed: int  # jobs that found a nonce since start
    jobs_ended: int  # jobs that ended since start, any status
    cluster: dict | None = None  # cluster mode: scheduler, connected, workers, threads
    device: str | None = None  # a GPU engine: its devices in words


@attrs.define
class JobShell:
    """What the trio shell keeps beside a core `Job` while its workers run."""

    serial: int  # this runtime's number for the job (job ids may be reused once forgotten)
    flag: np.ndarray = attrs.field(factory=new_cancel_flag)  # stops this job's kernels within milliseconds
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    settled: trio.Event = attrs.field(factory=trio.Event)  # set once every worker of the job has returned


class LocalExecutor:
    """Today's mode: a job's range split over `cores` workers, each running chunks in threads.

    A worker runs one engine chunk at a time in a thread under the miner-wide
    `CapacityLimiter(cores)`, so concurrent jobs share the cores.
    """

    name = "local"

    def __init__(self, config: ServiceConfig, engine: Engine, *, measured_rate: float | None = None):
        self.config = config
        self.engine = engine
        self.measured_rate = measured_rate
        self._limiter = trio.CapacityLimiter(config.cores)

    def slots(self, request: MineRequest) -> int:
        return len(partition(request.nonce_start, request.nonce_end, self.config.cores))

    def capacity(self) -> int:
        return self.config.cores

    def stop(self, serial: int) -> None:
        pass  # the job's flag already stops its threads

    def health(self) -> dict | None:
        return None

    async def run_job(self, job: Job, serial: int, flag: np.ndarray, send) -> None:
        # v1: deriving n runs Miller-Rabin on 512-bit candidates: milliseconds kept off the event loop
        prepared = await trio.to_thread.run_sync(self._prepare, job.request)
        parts = partition(job.request.nonce_start, job.request.nonce_end, self.config.cores)
        async with trio.open_nursery() as nursery:
            for worker, part in enumerate(parts):
                nursery.start_soon(self._worker, job, flag, prepared, worker, part, send)

    def _prepare(self, request: MineRequest) -> PreparedJob:
        # v1: request.threshold is the distance threshold; v2 (connect): it carries the target
        return prepare_job(self.engine, request.header, request.threshold)

    def _search(self, engine: Engine, prepared: PreparedJob, lo: int, hi: int, flag: np.ndarray):
        with background_priority(self.config.worker_nice):
            t0 = time.monotonic()
            outcome = engine.search(prepared, lo, hi, flag)
            t1 = time.monotonic()
        return outcome, t1, t1 - t0

    async def _worker(self, job: Job, flag: np.ndarray, prepared: PreparedJob, worker: int,
                      part: tuple[int, int], send) -> None:
        cursor, end = part
        size = seed_chunk(self.config.progress_chunk_ms, self.measured_rate)
        engine = self.engine.for_slot(worker) if hasattr(self.engine, "for_slot") else self.engine  # GPU: a device
        try:
            while cursor <= end:
                lo, hi = next_chunk(cursor, end, size)
                async with self._limiter:
                    outcome, t, busy = await trio.to_thread.run_sync(self._search, engine, prepared, lo, hi, flag)
                cursor = lo + outcome.tested
                send.send_nowait(Progress(job.job_id, worker, outcome.tested, t, busy, outcome.found,
                                          finished=cursor > end and outcome.found is None))
                if outcome.found or outcome.cancelled:
                    return
                size = next_chunk_size(size, outcome.tested, busy, self.config.progress_chunk_ms)
        except Exception as exc:  # a fault fails this job only; the service lives on
            log.exception("job %s worker %d crashed", job.job_id, worker)
            send.send_nowait(Progress(job.job_id, worker, 0, time.monotonic(), error=f"worker crashed: {exc!r}"))


class MinerRuntime:
    def __init__(self, config: ServiceConfig, engine: Engine, metrics: MinerMetrics,
                 *, measured_rate: float | None = None, clock=time.monotonic, executor=None):
        self.config = config
        self.engine = engine
        # where chunks run: this machine's threads, or a Dask cluster (`cluster.executor.ClusterExecutor`)
        self.executor = executor if executor is not None else LocalExecutor(config, engine,
                                                                            measured_rate=measured_rate)
        self._serials = itertools.count()
        self.metrics = metrics
        self.clock = clock  # the one clock: job times, rates and retention all read it
        self.measured_rate = measured_rate
        self._table = JobTable(config.job_retention_s, config.max_finished_jobs)
        self._shells: dict[str, JobShell] = {}
        self._end_waiters: dict[str, list[trio.Event]] = {}  # emptied by `_end`: bounded by running jobs
        self._send, self._receive = trio.open_memory_channel[Progress](math.inf)
        self._nursery: trio.Nursery | None = None
        self.hashes = 0
        self.jobs_completed = 0
        self.jobs_ended = 0
        metrics.observe(self.metric_snapshots)

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
            self._end(job, JobStatus.CANCELLED, "shutdown")

    # -- operations (called on the trio thread; none awaits) -------------------------------------

    def submit(self, request: MineRequest) -> JobSnapshot:
        """Start a job; raise `DuplicateJob` or `TooManyJobs` (both `Refused`) to turn it down."""
        if self._nursery is None:
            raise RuntimeError("runtime is not running")
        if request.job_id not in self._table and len(self._table.running()) >= self.config.max_jobs:
            raise TooManyJobs(f"too many running jobs (max {self.config.max_jobs}); cancel one first",
                              request.job_id)
        slots = self.executor.slots(request)
        job = self._table.add(request, self.engine.name, slots, self.clock())
        shell = self._shells[job.job_id] = JobShell(next(self._serials))
        self._nursery.start_soon(self._run_job, job, shell)
        log.info("job %s accepted: %s executor, %d worker(s), range %x..%x", job.job_id, self.executor.name,
                 slots or self.executor.capacity(), request.nonce_start, request.nonce_end)
        return job.snapshot(job.started_at)

    def cancel(self, job_id: str) -> JobSnapshot | None:
        """Cancel a running job at once; a finished job keeps its final status. None if unknown."""
        job = self._table.get(job_id)
        if job is None:
            return None
        if job.running:
            self._end(job, JobStatus.CANCELLED)
        return job.snapshot(self.clock())

    def result(self, job_id: str) -> JobSnapshot | None:
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
        return RuntimeStatistics(self.engine.name, self.engine.kernel, self.executor.capacity(),
                                 len(self._table.running()), len(self._table), self.hashes,
                                 self.jobs_completed, self.jobs_ended, self.executor.health(),
                                 getattr(self.engine, "device", None))

    def device_rates(self) -> list[tuple[str, str, float]]:
        """A GPU engine's devices as (label, name, nonces/s summed over running jobs' workers on it); else [].

        Worker w of a job runs on device w mod the device count (`GpuEngine.for_slot`): bounded by the devices.
        """
        devices = getattr(self.engine, "devices", None) or []
        rates = [0.0] * len(devices)
        for snap in self.snapshots() if devices else ():
            if snap.status is JobStatus.RUNNING:
                for w in snap.workers:
                    if w.rate is not None and not w.finished:
                        rates[w.worker % len(devices)] += w.rate
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
        self._end_waiters.setdefault(job_id, []).append(event)
        await event.wait()

    # -- internals -------------------------------------------------------------------------------

    def _end(self, job: Job, status: JobStatus, reason: str | None = None) -> None:
        """End a job: the core transition, then its side effects, all in one place."""
        forgotten = self._table.end(job, status, self.clock(), reason)
        shell = self._shells.get(job.job_id)
        if shell is not None:
            shell.flag[0] = 1  # kernels stop within milliseconds
            shell.cancel_scope.cancel()
            self.executor.stop(shell.serial)  # and on every cluster worker
        self.metrics.job_ended(job.engine, job.status)
        self.jobs_ended += 1
        self.jobs_completed += job.status is JobStatus.COMPLETED
        for event in self._end_waiters.pop(job.job_id, ()):
            event.set()
        level = logging.WARNING if status is JobStatus.FAILED and reason != RANGE_EXHAUSTED else logging.INFO
        log.log(level, "job %s %s%s (%d nonces)", job.job_id, status, f": {reason}" if reason else "",
                job.hash_count)
        for old in forgotten:
            log.debug("job %s forgotten (finished-job cap)", old.job_id)

    async def _run_job(self, job: Job, shell: JobShell) -> None:
        try:
            with shell.cancel_scope:
                await self.executor.run_job(job, shell.serial, shell.flag, self._send)
        except Exception as exc:  # a fault fails this job only; the service lives on
            log.exception("job %s crashed", job.job_id)
            if job.running:
                self._end(job, JobStatus.FAILED, f"job crashed: {exc!r}")
        finally:
            shell.settled.set()
            if self._shells.get(job.job_id) is shell:  # a forgotten id may have been reused meanwhile
                del self._shells[job.job_id]

    async def _actor(self) -> None:
        alpha = self.config.rate_ema_alpha
        async for p in self._receive:
            job = self._table.get(p.job_id)
            if job is None or not job.running:
                continue
            counted, ending = job.apply(p, alpha)
            self.metrics.hashes.inc(counted)
            self.hashes += counted
            if ending is not None:
                self._end(job, *ending)

    async def _reaper(self) -> None:
        period = min(1.0, max(self.config.job_retention_s / 4, 0.01))
        while True:
            await trio.sleep(period)
            for job in self._table.expire(self.clock()):
                log.debug("job %s forgotten after retention", job.job_id)
