"""QPoW v2 engines: cpu-fast-v2 (Numba, midstate + lazy second squeeze) and cpu-baseline-v2.

A nonce costs 5 permutations naively. Block 0 (the header) is absorbed once per job (`prepare`)
and block 1 (the nonce's high 256 bits) once per 2^256-aligned segment of each `search` call
(one permutation, negligible against a chunk), so each nonce needs blocks 2 and 3 only; h1 (the
hash's high 256 bits) decides `hash < target` unless it equals the target's high half, so the
5th permutation runs only then: 2 permutations per nonce.

>>> from quantus_miner.core import qpow2
>>> engine = FastV2Engine()
>>> job = engine.prepare(bytes(32), qpow2.target_of(5000))
>>> engine.search(job, 1, 10_000, new_cancel_flag()).found.nonce
7414
"""

from __future__ import annotations

import attrs
import numpy as np

from ..core import qpow2
from ..core.outcomes import ChunkOutcome, verified_v2
from . import kernels_v2 as kernels
from .base import PreparedJob, new_cancel_flag
from .baseline_v2 import check_range

LOW_MASK = (1 << 256) - 1
MAX_NONCES_PER_CALL = 1 << 62  # the kernel counts in int64


def _words_be(value: int) -> np.ndarray:
    """A 256-bit value as 4 u64 words, most significant first."""
    return np.array([(value >> (64 * (3 - k))) & ((1 << 64) - 1) for k in range(4)], dtype=np.uint64)


def _limbs_le(value: int) -> np.ndarray:
    """A 256-bit value as 4 u64 limbs, least significant first."""
    return np.array([(value >> (64 * k)) & ((1 << 64) - 1) for k in range(4)], dtype=np.uint64)


def _felts(chunk32: bytes) -> np.ndarray:
    return np.array(qpow2.pack_bytes(chunk32)[: qpow2.RATE], dtype=np.uint64)


@attrs.frozen
class V2Context:
    header: bytes
    header_state: np.ndarray  # sponge state after block 0, computed by the kernel
    target_hi: np.ndarray  # target >> 256, 4 big-endian words
    target_lo: np.ndarray


def prepare_context(header: bytes, target: int) -> V2Context:
    if len(header) != 32:
        raise ValueError("header must be 32 bytes")
    if not 0 <= target <= qpow2.MAX_U512:
        raise ValueError("target must be in [0, 2^512 - 1]")
    zero = np.zeros(qpow2.WIDTH, dtype=np.uint64)
    return V2Context(
        header=header,
        header_state=kernels.absorb_block(zero, _felts(header)),
        target_hi=_words_be(target >> 256),
        target_lo=_words_be(target & LOW_MASK),
    )


def nonce_midstate(ctx: V2Context, nonce: int) -> np.ndarray:
    """The state after blocks 0 and 1 for `nonce`'s segment (the kernel's own computation)."""
    high = (nonce >> 256).to_bytes(32, "big")
    return kernels.absorb_block(ctx.header_state, _felts(high))


@attrs.define
class FastV2Engine:
    name: str = "cpu-fast-v2"
    kernel: str = kernels.KERNEL_NAME
    pow: str = "v2"

    def prepare(self, header: bytes, target: int) -> PreparedJob:
        return PreparedJob(prepare_context(header, target), target)

    def search(self, job: PreparedJob, start: int, end: int, flag: np.ndarray) -> ChunkOutcome:
        """Scan [start, end] upward; the first valid nonce, or all tested, or cancelled."""
        check_range(start, end)
        ctx: V2Context = job.ctx
        tested, cursor = 0, start
        while cursor <= end:
            # one kernel call per 2^256-aligned segment: the midstate changes with the high half
            last = min(end, cursor | LOW_MASK, cursor + MAX_NONCES_PER_CALL - 1)
            done, offset, cancelled = kernels.scan_segment(
                nonce_midstate(ctx, cursor),
                _limbs_le(cursor & LOW_MASK),
                last - cursor + 1,
                cursor >> 256 == 0,
                ctx.target_hi,
                ctx.target_lo,
                flag,
            )
            tested += done
            if offset >= 0:
                return ChunkOutcome(tested, verified_v2(ctx.header, job.threshold, cursor + offset))
            if cancelled:
                return ChunkOutcome(tested, cancelled=True)
            cursor = last + 1
        return ChunkOutcome(tested)

    def warm_up(self) -> None:
        """Compile (or load from the on-disk cache) every kernel this engine runs."""
        job = self.prepare(bytes(32), 0)
        self.search(job, 0, 2 * kernels.LANES, new_cancel_flag())
