"""This machine's threads as an executor: one slot per core (or per device), each chunk in a thread.

Every slot runs its chunks in a thread (`trio.to_thread.run_sync`) under its lane's miner-wide
`CapacityLimiter`, so concurrent jobs share the cores; the job is prepared once per lane (v1:
Miller-Rabin, milliseconds kept off the event loop). `serve`, `connect`, `devnet`, `mine` and
`bench` all mine through it.

A lane is the slots of one engine: `cores` CPU threads, or a GPU engine's devices (one slot each,
`engine.for_slot(i)`) and, with an explicit `--cores N`, a second lane of N CPU threads running the CPU
engine of the same proof of work beside them. Every slot of every lane takes its chunks from the
job's one cursor, sized from its own measured rate, and reports to the same job: a find is decided
exactly as with one lane (the first verified find reported ends the job).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager

import attrs
import trio

from ..core.config import CPU_ENGINE_OF_GPU, GPU_ENGINES, ServiceConfig
from ..core.rates import ChunkSizer
from ..core.requests import MineRequest
from ..engines import get_engine
from ..engines.base import Engine, PreparedJob, measure_rate, prepare_job
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


@attrs.frozen
class Lane:
    """Slots of one engine on this machine: `count` of them, under one limiter of the executor's."""

    engine: Engine
    count: int
    rate: float | None = None  # the engine's warm-up probe, nonces/s of one slot: seeds each slot's first chunk

    def describe(self) -> dict:
        """The lane for /health and the reports: engine, kernel, threads."""
        return {"engine": self.engine.name, "kernel": self.engine.kernel, "threads": self.count}


def beside_lane(config: ServiceConfig) -> Lane | None:
    """The CPU lane beside a GPU engine's devices: `config.cpu_threads` threads of the CPU engine of the same
    proof of work (cpu-fast for gpu-cuda, cpu-fast-v2 for gpu-cuda-v2), warmed and probed; None for GPUs
    only, a CPU engine, or a cluster. Blocking (compiles or loads the kernels): call it in a thread."""
    if config.engine not in GPU_ENGINES or config.cpu_threads == 0 or config.cluster is not None:
        return None
    engine = get_engine(CPU_ENGINE_OF_GPU[config.engine], config.kernel)
    engine.warm_up()
    return Lane(engine, config.cpu_threads, measure_rate(engine))


class ThreadDevice:
    """A slot on this machine: one engine chunk at a time in a worker thread."""

    rate = None  # the lane's warm-up probe seeds the first chunk instead

    def __init__(self, executor: LocalExecutor, prepared: PreparedJob, engine: Engine, lane: int = 0):
        self.executor = executor
        self.prepared = prepared
        self.engine = engine  # the lane's, or a device's own (an engine with `for_slot`, such as a GPU's)
        self.lane = lane  # index into the executor's lanes

    def alive(self) -> bool:
        return True

    async def search(self, feed: JobFeed, lo: int, hi: int) -> ChunkResult:
        # the lane's limiter replaces trio's default one (40 threads): --cores 64 means 64 mining threads
        r = await trio.to_thread.run_sync(self._search, feed, lo, hi, limiter=self.executor.limiters[self.lane])
        self.executor.lane_tested[self.lane] += r.tested  # on the trio thread: exact
        return r

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
    """The default executor: a job's chunks on this machine's slots (`cores` threads, or a GPU engine's devices
    and `beside`'s CPU threads), all from the job's one cursor."""

    name = "local"

    def __init__(self, config: ServiceConfig, engine: Engine, *, measured_rate: float | None = None,
                 beside: Lane | None = None):
        self.config = config
        self.engine = engine
        self.measured_rate = measured_rate
        # the engine's lane first: a GPU engine's device slots are slots 0..devices-1 of every job
        self.lanes = [Lane(engine, config.cores, measured_rate), *([beside] if beside is not None else [])]
        self.limiters = [trio.CapacityLimiter(lane.count) for lane in self.lanes]  # concurrent jobs share each
        self.lane_tested = [0] * len(self.lanes)  # nonces each lane tested, all jobs (bench's split)
        self.busy_s = 0.0  # thread-seconds in kernels, all jobs
        self.cpu_s = 0.0  # CPU seconds those threads got (on a shared machine: what they really ran)

    @property
    def beside(self) -> Lane | None:
        """The CPU lane mining beside a GPU engine's devices, if any."""
        return self.lanes[1] if len(self.lanes) > 1 else None

    def slots(self, request: MineRequest) -> int:
        return min(self.capacity(), request.nonce_end - request.nonce_start + 1)

    def capacity(self) -> int:
        return sum(lane.count for lane in self.lanes)

    def stop(self, serial: int) -> None:
        pass  # the job's flag already stops its threads

    def health(self) -> dict | None:
        return None

    async def run_job(self, feed: JobFeed) -> None:
        request = feed.request
        slots = self.slots(request)
        async with trio.open_nursery() as nursery:
            for index, lane in enumerate(self.lanes):
                count, slots = min(lane.count, slots), slots - min(lane.count, slots)
                if count == 0:
                    continue
                # once per lane and job; v1: request.threshold is the distance threshold; v2: it carries the target
                prepared = await trio.to_thread.run_sync(prepare_job, lane.engine, request.header, request.threshold)
                for _ in range(count):
                    slot = feed.new_slot()
                    # device slots: an engine driving several devices hands slot i its own (`for_slot(i)`)
                    engine = lane.engine.for_slot(slot) if hasattr(lane.engine, "for_slot") else lane.engine
                    sizer = ChunkSizer.start(self.config.progress_chunk_ms, probe=lane.rate)
                    nursery.start_soon(run_slot, feed, ThreadDevice(self, prepared, engine, index), sizer,
                                       self.capacity, slot)
