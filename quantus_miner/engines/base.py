"""The engine interface: search an inclusive nonce range for a valid nonce.

Every engine says which proof of work it implements (`pow`: a `core.config.Pow`, matching
`core.config.POW_OF_ENGINE`). `prepare_job(engine, header, bound)` is the one way callers set up a
job for either: `bound` is the v1 distance threshold (valid iff distance <= threshold) or the v2
target (valid iff hash < target). `prepare` turns the engine's job input into per-job constants once;
`search` scans a range (typically one chunk of a worker's part), polling a cancel flag,
and returns an exact `ChunkOutcome`. Every nonce an engine reports is re-verified with the
reference (`core.outcomes.verified`) before it is returned.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import attrs
import numpy as np

from ..core import qpow
from ..core.config import Pow
from ..core.outcomes import ChunkOutcome

BENCH_HEADER = bytes.fromhex("6ca041ed49dfd5093883ec0e4b0aa1e3c0b7f02ca5decb756ddd783efaa7eadd")


def new_cancel_flag() -> np.ndarray:
    """A one-byte flag the kernels poll; set `flag[0] = 1` to stop every search using it."""
    return np.zeros(1, dtype=np.uint8)


@attrs.frozen
class PreparedJob:
    """A job's per-job constants, made once by `Engine.prepare` and shared by every chunk."""

    ctx: Any  # v1: qpow.JobContext; v2: the engine's per-job context (header, midstate)
    threshold: int  # v1: the distance threshold; v2: the target
    constants: Any = None  # engine-specific


class Engine(Protocol):
    """A mining engine: `prepare` a job once, then `search` chunks of its range (from any thread).

    The extension point for new hardware: an engine's `search(prepared, lo, hi, flag)` tests nonces
    lo..hi exactly, polls `flag` (returning `cancelled` within milliseconds once it is set), and
    returns only reference-verified finds. A pipeline `Device` (pipeline/executor.py) runs it per
    chunk; `warm_up` compiles or loads its kernels before the first job.
    """

    name: str
    kernel: str
    pow: Pow

    def prepare(self, ctx: Any, threshold: int) -> PreparedJob:
        """Per-job constants (v1: from a `JobContext`; v2: from the header bytes); see `prepare_job`."""
        ...

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        """Test nonces start..end (one chunk) until a valid one, the end, or `flag[0]` is set; exact count."""
        ...

    def warm_up(self) -> None:
        """Compile or load every kernel, so the first job does not wait for it."""
        ...


def prepare_job(engine: Engine, header: bytes, bound: int) -> PreparedJob:
    """Set up a job from the node's 32-byte header and bound (v1 threshold or v2 target).

    v1 engines take a `JobContext` (derived from the header: Miller-Rabin, milliseconds), v2
    engines the header itself.
    """
    if engine.pow == Pow.V2:
        return engine.prepare(header, bound)
    return engine.prepare(qpow.JobContext.from_header(header), bound)


def measure_rate(engine: Engine, seconds: float = 0.1) -> float:
    """Nonces/s of one worker, measured briefly (seeds the first chunk of slow engines).

    Measured at nonces near 2^511, where the baseline's exponentiations are slowest, so a
    first chunk sized from it errs short rather than long.
    """
    job = prepare_job(engine, BENCH_HEADER, 0)
    flag = new_cancel_flag()
    size, cursor, tested = 16, 1 << 511, 0
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        tested += engine.search(job, cursor, cursor + size - 1, flag).tested
        cursor += size
        size *= 2
    return tested / elapsed


def steps_per_cpu_second(run, seconds: float, first: int = 16) -> float:
    """Calls `run(steps)` (compiled on first call) sized to about `seconds`; returns steps per CPU-second
    of this thread (CPU time: on a shared machine the neighbours' load does not count)."""
    steps = first
    run(steps)  # compile or load, and warm the caches
    while True:
        t0 = time.thread_time()
        run(steps)
        dt = time.thread_time() - t0
        if dt >= seconds / 4:
            break
        steps *= 4
    steps = max(steps, int(steps * seconds / dt))
    t0 = time.thread_time()
    run(steps)
    return steps / (time.thread_time() - t0)
