"""The service side of cluster mode: feed every Dask worker thread with chunk tasks, from trio.

Design: one synchronous `distributed.Client` (it runs its own event loop in its own thread). Every
call that can block (submit, result, scheduler_info, run, connect) goes through
`trio.to_thread.run_sync`; a finished future wakes its trio task through `TrioToken.run_sync_soon`
from Dask's callback thread. Nothing of Dask's asyncio loop ever runs inside trio's loop, and no
trio code runs in Dask's: the two loops only exchange thread-safe calls.

Per job, a feeder starts `PIPELINE` (2) slots (`pipeline.executor.run_slot`, the one chunk loop)
per worker thread in the cluster (and more as workers join), so a thread's next chunk is already
queued on its worker when one ends. Each slot's device (`WorkerDevice`) is one Dask worker: its
first chunk is sized from the worker's measured per-thread rate, and each chunk is submitted
pinned to it (`allow_other_workers=True`: if the worker dies, Dask re-runs the chunk elsewhere).
A chunk is counted from its one completed result only, so a re-run chunk is counted once. A
candidate nonce (QPoW v1 or v2) is re-verified with the reference here before it is reported.

Scheduler loss: running jobs end `failed` ("lost the Dask scheduler at ..."), jobs submitted while
it is away fail at once with the same reason, `/health` shows `connected: false`, and a monitor
reconnects as soon as the scheduler answers again (workers started by `quantus-miner worker`
re-register by themselves).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import uuid
from functools import partial

import attrs
import trio

from ..core.config import ServiceConfig
from ..core.outcomes import ConsensusError, verify
from ..core.rates import ChunkSizer, ema
from ..core.requests import MineRequest
from ..engines.base import Engine
from ..pipeline.executor import ChunkResult, JobFeed, run_slot
from . import tasks

log = logging.getLogger("quantus_miner.cluster")

POLL_S = 1.0  # how often the monitor reads the scheduler's worker list (each read costs the scheduler CPU)
CLIENT_CALLS = 8  # blocking client calls running at once (each takes well under a millisecond)
MAX_WORKER_SERIES = 256  # per-worker metric series at most, whatever the cluster's size
# Chunks in flight per worker thread: while one runs, the next already waits in the worker's queue,
# so the round trip to the service (tens of ms on a loaded machine) never leaves a thread idle.
PIPELINE = 2


class ClusterUnavailable(OSError):
    """The Dask scheduler did not answer within the connect timeout."""


class ChunkError(RuntimeError):
    """A chunk task did not complete (scheduler lost, or the task failed on every worker that tried it)."""


@attrs.define
class ClusterWorker:
    """A Dask worker as the executor knows it: address, name, threads, measured rate, nonces credited."""

    address: str
    name: str
    nthreads: int
    rate: float | None = None  # EMA of one of its threads' nonces/s
    hashes: int = 0  # nonces counted from chunks it completed


@attrs.frozen
class WorkerStats:
    """One worker's figures for the metrics (rate: all its threads)."""

    name: str
    nthreads: int
    rate: float  # nonces/s of all its threads, from the measured per-thread rate
    hashes: int


@attrs.frozen
class ClusterStats:
    """The cluster as the metrics and bench read it at one moment."""

    scheduler: str
    connected: bool
    workers: tuple[WorkerStats, ...]  # at most MAX_WORKER_SERIES of them
    chunks: int
    retried: int
    worker_count: int  # all of them
    threads: int


def connect(address: str, timeout: float):
    """A synchronous Dask client for `address`, or `ClusterUnavailable` within about `timeout` seconds."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterUnavailable(f"cannot reach the Dask scheduler at {address} within {timeout:g} s: "
                                 f"{exc}") from None


def describe_failure(address: str, exc: BaseException) -> str:
    """A chunk's failure on the cluster in words (a lost scheduler named as such)."""
    reason = getattr(exc, "reason", None)
    if reason == "scheduler-connection-lost":
        return f"lost the Dask scheduler at {address}"
    return f"chunk failed on the cluster: {exc!r}"


class WorkerDevice:
    """A slot's device in cluster mode: one Dask worker (its chunks run on any of its threads)."""

    def __init__(self, executor: ClusterExecutor, key: str, worker: ClusterWorker):
        self.executor, self.key, self.worker = executor, key, worker

    @property
    def rate(self) -> float | None:
        """The worker's measured rate per thread, or None before its first chunk."""
        return self.worker.rate

    def alive(self) -> bool:
        """Whether the worker is still in the cluster (it may have left or been replaced)."""
        return self.executor._workers.get(self.worker.address) is self.worker

    async def search(self, feed: JobFeed, lo: int, hi: int) -> ChunkResult:
        """Run one chunk on the worker; its counts and a re-verified nonce."""
        ex = self.executor
        result = await ex._compute(self.key, feed.request, lo, hi, self.worker.address)
        found = None
        if result["nonce"] is not None:  # a candidate: the reference decides (v1: ms of Miller-Rabin, in a thread)
            found = await trio.to_thread.run_sync(verify, ex.engine.pow, feed.request.header,
                                                  feed.request.threshold, result["nonce"])
        ex.busy_s += result["busy_s"]
        ex._credit(self.worker, result)
        return ChunkResult(result["tested"], found, result["cancelled"], ex.clock(), result["busy_s"])

    async def failed(self, feed: JobFeed, exc: Exception) -> str | None:
        """The job's failure reason for a chunk's fault, or None when the chunk is retried elsewhere."""
        ex = self.executor
        if isinstance(exc, ChunkError):
            # a chunk often fails a moment before the monitor sees the scheduler go: give the loss
            # watcher (which names the real cause and cancels this slot) the chance to act
            lost = ex._lost
            with trio.move_on_after(ex._info_timeout() + POLL_S + 1.0):
                await lost.wait()
            if lost.is_set():
                return None  # the loss watcher reports the job's end
        elif not isinstance(exc, ConsensusError):
            raise exc
        return str(exc)


