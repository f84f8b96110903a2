"""The executor interface and the one chunk loop every way of mining runs.

A job reaches an executor as a `JobFeed`: its request and serial, the job's one cursor
(`core.partition.Frontier`, so chunks never overlap), the cancel flag its kernels poll, and
`report`, where each chunk's `Progress` goes. Executors never see the core `Job`.

An executor (`Executor`) decides *where* chunks run and starts slots there; every slot runs
`run_slot`: take the next chunk (sized by `core.rates.ChunkSizer` to last `--progress-chunk-ms`,
cut smaller near a finite range's end), search it on its `Device`, report, stop on a find, a
cancel, a fault or an exhausted range, resize. Devices today: a thread of this machine
(`local.ThreadDevice`, under the miner-wide core limiter) and a thread of a Dask worker
(`cluster.executor.WorkerDevice`).

Extension point (a GPU, say): write a `Device` whose `search` runs one chunk on the accelerator
(an `engines.base.Engine` prepared once per job, `search(prepared, lo, hi, flag)` in a thread)
and start one `run_slot` per device slot from an executor's `run_job`; progress, metrics,
cancellation and exact counting then come with the loop.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Protocol

import attrs
import numpy as np

from ..core.jobs import Progress
from ..core.outcomes import Found
from ..core.partition import Frontier
from ..core.rates import ChunkSizer, tail_capped
from ..core.requests import MineRequest
from ..engines.base import new_cancel_flag


@attrs.define(eq=False)
class JobFeed:
    """One job as executors see it: request, serial, the one cursor, the cancel flag, and `report`."""

    serial: int  # the runtime's number for the job; every `Progress` carries it
    request: MineRequest
    send: Callable[[Progress], None]  # into the runtime's progress channel (never blocks)
    flag: np.ndarray = attrs.field(factory=new_cancel_flag)  # set: every kernel of the job stops within ms
    clock: Callable[[], float] = time.monotonic
    frontier: Frontier = attrs.field(init=False)
    _slots: itertools.count = attrs.field(init=False, factory=itertools.count)

    def __attrs_post_init__(self) -> None:
        self.frontier = Frontier(self.request.nonce_start, self.request.nonce_end)

    @property
    def stopped(self) -> bool:
        """The job ended (found, cancelled, failed): take no more chunks."""
        return bool(self.flag[0])

    def new_slot(self) -> int:
        """The next slot index (the job's worker series are indexed by it)."""
        return next(self._slots)

    def report(self, slot: int, tested: int = 0, *, t: float | None = None, busy_s: float = 0.0,
               found: Found | None = None, finished: bool = False, error: str | None = None) -> None:
        """Send one slot's progress for this job (timed now unless `t` is given)."""
        self.send(Progress(self.serial, slot, tested, self.clock() if t is None else t, busy_s, found, finished,
                           error))


@attrs.frozen
class ChunkResult:
    """What a device did with one chunk: exact count, a reference-verified find, cancelled, when, how long."""

    tested: int
    found: Found | None
    cancelled: bool
    t: float  # monotonic time the chunk ended
    busy_s: float  # seconds the kernel ran


class Device(Protocol):
    """Where one slot's chunks run (a CPU thread, a cluster worker's thread, an accelerator)."""

    rate: float | None  # this device's measured nonces/s, if known (seeds the first chunk's size)

    def alive(self) -> bool:
        """False once the device is gone (a cluster worker left): its slot retires."""
        ...

    async def search(self, feed: JobFeed, lo: int, hi: int) -> ChunkResult:
        """Search nonces lo..hi of the job; raise on a fault (see `failed`)."""
        ...

    async def failed(self, feed: JobFeed, exc: Exception) -> str | None:
        """The job's failure reason for a fault in `search`, or None when someone else reports the end."""
        ...


class Executor(Protocol):
    """Runs a job's chunks somewhere: `MinerRuntime` owns jobs, an executor only mines them.

    `run_job(feed)` mines until the range is handed out, the feed's flag is set, or it is cancelled
    (the runtime cancels it when the job ends). Implementations: `local.LocalExecutor` (this
    machine's threads; also `mine` and `bench`), `cluster.executor.ClusterExecutor` (Dask).
    """

    name: str  # "local", "cluster"

    def slots(self, request: MineRequest) -> int:
        """Slots known when the job starts (0: slots join while it runs)."""
        ...

    def capacity(self) -> int:
        """Chunks that can run at once (threads)."""
        ...

    async def run_job(self, feed: JobFeed) -> None:
        """Run the job's chunks until it ends, reporting through `feed`; return once every slot returned."""

    def stop(self, serial: int) -> None:
        """The job ended: stop its kernels wherever the flag does not reach (remote workers)."""
        ...

    def health(self) -> dict | None:
        """Executor state for /health (None: nothing to add)."""
        ...


async def run_slot(feed: JobFeed, device: Device, sizer: ChunkSizer, lanes: Callable[[], int],
                   slot: int | None = None) -> None:
    """The one chunk loop: take, search, report, stop or resize, until the job or the device is done.

    `lanes()` is how many slots share the range now (cuts chunks smaller near its end).
    """
    slot = feed.new_slot() if slot is None else slot
    frontier = feed.frontier
    while not feed.stopped and device.alive():
        chunk = frontier.take(tail_capped(sizer.size, frontier.remaining, lanes()))
        if chunk is None:
            break
        try:
            r = await device.search(feed, *chunk)
        except Exception as exc:  # a fault fails this job only; the service lives on
            if (reason := await device.failed(feed, exc)) is not None:
                feed.report(slot, error=reason)
            return
        frontier.done(chunk, r.tested)
        feed.report(slot, r.tested, t=r.t, busy_s=r.busy_s, found=r.found)
        if r.found is not None or r.cancelled:
            return
        sizer.update(r.tested, r.busy_s)
    feed.report(slot, finished=True)
