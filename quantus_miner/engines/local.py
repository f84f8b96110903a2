"""Mining one job in this process with plain threads: the `mine` and `bench` commands."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import attrs

from ..core import qpow
from ..core.outcomes import Found
from ..core.partition import next_chunk, partition
from .base import Engine, new_cancel_flag

LOCAL_CHUNK_S = 0.1  # target seconds per chunk: keeps progress lively and the stop prompt


@attrs.frozen
class LocalResult:
    found: Found | None
    hash_count: int
    elapsed_time: float
    cpu_time: float = 0.0  # CPU seconds the worker threads ran (on a shared machine: what they really got)


def _worker(engine, job, part, flag, found, counts, index, lock, deadline, cpu):
    cpu0 = time.thread_time()
    try:
        _scan_part(engine, job, part, flag, found, counts, index, lock, deadline)
    finally:
        cpu[index] = time.thread_time() - cpu0


def _scan_part(engine, job, part, flag, found, counts, index, lock, deadline):
    cursor, end = part
    size = 64  # a probe: the first chunk must stay short even on the slow engine
    while cursor <= end and not flag[0]:
        if deadline is not None and time.monotonic() >= deadline:
            return
        t0 = time.monotonic()
        lo, hi = next_chunk(cursor, end, size)
        outcome = engine.search(job, lo, hi, flag)
        counts[index] += outcome.tested
        if outcome.found:
            with lock:
                if not found:
                    found.append(outcome.found)
            flag[0] = 1
            return
        cursor = hi + 1
        dt = time.monotonic() - t0
        # size the next chunk from this one's throughput (the first chunk only probes)
        size = max(1, min(int(outcome.tested / max(dt, 1e-6) * LOCAL_CHUNK_S), 8 * size, 1 << 26))


def solve(
    engine: Engine,
    ctx: qpow.JobContext,
    threshold: int,
    start: int,
    end: int,
    cores: int,
    *,
    seconds: float | None = None,
    on_progress: Callable[[int, float], None] | None = None,
) -> LocalResult:
    """Search [start, end] on `cores` threads until a valid nonce, exhaustion or `seconds`."""
    job = engine.prepare(ctx, threshold)
    parts = partition(start, end, cores)
    flag = new_cancel_flag()
    found: list[Found] = []
    counts = [0] * len(parts)
    cpu = [0.0] * len(parts)
    lock = threading.Lock()
    t0 = time.monotonic()
    deadline = None if seconds is None else t0 + seconds
    threads = [
        threading.Thread(target=_worker, args=(engine, job, part, flag, found, counts, i, lock, deadline, cpu),
                         daemon=True)
        for i, part in enumerate(parts)
    ]
    for t in threads:
        t.start()
    try:
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(0.25)
            if on_progress:
                on_progress(sum(counts), time.monotonic() - t0)
    finally:
        flag[0] = 1
        for t in threads:
            t.join()
    return LocalResult(found[0] if found else None, sum(counts), time.monotonic() - t0, sum(cpu))