class ClusterExecutor:
    """Runs a job's chunks as Dask tasks on every worker thread of a cluster (`--cluster`), QPoW v1 or v2."""

    name = "cluster"

    def __init__(self, config: ServiceConfig, client, engine: Engine, *, measured_rate: float | None = None,
                 clock=time.monotonic):
        self.address = config.cluster
        self.config = config
        self.engine = engine  # its name and proof of work go to the workers; nothing runs here
        self.measured_rate = measured_rate
        self.clock = clock
        self._client = client
        self._connected = True
        self._lost = trio.Event()
        self._workers: dict[str, ClusterWorker] = {}  # by address
        self._by_name: dict[str, ClusterWorker] = {}
        self._changed = trio.lowlevel.ParkingLot()  # feeders wait here for workers to join
        self._calls = trio.CapacityLimiter(CLIENT_CALLS)
        self._cancel_send, self._cancel_receive = trio.open_memory_channel[str](math.inf)
        self._running: set[str] = set()
        self._id = uuid.uuid4().hex[:8]  # keeps two miners sharing one cluster apart
        self._chunk_seq = itertools.count()
        self.chunks = 0
        self.retried = 0
        self.busy_s = 0.0  # worker-thread seconds spent in kernels, all chunks

    @classmethod
    async def open(cls, config: ServiceConfig, engine: Engine, **kw) -> ClusterExecutor:
        """Connect to the scheduler (bounded by --cluster-timeout-s) and read its workers."""
        client = await trio.to_thread.run_sync(connect, config.cluster, config.cluster_timeout_s)
        executor = cls(config, client, engine, **kw)
        await executor._poll()
        return executor

    # -- runtime interface -------------------------------------------------------------------------

    def slots(self, request: MineRequest) -> int:
        """0 at the start: slots join as the job meets each worker thread."""
        return 0  # slots are added as the job meets each worker thread

    def key(self, serial: int) -> str:
        """The Dask key prefix of job `serial` (unique per miner process)."""
        return f"qm-{self._id}-{serial}"

    def stop(self, serial: int) -> None:
        """Stop job `serial`'s kernels on every worker (sent by the canceller task, within milliseconds)."""
        key = self.key(serial)
        if key in self._running:
            self._cancel_send.send_nowait(key)

    def health(self) -> dict:
        """The cluster part of /health: scheduler, connected, workers, threads."""
        return {"scheduler": self.address, "connected": self._connected, "workers": len(self._workers),
                "threads": self.capacity()}

    def capacity(self) -> int:
        """Worker threads in the cluster now."""
        return sum(w.nthreads for w in self._workers.values())

    def stats(self) -> ClusterStats:
        """The cluster's figures for the metrics (a bounded number of worker series)."""
        workers = tuple(WorkerStats(w.name, w.nthreads, (w.rate or 0.0) * w.nthreads, w.hashes)
                        for w in list(self._workers.values())[:MAX_WORKER_SERIES])
        return ClusterStats(self.address, self._connected, workers, self.chunks, self.retried, len(self._workers),
                            self.capacity())

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Watch the scheduler and send cancels until cancelled; then close the client."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._monitor)
                nursery.start_soon(self._canceller)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await trio.to_thread.run_sync(self._shutdown, abandon_on_cancel=True)

    async def run_job(self, feed: JobFeed) -> None:
        """Run the job's chunks on every worker thread until it ends."""
        if not self._connected:
            feed.report(0, error=f"lost the Dask scheduler at {self.address}")
            return
        key = self.key(feed.serial)
        lost = self._lost
        self._running.add(key)
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._fail_on_loss, lost, feed, outer.cancel_scope)
                async with trio.open_nursery() as slots:
                    # address -> the worker whose slots run (a worker restarted on the same address is a new one)
                    fed: dict[str, ClusterWorker] = {}
                    while not feed.frontier.exhausted and not feed.stopped:
                        for address, w in list(self._workers.items()):
                            if fed.get(address) is not w:
                                fed[address] = w
                                device = WorkerDevice(self, key, w)
                                for _ in range(w.nthreads * PIPELINE):
                                    sizer = ChunkSizer.start(self.config.progress_chunk_ms, rate=w.rate,
                                                             probe=self.measured_rate)
                                    slots.start_soon(run_slot, feed, device, sizer, self._lanes)
                        with trio.move_on_after(POLL_S):
                            await self._changed.park()
                outer.cancel_scope.cancel()
        finally:
            self._running.discard(key)

    # -- internals ---------------------------------------------------------------------------------

    def _lanes(self) -> int:
        return PIPELINE * max(1, self.capacity())

    async def _fail_on_loss(self, lost: trio.Event, feed: JobFeed, scope: trio.CancelScope) -> None:
        await lost.wait()
        feed.report(0, error=f"lost the Dask scheduler at {self.address}")
        scope.cancel()

    def _credit(self, pinned: ClusterWorker, result: dict) -> None:
        self.chunks += 1
        ran_on = self._by_name.get(result["worker"])
        if result["worker"] != pinned.name:
            self.retried += 1  # its worker left: Dask re-ran the chunk elsewhere
        if ran_on is None:
            return
        ran_on.hashes += result["tested"]
        if result["busy_s"] > 0 and result["tested"] > 0 and not result["cancelled"]:
            ran_on.rate = ema(ran_on.rate, result["tested"] / result["busy_s"], self.config.rate_ema_alpha)

    async def _compute(self, key: str, request: MineRequest, lo: int, hi: int, address: str) -> dict:
        client = self._client
        submit = partial(client.submit, tasks.run_chunk, key, request.job_id, self.engine.name, request.header,
                         request.threshold, lo, hi, key=f"{key}-{next(self._chunk_seq)}", workers=[address],
                         allow_other_workers=True, pure=False)
        try:
            async with self._calls:
                future = await trio.to_thread.run_sync(submit)
        except Exception as exc:
            raise ChunkError(describe_failure(self.address, exc)) from None
        done = trio.Event()
        outcome: list = []
        token = trio.lowlevel.current_trio_token()

        def wake(finished) -> None:  # runs in Dask's callback thread, where a blocking call is fine
            try:
                outcome.append((True, finished.result()))
            except BaseException as exc:
                outcome.append((False, exc))
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        try:
            future.add_done_callback(wake)
            await done.wait()
        finally:
            future.release()  # non-blocking; a cancelled job's kernels were already stopped by its flag
        ok, value = outcome[0]
        if not ok:
            raise ChunkError(describe_failure(self.address, value))
        return value

    async def _canceller(self) -> None:
        async for key in self._cancel_receive:
            try:
                await trio.to_thread.run_sync(partial(self._client.run, tasks.cancel_soon, key, wait=False))
            except Exception as exc:  # scheduler away: its workers are gone or will drop the job
                log.debug("cancel of %s not delivered: %r", key, exc)

    async def _monitor(self) -> None:
        while True:
            await trio.sleep(POLL_S)
            await self._poll()

    async def _poll(self) -> None:
        client = self._client
        info = None
        if client.status == "running":
            with trio.move_on_after(self._info_timeout()):
                try:
                    info = await trio.to_thread.run_sync(partial(client.scheduler_info, n_workers=-1),
                                                         abandon_on_cancel=True)
                except Exception as exc:
                    log.debug("scheduler_info failed: %r", exc)
        if info is None or client.status != "running":
            if self._connected:
                log.warning("lost the Dask scheduler at %s: failing running jobs; reconnecting", self.address)
                self._connected = False
                self._lost.set()
                self._set_workers({})
            if client.status in ("closed", "closing", "failed", "newly-created"):
                await self._reconnect(client)
            return
        if not self._connected:
            log.info("reconnected to the Dask scheduler at %s", self.address)
            self._connected = True
            self._lost = trio.Event()
        self._set_workers(info.get("workers", {}))

    def _info_timeout(self) -> float:
        """How long the monitor waits for the scheduler's worker list before it calls the scheduler lost."""
        return max(2.0, self.config.cluster_timeout_s)

    async def _reconnect(self, old) -> None:
        try:
            new = await trio.to_thread.run_sync(connect, self.address, self.config.cluster_timeout_s)
        except ClusterUnavailable:
            return
        self._client = new
        await trio.to_thread.run_sync(_close_quietly, old)

    def _set_workers(self, infos: dict) -> None:
        current = {}
        for address, info in infos.items():
            w = self._workers.get(address)
            if w is None:
                w = ClusterWorker(address, str(info.get("name", address)), int(info.get("nthreads", 1)))
                log.info("cluster worker %s joined (%d thread(s))", w.name, w.nthreads)
            current[address] = w
        for address, w in self._workers.items():
            if address not in current:
                log.warning("cluster worker %s left", w.name)
        changed = current.keys() != self._workers.keys()
        self._workers = current
        self._by_name = {w.name: w for w in current.values()}
        if changed:
            self._changed.unpark_all()

    def _shutdown(self) -> None:
        for key in list(self._running):  # remote kernels stop now, not when their chunks end
            try:
                self._client.run(tasks.cancel_soon, key, wait=False)
            except Exception:
                pass
        _close_quietly(self._client)


def _close_quietly(client) -> None:
    try:
        client.close(timeout=2)
    except Exception:
        pass
