"""Mining engines: search an inclusive nonce range for a valid nonce.

Both engines share one interface. `prepare` turns a job context and threshold into
the engine's per-job constants once; `search` scans a range (typically one chunk of a
worker's part), polling a cancel flag, and returns an exact `ChunkOutcome`. Every
nonce an engine reports is re-verified with the reference before it is returned.

>>> from quantus_miner import qpow
>>> engine = get_engine("cpu-baseline")
>>> job = engine.prepare(qpow.JobContext.from_header(bytes(32)), qpow.MAX_U512 // 5000)
>>> engine.search(job, 4300, 4400, new_cancel_flag()).found.nonce
4330
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

import attrs
import numpy as np

from . import qpow

BENCH_HEADER = bytes.fromhex("6ca041ed49dfd5093883ec0e4b0aa1e3c0b7f02ca5decb756ddd783efaa7eadd")
BASELINE_POLL = 64  # nonces between cancel-flag polls in the baseline engine


class ConsensusError(RuntimeError):
    """An engine reported a nonce the reference rejects: a bug, never a result."""


@attrs.frozen
class Found:
    nonce: int
    distance: int


@attrs.frozen
class ChunkOutcome:
    """What one `search` call did: nonces tested (exactly), the valid nonce if any, whether it was cancelled."""

    tested: int
    found: Found | None = None
    cancelled: bool = False


def new_cancel_flag() -> np.ndarray:
    """A one-byte flag the kernels poll; set `flag[0] = 1` to stop every search using it."""
    return np.zeros(1, dtype=np.uint8)


def verified(ctx: qpow.JobContext, threshold: int, nonce: int) -> Found:
    """Re-check a candidate with the reference; raise if an engine got consensus wrong."""
    if not qpow.is_valid(ctx, nonce, threshold):
        raise ConsensusError(f"engine reported nonce {nonce:x}, which the reference rejects")
    return Found(nonce, qpow.distance(ctx, nonce))


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


def scan_reference(job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
    """The reference path: a full exponentiation per nonce. Nonce 0 counts as tested, never as found."""
    ctx, threshold = job.ctx, job.threshold
    tested = 0
    for nonce in range(start, end + 1):
        if tested % BASELINE_POLL == 0 and flag[0]:
            return ChunkOutcome(tested, cancelled=True)
        tested += 1
        if nonce != 0 and qpow.distance(ctx, nonce) <= threshold:
            return ChunkOutcome(tested, verified(ctx, threshold, nonce))
    return ChunkOutcome(tested)


@attrs.define
class BaselineEngine:
    """cpu-baseline: the reference path, slow on purpose; the yardstick."""

    name: str = "cpu-baseline"
    kernel: str = "python-reference"

    def prepare(self, ctx: qpow.JobContext, threshold: int) -> PreparedJob:
        return PreparedJob(ctx, threshold)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        return scan_reference(job, start, end, flag)

    def warm_up(self) -> None:
        pass


def get_engine(name: str) -> Engine:
    if name == "cpu-baseline":
        return BaselineEngine()
    if name == "cpu-fast":
        from .fast_engine import FastEngine  # imports Numba only when asked for

        return FastEngine.for_host(os.environ.get("MINER_KERNEL", "auto"))
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINE_NAMES)})")


ENGINE_NAMES = ("cpu-fast", "cpu-baseline")


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
