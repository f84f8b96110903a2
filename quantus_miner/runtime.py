"""The trio shell around the job core: a nursery per job, worker threads, one progress actor.

Each job runs in its own nursery with one worker task per core. A worker runs one engine
chunk at a time in a thread (`trio.to_thread.run_sync`) under a miner-wide
`CapacityLimiter(cores)`, so concurrent jobs share the cores, and sends a `Progress`
after every chunk into one memory channel. The actor task alone applies progress to jobs.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import contextmanager

import trio

from . import qpow
from .config import ServiceConfig
from .engines import Engine, PreparedJob
from .jobs import CANCELLED, FAILED, DuplicateJob, Job, JobTable, Progress, WorkerState
from .metrics import MinerMetrics
from .mine_request import MineRequest
from .partition import next_chunk, partition
from .rates import next_chunk_size, seed_chunk

log = logging.getLogger("quantus_miner")




class TooManyJobs(RuntimeError):
    pass


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


class MinerRuntime:
    def __init__(self, config: ServiceConfig, engine: Engine, metrics: MinerMetrics, table: JobTable,
                 *, measured_rate: float | None = None, clock=time.monotonic):
        self.config = config
        self.engine = engine
        self.metrics = metrics
        self.table = table
        self.clock = clock
        self.measured_rate = measured_rate
        self._limiter = trio.CapacityLimiter(config.cores)
        self._send, self._receive = trio.open_memory_channel[Progress](math.inf)
        self._nursery: trio.Nursery | None = None

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
        now = self.clock()
        for job in self.table.running():
            job.end(CANCELLED, now, reason="shutdown")
            self._retire(job)

    # -- API operations (called on the trio thread; none awaits) ---------------------------------

    def submit(self, request: MineRequest) -> Job:
        if self._nursery is None:
            raise RuntimeError("runtime is not running")
        if self.table.get(request.job_id) is not None:
            raise DuplicateJob(f"job {request.job_id} already exists")
        if len(self.table.running()) >= self.config.max_jobs:
            raise TooManyJobs(f"too many running jobs (max {self.config.max_jobs}); cancel one first")
        parts = partition(request.nonce_start, request.nonce_end, self.config.cores)
        job = Job(request, self.engine.name, self.clock(), [WorkerState() for _ in parts])
        self.table.add(job)
        job.cancel_scope = trio.CancelScope()
        job.settled = trio.Event()
        self._nursery.start_soon(self._run_job, job, parts)
        log.info("job %s accepted: %d worker(s), range %x..%x", job.job_id, len(parts),
                 request.nonce_start, request.nonce_end)
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a running job at once; a finished job keeps its final status. None if unknown."""
        job = self.table.get(job_id)
        if job is not None and job.running:
            job.end(CANCELLED, self.clock())
            self._retire(job)
        return job

    # -- internals -------------------------------------------------------------------------------

    def _retire(self, job: Job) -> None:
        """Side effects of a job reaching its end status (job.end already set the kernel flag)."""
        job.cancel_scope.cancel()
        self.metrics.job_ended(job.engine, job.status)
        level = logging.WARNING if job.status == FAILED and job.reason != "range exhausted" else logging.INFO
        log.log(level, "job %s %s%s (%d nonces)", job.job_id, job.status,
                f": {job.reason}" if job.reason else "", job.hash_count)
        for forgotten in self.table.ended(job):
            log.debug("job %s forgotten (finished-job cap)", forgotten.job_id)

    def _prepare(self, request: MineRequest) -> PreparedJob:
        return self.engine.prepare(qpow.JobContext.from_header(request.header), request.threshold)

    async def _run_job(self, job: Job, parts: list[tuple[int, int]]) -> None:
        try:
            with job.cancel_scope:
                # deriving n runs Miller-Rabin on 512-bit candidates: milliseconds kept off the event loop
                prepared = await trio.to_thread.run_sync(self._prepare, job.request)
                async with trio.open_nursery() as nursery:
                    for worker, part in enumerate(parts):
                        nursery.start_soon(self._worker, job, prepared, worker, part)
        finally:
            job.settled.set()

    def _search(self, job: Job, prepared: PreparedJob, lo: int, hi: int):
        with background_priority(self.config.worker_nice):
            t0 = time.monotonic()
            outcome = self.engine.search(prepared, lo, hi, job.flag)
            t1 = time.monotonic()
        return outcome, t1, t1 - t0

    async def _worker(self, job: Job, prepared: PreparedJob, worker: int, part: tuple[int, int]) -> None:
        cursor, end = part
        size = seed_chunk(self.config.progress_chunk_ms, self.measured_rate)
        try:
            while cursor <= end:
                lo, hi = next_chunk(cursor, end, size)
                async with self._limiter:
                    outcome, t, busy = await trio.to_thread.run_sync(self._search, job, prepared, lo, hi)
                cursor = lo + outcome.tested
                self._send.send_nowait(Progress(job.job_id, worker, outcome.tested, t, busy, outcome.found,
                                                finished=cursor > end and outcome.found is None))
                if outcome.found or outcome.cancelled:
                    return
                size = next_chunk_size(size, outcome.tested, busy, self.config.progress_chunk_ms)
        except Exception as exc:  # a fault fails this job only; the service lives on
            log.exception("job %s worker %d crashed", job.job_id, worker)
            self._send.send_nowait(Progress(job.job_id, worker, 0, self.clock(), error=f"worker crashed: {exc!r}"))

    async def _actor(self) -> None:
        alpha = self.config.rate_ema_alpha
        async for p in self._receive:
            job = self.table.get(p.job_id)
            if job is None or not job.running:
                continue
            counted = job.apply(p, alpha)
            self.metrics.hashes.inc(counted)
            if not job.running:
                self._retire(job)

    async def _reaper(self) -> None:
        period = min(1.0, max(self.config.job_retention_s / 4, 0.01))
        while True:
            await trio.sleep(period)
            for job in self.table.expire(self.clock()):
                log.debug("job %s forgotten after retention", job.job_id)
