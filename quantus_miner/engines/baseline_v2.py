"""cpu-baseline-v2: the QPoW v2 reference, nonce by nonce; slow on purpose, the yardstick for cpu-fast-v2.

>>> from quantus_miner.core import qpow2
>>> engine = BaselineV2Engine()
>>> job = engine.prepare(bytes(32), qpow2.target_of(5000))
>>> engine.search(job, 7400, 7500, new_cancel_flag()).found.nonce
7414
"""

from __future__ import annotations

import attrs
import numpy as np

from ..core import qpow2
from ..core.outcomes import ChunkOutcome, verified_v2
from .base import PreparedJob, new_cancel_flag

__all__ = ["BaselineV2Engine", "check_range", "new_cancel_flag"]


def check_range(start: int, end: int) -> None:
    """Raise ValueError unless both nonces are U512."""
    if not 0 <= start <= qpow2.MAX_U512 or not 0 <= end <= qpow2.MAX_U512:
        raise ValueError("nonces must be in [0, 2^512 - 1]")


@attrs.define
class BaselineV2Engine:
    """QPoW v2 by the pure-Python reference: the yardstick the fast engines are checked against."""
    name: str = "cpu-baseline-v2"
    kernel: str = "v2-reference"
    pow: str = "v2"

    def prepare(self, header: bytes, target: int) -> PreparedJob:
        """Check the header and target; the job as the reference scan takes it."""
        if not 0 <= target <= qpow2.MAX_U512:
            raise ValueError("target must be in [0, 2^512 - 1]")
        qpow2.pow_input(header, 0)  # validates the header
        return PreparedJob(header, target)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        """Nonce 0 counts as tested, never as found."""
        check_range(start, end)
        header, target = job.ctx, job.threshold
        for nonce in range(start, end + 1):
            if flag[0] != 0:  # one nonce is ~1 ms of pure Python: poll every time
                return ChunkOutcome(nonce - start, cancelled=True)
            if nonce != 0 and qpow2.pow_hash(header, nonce) < target:
                return ChunkOutcome(nonce - start + 1, verified_v2(header, target, nonce))
        return ChunkOutcome(max(0, end - start + 1))

    def warm_up(self) -> None:
        """Nothing to compile."""
        pass
