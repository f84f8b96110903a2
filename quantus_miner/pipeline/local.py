"""This machine's threads as an executor: one slot per core (or per device), each chunk in a thread.

Every slot runs its chunks in a thread (`trio.to_thread.run_sync`) under the miner-wide
`CapacityLimiter(cores)`, so concurrent jobs share the cores; the job is prepared once (v1:
Miller-Rabin, milliseconds kept off the event loop). `serve`, `connect`, `devnet`, `mine` and
`bench` all mine through it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager

import trio

from ..core.config import ServiceConfig
from ..core.rates import ChunkSizer
from ..core.requests import MineRequest
from ..engines.base import Engine, PreparedJob, prepare_job
from .executor import ChunkResult, JobFeed, run_slot

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


class ThreadDevice:
    """A slot on this machine: one engine chunk at a time in a worker thread."""

    rate = None  # the executor's warm-up probe seeds the first chunk instead

    def __init__(self, executor: LocalExecutor, prepared: PreparedJob, engine: Engine):
        self.executor = executor
        self.prepared = prepared
        self.engine = engine  # the executor's, or a device's own (an engine with `for_slot`, such as a GPU's)

    def alive(self) -> bool:
        return True

    async def search(self, feed: JobFeed, lo: int, hi: int) -> ChunkResult:
        # the limiter replaces trio's default one (40 threads): --cores 64 means 64 mining threads
        return await trio.to_thread.run_sync(self._search, feed, lo, hi, limiter=self.executor.limiter)

    def _search(self, feed: JobFeed, lo: int, hi: int) -> ChunkResult:
        ex = self.executor
        with background_priority(ex.config.worker_nice):
            t0, cpu0 = time.monotonic(), time.thread_time()
            outcome = self.engine.search(self.prepared, lo, hi, feed.flag)
            t1 = time.monotonic()
            ex.cpu_s += time.thread_time() - cpu0  # += from threads: a figure for bench, not a count
        ex.busy_s += t1 - t0
        return ChunkResult(outcome.tested, outcome.found, outcome.cancelled, t1, t1 - t0)

    async def failed(self, feed: JobFeed, exc: Exception) -> str:
        log.error("job %s crashed in a worker", feed.request.job_id, exc_info=exc)
        return f"worker crashed: {exc!r}"


class LocalExecutor:
    """The default executor: a job's chunks on `cores` slots of this machine, from the job's one cursor."""

    name = "local"

    def __init__(self, config: ServiceConfig, engine: Engine, *, measured_rate: float | None = None):
        self.config = config
        self.engine = engine
        self.measured_rate = measured_rate
        self.limiter = trio.CapacityLimiter(config.cores)
        self.busy_s = 0.0  # thread-seconds in kernels, all jobs
        self.cpu_s = 0.0  # CPU seconds those threads got (on a shared machine: what they really ran)

    def slots(self, request: MineRequest) -> int:
        return min(self.config.cores, request.nonce_end - request.nonce_start + 1)

    def capacity(self) -> int:
        return self.config.cores

    def stop(self, serial: int) -> None:
        pass  # the job's flag already stops its threads

    def health(self) -> dict | None:
        return None

    async def run_job(self, feed: JobFeed) -> None:
        request = feed.request
        # v1: request.threshold is the distance threshold; v2 (connect): it carries the target
        prepared = await trio.to_thread.run_sync(prepare_job, self.engine, request.header, request.threshold)
        async with trio.open_nursery() as nursery:
            for _ in range(self.slots(request)):
                slot = feed.new_slot()
                # device slots: an engine driving several devices hands slot i its own (`for_slot(i)`)
                engine = self.engine.for_slot(slot) if hasattr(self.engine, "for_slot") else self.engine
                sizer = ChunkSizer.start(self.config.progress_chunk_ms, probe=self.measured_rate)
                nursery.start_soon(run_slot, feed, ThreadDevice(self, prepared, engine), sizer, self.capacity, slot)
