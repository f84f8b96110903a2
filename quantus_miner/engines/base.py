"""The engine interface: search an inclusive nonce range for a valid nonce.

`prepare` turns a job context and threshold into the engine's per-job constants once;
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
from ..core.outcomes import ChunkOutcome

BENCH_HEADER = bytes.fromhex("6ca041ed49dfd5093883ec0e4b0aa1e3c0b7f02ca5decb756ddd783efaa7eadd")


def new_cancel_flag() -> np.ndarray:
    """A one-byte flag the kernels poll; set `flag[0] = 1` to stop every search using it."""
    return np.zeros(1, dtype=np.uint8)


@attrs.frozen
class PreparedJob:
    ctx: qpow.JobContext
    threshold: int
    constants: Any = None  # engine-specific


class Engine(Protocol):
    name: str
    kernel: str

    def prepare(self, ctx: qpow.JobContext, threshold: int) -> PreparedJob: ...

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome: ...

    def warm_up(self) -> None: ...


def measure_rate(engine: Engine, seconds: float = 0.1) -> float:
    """Nonces/s of one worker, measured briefly (seeds the first chunk of slow engines).

    Measured at nonces near 2^511, where the baseline's exponentiations are slowest, so a
    first chunk sized from it errs short rather than long.
    """
    job = engine.prepare(qpow.JobContext.from_header(BENCH_HEADER), 0)
    flag = new_cancel_flag()
    size, cursor, tested = 16, 1 << 511, 0
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        tested += engine.search(job, cursor, cursor + size - 1, flag).tested
        cursor += size
        size *= 2
    return tested / elapsed
