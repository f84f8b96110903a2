"""The runtime and the one chunk loop with a fake executor and fake devices: no threads, no HTTP, no engine.

The fake devices stand in for this project's own (threads, Dask workers) only to drive the runtime
deterministically; the real executors run the same `run_slot` in the service and cluster tests.
"""

from __future__ import annotations

import pytest
import trio

from quantus_miner.core.config import ServiceConfig
from quantus_miner.core.jobs import RANGE_EXHAUSTED, JobStatus, Progress
from quantus_miner.core.outcomes import Found
from quantus_miner.core.rates import ChunkSizer
from quantus_miner.core.requests import MineRequest
from quantus_miner.engines import get_engine
from quantus_miner.pipeline.executor import ChunkResult, JobFeed, run_slot
from quantus_miner.pipeline.runtime import MinerRuntime


class FakeDevice:
    """Tests every nonce instantly; "finds" `winner`; records the chunks it got."""

    rate = 1000.0

    def __init__(self, winner=None, fail_at=None):
        self.winner, self.fail_at, self.chunks = winner, fail_at, []

    def alive(self) -> bool:
        return True

    async def search(self, feed: JobFeed, lo: int, hi: int) -> ChunkResult:
        await trio.lowlevel.checkpoint()
        self.chunks.append((lo, hi))
        if self.fail_at is not None and lo <= self.fail_at <= hi:
            raise RuntimeError("boom")
        if self.winner is not None and lo <= self.winner <= hi:
            return ChunkResult(self.winner - lo + 1, Found(self.winner, 0), False, trio.current_time(), 0.001)
        return ChunkResult(hi - lo + 1, None, False, trio.current_time(), 0.001)

    async def failed(self, feed: JobFeed, exc: Exception) -> str:
        return f"worker crashed: {exc!r}"


class FakeExecutor:
    name = "fake"

    def __init__(self, devices):
        self.devices, self.stopped = devices, []

    def slots(self, request: MineRequest) -> int:
        return len(self.devices)

    def capacity(self) -> int:
        return len(self.devices)

    def stop(self, serial: int) -> None:
        self.stopped.append(serial)

    def health(self):
        return None

    async def run_job(self, feed: JobFeed) -> None:
        async with trio.open_nursery() as nursery:
            for device in self.devices:
                nursery.start_soon(run_slot, feed, device, ChunkSizer.start(100, rate=device.rate), self.capacity,
                                   feed.new_slot())


