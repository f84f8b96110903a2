"""Mining one job in this process with plain threads: the `mine` and `bench` commands."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import attrs
import numpy as np

from ..core.outcomes import Found
from ..core.partition import Frontier
from .base import Engine, new_cancel_flag, prepare_job

LOCAL_CHUNK_S = 0.1  # target seconds per chunk: keeps progress lively and the stop prompt


@attrs.frozen
class LocalResult:
    found: Found | None
    hash_count: int
    elapsed_time: float
    resume_at: int  # lowest nonce not tested: a stopped search resumes here with `--start`
    stopped: bool = False  # the caller's cancel flag ended the search (not a find, the range's end or time)
    cpu_time: float = 0.0  # CPU seconds the worker threads ran (on a shared machine: what they really got)


def _worker(engine, job, frontier, flag, found, lock, deadline, cpu, index):
    if hasattr(engine, "for_slot"):  # a GPU engine: worker `index` drives device `index`
        engine = engine.for_slot(index)
    cpu0 = time.thread_time()
    try:
        _scan(engine, job, frontier, flag, found, lock, deadline)
    finally:
        cpu[index] = time.thread_time() - cpu0


def _scan(engine, job, frontier, flag, found, lock, deadline):
    size = 64  # a probe: the first chunk must stay short even on the slow engine
    while not flag[0]:
        if deadline is not None and time.monotonic() >= deadline:
            return
        with lock:
            chunk = frontier.take(size)
        if chunk is None:
            return
        t0 = time.monotonic()
        outcome = engine.search(job, *chunk, flag)
        with lock:
            frontier.done(chunk, outcome.tested)
            if outcome.found and not found:
                found.append(outcome.found)
        if outcome.found:
            flag[0] = 1
            return
        dt = time.monotonic() - t0
        # size the next chunk from this one's throughput (the first chunk only probes)
        size = max(1, min(int(outcome.tested / max(dt, 1e-6) * LOCAL_CHUNK_S), 8 * size, 1 << 26))


def solve(
    engine: Engine,
    header: bytes,
    bound: int,
    start: int,
    end: int,
    cores: int,
    *,
    seconds: float | None = None,
    on_progress: Callable[[Frontier, float], None] | None = None,
    flag: np.ndarray | None = None,
    progress_s: float = 0.25,
) -> LocalResult:
    """Search [start, end] on `cores` threads until a valid nonce, exhaustion, `seconds` or `flag`.

    `bound` is the v1 threshold or the v2 target, as the engine's proof of work reads it.
    Threads take chunks from one shared frontier, so everything below `resume_at` was tested.
    Setting `flag[0] = 1` (e.g. from a signal handler) stops every kernel within milliseconds.
    `on_progress(frontier, elapsed)` runs on the calling thread every `progress_s`.
    """
    job = prepare_job(engine, header, bound)
    frontier = Frontier(start, end)
    flag = new_cancel_flag() if flag is None else flag  # also set by the worker that finds a nonce
    found: list[Found] = []
    workers = min(cores, end - start + 1)
    cpu = [0.0] * workers
    lock = threading.Lock()
    t0 = time.monotonic()
    deadline = None if seconds is None else t0 + seconds
    threads = [
        threading.Thread(target=_worker, args=(engine, job, frontier, flag, found, lock, deadline, cpu, i),
                         daemon=True)
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    try:
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(progress_s)
            if on_progress and not flag[0]:
                with lock:
                    on_progress(frontier, time.monotonic() - t0)
    finally:
        flagged = bool(flag[0])  # by a find or by the caller
        flag[0] = 1
        for t in threads:
            t.join()
    stopped = flagged and not found and frontier.resume_point() <= end  # else it finished anyway
    return LocalResult(found[0] if found else None, frontier.tested, time.monotonic() - t0,
                       frontier.resume_point(), stopped, sum(cpu))
