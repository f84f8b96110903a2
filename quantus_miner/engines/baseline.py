"""cpu-baseline: the reference path, one full exponentiation per nonce; slow on purpose, the yardstick.

>>> from quantus_miner.core import qpow
>>> engine = BaselineEngine()
>>> job = engine.prepare(qpow.JobContext.from_header(bytes(32)), qpow.MAX_U512 // 5000)
>>> engine.search(job, 4300, 4400, new_cancel_flag()).found.nonce
4330
"""

from __future__ import annotations

import attrs
import numpy as np

from ..core import qpow
from ..core.outcomes import ChunkOutcome, verified
from .base import PreparedJob, new_cancel_flag

POLL_EVERY = 64  # nonces between cancel-flag polls

__all__ = ["BaselineEngine", "scan_reference", "new_cancel_flag"]


def scan_reference(job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
    """The reference path over [start, end]. Nonce 0 counts as tested, never as found."""
    ctx, threshold = job.ctx, job.threshold
    tested = 0
    for nonce in range(start, end + 1):
        if tested % POLL_EVERY == 0 and flag[0]:
            return ChunkOutcome(tested, cancelled=True)
        tested += 1
        if nonce != 0 and qpow.distance(ctx, nonce) <= threshold:
            return ChunkOutcome(tested, verified(ctx, threshold, nonce))
    return ChunkOutcome(tested)


@attrs.define
class BaselineEngine:
    """QPoW v1 by the pure-Python reference: the yardstick the fast engines are checked against."""
    name: str = "cpu-baseline"
    kernel: str = "python-reference"
    pow: str = "v1"

    def prepare(self, ctx: qpow.JobContext, threshold: int) -> PreparedJob:
        """The job as the reference scan takes it."""
        return PreparedJob(ctx, threshold)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        """Scan [start, end] with the reference, polling `flag`."""
        return scan_reference(job, start, end, flag)

    def warm_up(self) -> None:
        """Nothing to compile."""
        pass