async def run_one(devices, request, **config):
    executor = FakeExecutor(devices)
    runtime = MinerRuntime(ServiceConfig(cores=len(devices), **config), get_engine("cpu-baseline"),
                           executor=executor, clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        runtime.submit(request)
        with trio.fail_after(10):
            await runtime.wait_ended(request.job_id)
            await runtime.wait_settled(request.job_id)
        nursery.cancel_scope.cancel()
    return runtime, executor


async def test_an_exhausted_range_is_counted_exactly_and_chunks_never_overlap():
    devices = [FakeDevice(), FakeDevice()]
    runtime, executor = await run_one(devices, MineRequest("a", bytes(32), 0, 10, 1_000_009))
    snap = runtime.result("a")
    assert (snap.status, snap.reason, snap.hash_count) == (JobStatus.FAILED, RANGE_EXHAUSTED, 1_000_000)
    chunks = sorted(c for d in devices for c in d.chunks)
    assert chunks[0][0] == 10 and chunks[-1][1] == 1_000_009
    assert all(a[1] + 1 == b[0] for a, b in zip(chunks, chunks[1:]))
    assert all(d.chunks for d in devices) and executor.stopped == [0]
    assert runtime.statistics().ended == {("cpu-baseline", "failed"): 1}


async def test_a_find_completes_the_job_and_stops_every_slot():
    runtime, _ = await run_one([FakeDevice(winner=5000), FakeDevice(winner=5000)], MineRequest("b", bytes(32), 0, 1, 10**12))
    snap = runtime.result("b")
    assert snap.status is JobStatus.COMPLETED and snap.nonce == 5000


async def test_a_device_fault_fails_the_job_with_its_reason():
    runtime, _ = await run_one([FakeDevice(fail_at=3)], MineRequest("c", bytes(32), 0, 1, 10**6))
    assert runtime.result("c").reason == "worker crashed: RuntimeError('boom')"


class IdleDevice(FakeDevice):
    """Searches until the job is cancelled (reports nothing by itself)."""

    async def search(self, feed, lo, hi):
        await trio.sleep_forever()


async def test_a_late_report_never_lands_on_a_new_job_with_the_same_id():
    runtime = MinerRuntime(ServiceConfig(cores=1, max_finished_jobs=1), get_engine("cpu-baseline"),
                           executor=FakeExecutor([IdleDevice()]), clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        for job_id in ("same", "other"):  # serials 0, 1; ending "other" forgets "same" (cap 1)
            runtime.submit(MineRequest(job_id, bytes(32), 0, 1, 10**9))
            runtime.cancel(job_id)
        assert runtime.result("same") is None
        runtime.submit(MineRequest("same", bytes(32), 0, 1, 10**9))  # serial 2
        runtime._send.send_nowait(Progress(0, 0, 1000, trio.current_time()))  # late, for the first "same"
        runtime._send.send_nowait(Progress(2, 0, 5, trio.current_time()))
        with trio.fail_after(5):
            while runtime.result("same").hash_count == 0:
                await trio.sleep(0.001)
        assert runtime.result("same").hash_count == 5
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("cores", [1, 3])
def test_mine_and_bench_run_on_the_same_pipeline(cores):
    from quantus_miner.pipeline.solve import solve

    result = solve(get_engine("cpu-baseline"), bytes(32), 0, 5, 5 + 3000, cores)
    assert result.found is None and result.hash_count == 3001 and result.resume_at == 3006 and not result.stopped


class ShortDevice(FakeDevice):
    """An engine bug: claims to have searched a chunk but counts one nonce short."""

    async def search(self, feed, lo, hi):
        result = await super().search(feed, lo, hi)
        return ChunkResult(result.tested - 1, None, False, result.t, result.busy_s)


async def test_a_job_whose_counts_fall_short_fails_instead_of_running_forever():
    runtime, _ = await run_one([ShortDevice()], MineRequest("d", bytes(32), 0, 1, 10_000))
    snap = runtime.result("d")
    assert snap.status is JobStatus.FAILED and snap.reason.startswith("nonce count mismatch:"), snap


async def test_waiting_for_a_job_end_with_timeouts_leaves_no_waiters_behind():
    runtime = MinerRuntime(ServiceConfig(cores=1), get_engine("cpu-baseline"),
                           executor=FakeExecutor([IdleDevice()]), clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        runtime.submit(MineRequest("w", bytes(32), 0, 1, 10**9))
        with trio.fail_after(5):
            for _ in range(1000):  # as `mine` polls: wait for the end, give up after a while, repeat
                with trio.move_on_after(0):
                    await runtime.wait_ended("w")
        assert sum(map(len, runtime._end_waiters.values())) == 0
        runtime.cancel("w")
        nursery.cancel_scope.cancel()


async def test_cores_beyond_trios_default_thread_limit_all_mine_at_once():
    """--cores 48 means 48 kernel threads at once (trio's default limiter alone would allow 40)."""
    import threading

    from quantus_miner.pipeline.local import LocalExecutor

    cores, lock, peak, all_in = 48, threading.Lock(), [0, 0], threading.Event()
    base = get_engine("cpu-baseline")

    class Gate:
        name, kernel, pow = base.name, base.kernel, base.pow
        prepare, warm_up = base.prepare, base.warm_up

        def search(self, job, start, end, flag):
            with lock:
                peak[0] += 1
                peak[1] = max(peak)
                if peak[0] == cores:
                    all_in.set()
            all_in.wait(5)
            with lock:
                peak[0] -= 1
            flag[0] = 1  # done: every slot stops
            return base.search(job, start, start, flag)

    config = ServiceConfig(cores=cores)
    runtime = MinerRuntime(config, Gate(), executor=LocalExecutor(config, Gate(), measured_rate=1e6),
                           clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        runtime.submit(MineRequest("t", bytes(32), 0, 1, 10**12))
        with trio.fail_after(30):
            await runtime.wait_settled("t")
        assert peak[1] == cores
        nursery.cancel_scope.cancel()
