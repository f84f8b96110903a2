"""What a search reports, and the re-verification that guards consensus (pure).

>>> from quantus_miner.core import qpow
>>> verified(qpow.JobContext.from_header(bytes(32)), qpow.MAX_U512 // 5000, 4330).nonce
4330
>>> verified_v2(bytes(32), qpow2.target_of(5000), 7414).nonce
7414
"""

from __future__ import annotations

import attrs

from . import qpow, qpow2
from .config import Pow


class ConsensusError(RuntimeError):
    """An engine reported a nonce the reference rejects: a bug, never a result."""


@attrs.frozen
class Found:
    """A valid nonce, re-verified with the reference."""

    nonce: int
    distance: int  # QPoW v1: the nonce's distance; QPoW v2: its pow hash (valid iff hash < target)


@attrs.frozen
class ChunkOutcome:
    """What one search call did: nonces tested (exactly), the valid nonce if any, whether it was cancelled."""

    tested: int
    found: Found | None = None
    cancelled: bool = False


def verified(ctx: qpow.JobContext, threshold: int, nonce: int) -> Found:
    """Re-check a candidate with the reference; raise if an engine got consensus wrong."""
    if not qpow.is_valid(ctx, nonce, threshold):
        raise ConsensusError(f"engine reported nonce {nonce:x}, which the reference rejects")
    return Found(nonce, qpow.distance(ctx, nonce))


def verified_v2(header: bytes, target: int, nonce: int) -> Found:
    """QPoW v2: re-check a candidate with the reference (non-zero, hash < target strictly)."""
    hash_value = qpow2.pow_hash(header, nonce)
    if nonce == 0 or hash_value >= target:
        raise ConsensusError(f"engine reported nonce {nonce:x}, which the reference rejects")
    return Found(nonce, hash_value)


def verify(pow_: Pow, header: bytes, bound: int, nonce: int) -> Found:
    """Re-check a candidate of either proof of work (`bound`: v1 threshold, v2 target); raise if wrong.

    >>> verify(Pow.V2, bytes(32), qpow2.target_of(5000), 7414).nonce
    7414
    """
    if pow_ == Pow.V2:
        return verified_v2(header, bound, nonce)
    return verified(qpow.JobContext.from_header(header), bound, nonce)
