"""Mining one job in this process with no service around it: the `mine` and `bench` commands.

The job runs on the same `MinerRuntime` and `LocalExecutor` as `serve` (one chunk loop, one cursor,
one sizer); this module only drives it: a deadline, progress callbacks and the caller's cancel flag.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import numpy as np
import trio

from ..core.config import ServiceConfig
from ..core.jobs import JobStatus
from ..core.outcomes import Found
from ..core.requests import MineRequest
from ..engines.base import Engine, measure_rate, new_cancel_flag
from .local import Lane, LocalExecutor
from .runtime import MinerRuntime

LOCAL_CHUNK_MS = 100  # mine/bench chunks: keeps progress lively and a deadline prompt


@attrs.frozen
class LocalResult:
    """What `solve` did: the find if any, exact count, time, and where a stopped search resumes."""

    found: Found | None
    hash_count: int
    elapsed_time: float
    resume_at: int  # lowest nonce not tested: a stopped search resumes here with `--start`
    stopped: bool = False  # the caller's cancel flag ended the search (not a find, the range's end or time)
    cpu_time: float = 0.0  # CPU seconds the worker threads ran (on a shared machine: what they really got)
    lane_hashes: tuple[int, ...] = ()  # nonces each lane tested: the engine's slots, then CPU threads beside a GPU's


def solve(
    engine: Engine,
    header: bytes,
    bound: int,
    start: int,
    end: int,
    cores: int,
    *,
    seconds: float | None = None,
    on_progress: Callable[[int, float], None] | None = None,
    flag: np.ndarray | None = None,
    progress_s: float = 0.25,
    measured_rate: float | None = None,
    beside: Lane | None = None,
) -> LocalResult:
    """Search [start, end] on `cores` threads until a valid nonce, exhaustion, `seconds` or `flag`.

    `bound` is the v1 threshold or the v2 target, as the engine's proof of work reads it. Everything
    below `resume_at` was tested. Setting `flag[0] = 1` (e.g. from a signal handler) stops every
    kernel within milliseconds. `on_progress(tested, elapsed)` runs every `progress_s`. `beside`: CPU threads
    mining beside a GPU engine's `cores` devices (`local.beside_lane`), from the same cursor.
    """
    flag = new_cancel_flag() if flag is None else flag
    config = ServiceConfig(cores=cores, progress_chunk_ms=LOCAL_CHUNK_MS, max_jobs=1)
    return trio.run(_solve, config, engine, MineRequest("solve", header, bound, start, end), seconds, on_progress,
                    flag, progress_s, measured_rate, beside)


async def _solve(config, engine, request, seconds, on_progress, flag, progress_s, measured_rate,
                 beside) -> LocalResult:
    if measured_rate is None:  # sizes the first chunks: a slow engine shows progress within ~progress_s
        measured_rate = await trio.to_thread.run_sync(measure_rate, engine, abandon_on_cancel=True)
    executor = LocalExecutor(config, engine, measured_rate=measured_rate, beside=beside)
    async with trio.open_nursery() as nursery:
        runtime = await nursery.start(MinerRuntime(config, engine, executor=executor).run)
        t0 = time.monotonic()
        runtime.submit(request, flag=flag)
        frontier = runtime.frontier(request.job_id)
        deadline = float("inf") if seconds is None else t0 + seconds
        while runtime.result(request.job_id).status is JobStatus.RUNNING:
            with trio.move_on_after(min(progress_s, max(0.0, deadline - time.monotonic()))):
                await runtime.wait_ended(request.job_id)
            if flag[0] or time.monotonic() >= deadline:
                stopped = bool(flag[0])
                runtime.cancel(request.job_id)
                break
            if on_progress is not None:
                on_progress(runtime.result(request.job_id).hash_count, time.monotonic() - t0)
        else:
            stopped = False
        await runtime.wait_settled(request.job_id)  # every thread returned: the frontier is final
        elapsed = time.monotonic() - t0
        snap = runtime.result(request.job_id)
        nursery.cancel_scope.cancel()
    found = Found(snap.nonce, snap.distance) if snap.nonce is not None else None
    resume_at = frontier.resume_point()
    return LocalResult(found, frontier.tested, elapsed, resume_at,
                       stopped and found is None and resume_at <= request.nonce_end, executor.cpu_s,
                       tuple(executor.lane_tested))
